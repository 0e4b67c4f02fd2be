"""A session fixture's work done once for all of pytest-xdist's workers, not once in each.

Each worker is a process with its own session; the first to ask does the work under a file lock in the
run's shared temporary folder and records its result there as JSON; the others wait for the lock and
read it (the pattern pytest-xdist documents, with fcntl for the lock).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def once_per_run(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """`build(folder)`'s JSON-ready result, computed by the first worker that asks."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    folder = base / f"once-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / "result.json"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not result.exists():
                work = folder / "work"
                work.mkdir(exist_ok=True)
                result.write_text(json.dumps(build(work)))
            return json.loads(result.read_text())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
