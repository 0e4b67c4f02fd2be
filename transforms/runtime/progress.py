"""Progress counters: a Beam metrics counter that a local job can also read while it runs.

Beam's metrics counters are the source of truth: Dataflow shows them live and every runner reports them
when the job ends. The local runner, though, returns its metrics only at the end (its `run()` blocks),
and with `--direct_running_mode multi_processing` the work happens in worker subprocesses. So a counter
made here increments the Beam counter and, when `$TERRABEAM_PROGRESS_DIR` is set (the local job's
progress reporter sets it; worker subprocesses inherit it), also keeps a running total per process that
a daemon thread writes to `<dir>/<pid>.json` a few times a second. The reporter sums those files.

On Dataflow the variable is unset and a counter is exactly `Metrics.counter`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping

from apache_beam.metrics import Metrics

ENV_DIR = "TERRABEAM_PROGRESS_DIR"
FLUSH_SECONDS = 0.25
SUFFIX = ".json"


class _ProcessTotals:
    """This process's running totals and the thread that writes them (restarted after a fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        # Held from snapshot to rename: a flush never replaces a newer snapshot with an older one.
        self.write_lock = threading.Lock()
        self.totals: dict[str, int] = {}
        self.dirty = threading.Event()
        self.folder: str | None = None
        self.thread: threading.Thread | None = None

    def add(self, key: str, n: int) -> None:
        folder = os.environ.get(ENV_DIR)
        if not folder:
            return
        with self.lock:
            if folder != self.folder:  # a new job in this process: start from zero
                self.folder, self.totals = folder, {}
            self.totals[key] = self.totals.get(key, 0) + n
            self.dirty.set()
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._flush_loop, name="terrabeam-progress", daemon=True
                )
                self.thread.start()

    def _flush_loop(self) -> None:
        while True:
            self.dirty.wait()
            self.flush()
            time.sleep(FLUSH_SECONDS)  # the increments of the next interval go in one write

    def flush(self) -> None:
        with self.write_lock:
            self._write()

    def _write(self) -> None:
        with self.lock:
            self.dirty.clear()
            folder, totals = self.folder, dict(self.totals)
        if not folder or not os.path.isdir(folder):
            return
        path = os.path.join(folder, f"{self.pid}{SUFFIX}")
        partial = f"{path}.{threading.get_ident()}.partial"
        try:
            with open(partial, "w", encoding="utf-8") as f:
                json.dump(totals, f)
            os.replace(partial, path)  # readers never see half a file
        except OSError:
            pass  # the job has ended and removed the folder; progress is best effort


_totals = _ProcessTotals()
_totals_lock = threading.Lock()


def _process_totals() -> _ProcessTotals:
    global _totals
    if _totals.pid != os.getpid():  # forked: the parent's totals and thread are not ours
        with _totals_lock:
            if _totals.pid != os.getpid():
                _totals = _ProcessTotals()
    return _totals


def flush() -> None:
    """Write this process's totals now (the reporter calls it for work done in its own process)."""
    _process_totals().flush()


class Counter:
    """`Metrics.counter(namespace, name)` that local jobs can also watch while they run."""

    def __init__(self, namespace: str, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self.key = key(namespace, name)
        self._metric = Metrics.counter(namespace, name)

    def inc(self, n: int = 1) -> None:
        self._metric.inc(n)
        _process_totals().add(self.key, n)

    def __reduce__(self):  # pickled into DoFns: rebuild in the worker
        return (Counter, (self.namespace, self.name))


def counter(namespace: str, name: str) -> Counter:
    return Counter(namespace, name)


def key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def read_totals(folder: str) -> tuple[dict[str, int], int]:
    """The sum of every process's totals under `folder`, and how many processes reported."""
    totals: dict[str, int] = {}
    processes = 0
    try:
        names = [n for n in os.listdir(folder) if n.endswith(SUFFIX)]
    except OSError:
        return totals, 0
    for name in names:
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                counts: Mapping[str, int] = json.load(f)
        except (OSError, ValueError):
            continue  # replaced between listdir and open
        processes += 1
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + int(v)
    return totals, processes
