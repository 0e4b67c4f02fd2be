"""One measurement in a fresh interpreter, so that its TensorFlow state (dtype policy, thread pools,
compiled functions) and its peak memory are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def run_in_child(module: str, spec: dict[str, Any], what: str) -> dict[str, Any]:
    """Run `python -m <module> --child <spec as JSON>` and return the JSON the child wrote to
    spec["out"] (a temporary file added here); RuntimeError naming `what` when the child fails."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "result.json"
        done = subprocess.run(
            [sys.executable, "-m", module, "--child", json.dumps({**spec, "out": str(out)})],
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())
