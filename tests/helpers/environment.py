"""The repository root and a clean environment for commands run as subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

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
