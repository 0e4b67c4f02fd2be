"""The machine a benchmark ran on, for its results file. A model's speed depends much on the CPU's vector
instructions: the same U-Net predicted 0.90 Mpx/s on the machine of 2026-11-26 and 0.22 on a 2-CPU AMD
EPYC with AVX2 but no AVX-512 on 2026-12-06 (benchmarks/predict_throughput.py), so figures from two
machines compare only as ratios measured in the same run."""

from __future__ import annotations

import os
import platform
from typing import Any

from transforms.runtime.cpu import cpu_fields, cpu_flags

# The vector extensions that decide TensorFlow's (oneDNN's) convolution speed on x86.
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_description() -> dict[str, Any]:
    """The CPU's model name and which of VECTOR_FLAGS it has (from /proc/cpuinfo; empty elsewhere)."""
    fields = cpu_fields()
    if not fields:
        return {}
    flags = cpu_flags()
    return {
        "cpu_model": fields.get("model name", ""),
        "vector_extensions": [f for f in VECTOR_FLAGS if f in flags],
    }


# Settings of the environment that change TensorFlow's speed, recorded when a run sets them.
SPEED_SETTINGS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def machine() -> dict[str, Any]:
    """CPU count, Python, platform and CPU of this machine, and the speed settings the run had."""
    settings = {name: os.environ[name] for name in SPEED_SETTINGS if name in os.environ}
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **cpu_description(),
        **({"environment": settings} if settings else {}),
    }
