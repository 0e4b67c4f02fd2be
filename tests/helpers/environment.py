"""The repository root, a clean environment for commands run as subprocesses, and the `terrabeam` command
they run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from transforms.runtime import command
from transforms.runtime.quiet_tensorflow import QUIET_ENV

ROOT = Path(__file__).resolve().parents[2]
# ../shared/data beside the repository: real imagery for the tests that skip without it.
SHARED_DATA = ROOT.parent / "shared" / "data"


def env(**extra: str) -> dict[str, str]:
    """This environment without what a quiet start or a local run may have set in the test process."""
    drop = {
        command.TF_LOG_LEVEL_ENV,
        QUIET_ENV,
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
        "COLUMNS",
    }
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    return {**clean, **extra}


# TensorFlow's and absl's start-up lines, and Python warnings, as they appear on stderr.
NOISE = re.compile(
    r"cpu_feature_guard|oneDNN|absl::InitializeLog|This TensorFlow binary|rebuild TensorFlow"
    r"|Warning:|WARNING|^[IWE]\d{4} ",
    re.M,
)


def terrabeam() -> str:
    """The installed console script, next to this Python (make install: pip install -e .)."""
    path = Path(sys.executable).parent / "terrabeam"
    if not path.exists():
        pytest.fail(f"{path} is missing: install terrabeam with `make install` (pip install -e .).")
    return str(path)


def not_own(stderr: str) -> str:
    """stderr less terrabeam's own lines: notes and the final progress line of a job."""
    own = ("note: ", "Extraction: ", "Prediction: ")
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith(own))


def run_command(args: list[str], *, timeout: float = 600, **extra: str) -> subprocess.CompletedProcess:
    """`args` run from the repository root in env(**extra), its output captured."""
    return subprocess.run(args, cwd=ROOT, env=env(**extra), capture_output=True, text=True, timeout=timeout)


def run_python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -c code args` in a fresh interpreter, as run_command runs a command."""
    return run_command([sys.executable, "-c", code, *args], timeout=timeout)
