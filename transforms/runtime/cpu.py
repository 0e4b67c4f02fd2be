"""What the CPU can do, from /proc/cpuinfo (Linux; nothing is known elsewhere)."""

from __future__ import annotations

import functools

# Either gives the CPU native bfloat16 arithmetic, the only case where mixed_bfloat16 can pay on a CPU.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ("model name", "flags", ...); empty where unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.split("\n\n", 1)[0].splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in fields.items()}


def cpu_flags() -> set[str]:
    return set(cpu_fields().get("flags", "").split())


def has_native_bfloat16() -> bool:
    """Whether the CPU computes in bfloat16 natively (Intel AMX or AVX-512 BF16)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)
