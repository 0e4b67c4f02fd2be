"""Hide the oneDNN notice that TensorFlow prints while it loads, and nothing else.

On CPUs where TensorFlow 2.21 turns oneDNN's custom operations on, loading it writes two lines to the
process's stderr through absl before absl is initialized, where no log level reaches:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:... port.cc:153] oneDNN custom operations are on. You may see slightly different ...

Only `TF_ENABLE_ONEDNN_OPTS=0` stops them, and that swaps the kernels (speed and round-off), so a quiet
start filters them instead: while `import tensorflow` runs, file descriptor 2 is a pipe into a small
filter process that forwards every other line at once to the real stderr. The filter is a separate
process so that nothing is lost if the import crashes the interpreter (an illegal instruction, an
abort): the pipe closes and the filter forwards what it has before it exits.

A quiet start (transforms.runtime.command.quiet_start) installs the filter for the first `import tensorflow` of its
process and sets QUIET_ENV, which Beam's local worker processes inherit; `transforms/__init__.py`
installs it there, before a worker's DoFns load TensorFlow. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

# Set to "1" by a quiet start; inherited by the processes it starts (Beam's local workers).
QUIET_ENV = "TERRABEAM_QUIET_START"
NOTICE_HEADER = (
    rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\r?$"
)
NOTICE = rb"^I\d{4} [^\]]*\] oneDNN custom operations are on\."
# The filter process: absl's header line is dropped only when the oneDNN notice follows it, since it
# heads any other early absl line too. It ignores Ctrl-C (the terminal sends it to the whole process
# group): the interrupted import restores stderr, and the filter then sees the pipe close.
FILTER_PROGRAM = """
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
header, notice = re.compile(sys.argv[1].encode()), re.compile(sys.argv[2].encode())
out, held = sys.stdout.buffer, None
for line in sys.stdin.buffer:
    if held is not None and not notice.match(line):
        out.write(held)
    held = None
    if header.match(line.rstrip(b"\\n")):
        held = line
    elif not notice.match(line):
        out.write(line)
        out.flush()
if held is not None:
    out.write(held)
out.flush()
"""
# How long to wait, once TensorFlow has loaded, for the filter to forward the last lines and exit.
FILTER_EXIT_TIMEOUT_S = 10.0


@contextlib.contextmanager
def stderr_without_onednn_notice() -> Iterator[None]:
    """Within the block, file descriptor 2 (C++ code and `sys.stderr` alike) goes through the filter.

    Where no filter process can be started, stderr is left as it is: a visible notice beats a lost line.
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no usable sys.stderr: fd 2 all the same
        sys.stderr.flush()
    started = _start_filter()
    if started is None:
        yield
        return
    process, real_stderr = started
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        os.dup2(real_stderr, 2)  # the pipe's last write end closes: the filter drains it and exits
        os.close(real_stderr)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(FILTER_EXIT_TIMEOUT_S)  # a child started meanwhile may hold the pipe open


def _start_filter() -> tuple[subprocess.Popen, int] | None:
    """Start the filter on a copy of fd 2 and point fd 2 at it: (the filter, the copy), or None."""
    try:
        real_stderr = os.dup(2)
    except OSError:  # no file descriptor 2 at all: nothing to filter
        return None
    # -S -E: no site packages, no PYTHON* variables (a quick start, nothing injected).
    command = [sys.executable, "-S", "-E", "-c", FILTER_PROGRAM, NOTICE_HEADER.decode(), NOTICE.decode()]
    try:
        read_end, write_end = os.pipe()
    except OSError:
        os.close(real_stderr)
        return None
    try:
        process = subprocess.Popen(command, stdin=read_end, stdout=real_stderr, stderr=real_stderr)
    except (OSError, ValueError):  # no interpreter to run the filter with (an embedded Python, say)
        for fd in (real_stderr, write_end):
            os.close(fd)
        return None
    finally:
        os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    return process, real_stderr


class _FilteredLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader inside stderr_without_onednn_notice, then steps out of the way."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            with stderr_without_onednn_notice():
                self.loader.exec_module(module)
        finally:
            # The module keeps its real loader (importlib.resources and friends ask it for files).
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` with the other finders and wraps its loader; once only."""

    def find_spec(
        self, name: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        remove_finder()
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _FilteredLoader(spec.loader)
        return spec


def hide_notice_while_tensorflow_loads() -> None:
    """Filter the oneDNN notice out of this process's first `import tensorflow`; no-op once loaded."""
    if "tensorflow" in sys.modules or any(isinstance(f, _TensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _TensorFlowFinder())


def remove_finder() -> None:
    """Undo hide_notice_while_tensorflow_loads (for --verbose, and once TensorFlow is found)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _TensorFlowFinder)]


def hide_notice_if_a_quiet_start_asked() -> None:
    """In a process that a quiet start started (QUIET_ENV): a Beam local worker, say."""
    if os.environ.get(QUIET_ENV) == "1":
        hide_notice_while_tensorflow_loads()
