"""The filter that keeps TensorFlow's oneDNN notice out of a quiet start's stderr
(transforms/runtime/quiet_tensorflow.py): what it drops, what it keeps, and that a crash loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers.environment import ROOT, env
from transforms.runtime.quiet_tensorflow import QUIET_ENV

HEADER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
NOTICE = (
    "I0000 00:00:1796132747.501911   28681 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors from different "
    "computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n"
)
# What TensorFlow prints around the notice, and lines like it that must get through.
OTHER_ABSL_LINE = "E0000 00:00:1796132747.6   28681 cuda_dnn.cc:8310] Unable to register cuDNN factory\n"


def python(code: str, *, path: Path | None = None, **extra: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, with `path` (a stand-in package) first on its path."""
    pythonpath = os.pathsep.join(str(p) for p in (path, ROOT) if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env(PYTHONPATH=pythonpath, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def stand_in_tensorflow(folder: Path, printed: str) -> Path:
    """A `tensorflow` package in `folder` that writes `printed` to fd 2 while it loads, as the real one
    does on CPUs where oneDNN's custom operations are on, so these tests run on any machine."""
    package = folder / "tensorflow"
    package.mkdir()
    (package / "__init__.py").write_text(f"import os\nos.write(2, {printed.encode()!r})\n")
    return package


def test_the_filter_drops_the_notice_and_keeps_every_other_line_in_order():
    written = "before\n" + HEADER + NOTICE + HEADER + OTHER_ABSL_LINE + "I0000 port.cc] not oneDNN\n"
    done = python(
        f"""
        import os, sys
        from transforms.runtime.quiet_tensorflow import stderr_without_onednn_notice
        with stderr_without_onednn_notice():
            os.write(2, {written.encode()!r})  # as C++ code writes
            print("from Python", file=sys.stderr)
            os.write(2, {(HEADER + NOTICE + "no newline at the end").encode()!r})
        print("after", file=sys.stderr)
        """
    )
    assert done.returncode == 0, done.stderr
    kept = "before\n" + HEADER + OTHER_ABSL_LINE + "I0000 port.cc] not oneDNN\nfrom Python\n"
    assert done.stderr == kept + "no newline at the endafter\n"


def test_a_crash_inside_the_filter_loses_no_line():
    """The interpreter aborts while stderr goes through the filter: its last words still arrive."""
    done = python(
        """
        import os
        from transforms.runtime.quiet_tensorflow import stderr_without_onednn_notice
        with stderr_without_onednn_notice():
            os.write(2, b"Fatal: this CPU lacks an instruction TensorFlow needs\\n")
            os.abort()
        """
    )
    assert done.returncode != 0
    assert "Fatal: this CPU lacks an instruction TensorFlow needs\n" in done.stderr


def test_the_first_import_of_tensorflow_goes_through_the_filter(tmp_path):
    """And the module keeps its real loader: its resources are still found."""
    package = stand_in_tensorflow(tmp_path, HEADER + NOTICE + "loading\n")
    (package / "data.txt").write_text("a resource")
    code = """
        import importlib.resources, sys
        from transforms.runtime.command import quiet_start
        quiet_start({argv})
        import tensorflow
        print(importlib.resources.files("tensorflow").joinpath("data.txt").read_text(), file=sys.stderr)
        """
    quiet = python(code.format(argv=[]), path=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "loading\na resource\n", quiet.stderr
    verbose = python(code.format(argv=["--verbose"]), path=tmp_path)
    assert verbose.stderr == HEADER + NOTICE + "loading\na resource\n", verbose.stderr


def test_a_worker_of_a_quiet_start_filters_too(tmp_path):
    """Beam's local workers inherit the environment; their first TensorFlow import is the model's load."""
    stand_in_tensorflow(tmp_path, HEADER + NOTICE)
    # The stand-in has no saved_model: the load fails after the import, which is all this test needs.
    code = "from transforms.inference import load_saved_model\ntry:\n    load_saved_model('m')\nexcept Exception:\n    pass"
    assert python(code, path=tmp_path, **{QUIET_ENV: "1"}).stderr == ""
    assert python(code, path=tmp_path).stderr == HEADER + NOTICE
