"""Running a Beam job with progress: a bar on a terminal, periodic lines in a log, Dataflow's job link.

    run_pipeline(options, lambda p: build_pipeline(p, job), EXTRACTION)

- Local runners (DirectRunner, in-process or `multi_processing`): `pipeline.run()` blocks until the
  job ends and its metrics are only reported then, so a thread reads the running totals that the
  counters of `transforms.runtime.progress` write per worker process, and draws them. When the job ends, the
  final line comes from Beam's own metrics, the source of truth.
- Dataflow: the job id and its console URL are printed as soon as the job is submitted, then a line
  from the job's live metrics every `REMOTE_INTERVAL` seconds until it ends.

On a terminal the progress is one line redrawn in place (`\\r`); otherwise (a log file, CI) it is a
line every `$TERRABEAM_PROGRESS_INTERVAL` seconds (default 10). `TERRABEAM_PROGRESS=0` turns it off.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner

from transforms.runtime import progress as counters
from transforms.runtime.outcome import JobFailed, Outcome, is_local_runner, read_outcome

ENV_INTERVAL = "TERRABEAM_PROGRESS_INTERVAL"
ENV_ENABLED = "TERRABEAM_PROGRESS"
LOG_INTERVAL = 10.0  # seconds between lines when the output is not a terminal
TTY_INTERVAL = 0.2  # seconds between redraws of the bar
REMOTE_INTERVAL = 30.0  # seconds between metric queries of a Dataflow job (each is an API call)
RATE_WINDOW = 15.0  # seconds of history the rate (and so the time left) is computed over
BAR_WIDTH = 24


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a job's progress is made of, as sums of counters (`namespace/name` keys).

    `done` of `total` units; until `total` is known (its counter still 0) the line says `waiting`.
    """

    title: str
    unit: str
    done: tuple[str, ...]
    total: str
    failed: tuple[str, ...] = ()
    waiting: str = "starting"
    notes: tuple[tuple[str, str], ...] = ()  # (label, key) shown after the bar, e.g. points sampled

    def keys(self) -> set[str]:
        return {*self.done, self.total, *self.failed, *(k for _, k in self.notes)}


EXTRACTION = Progress(
    title="Extraction",
    # Points, not patches: a point ends as a patch, a dead letter, or left out in the split's guard band.
    unit="points",
    done=("extract/patches_encoded", "extract/patches_failed", "extract/points_in_guard_band"),
    total="extract/points_sampled",
    failed=("extract/patches_failed",),
    waiting="sampling points",
    notes=(
        ("points sampled", "extract/points_sampled"),
        ("in the guard band", "extract/points_in_guard_band"),
    ),
)

PREDICTION = Progress(
    title="Prediction",
    unit="tiles",
    done=(
        "predict/tiles_written",
        "predict/tiles_reused",
        "predict/tiles_without_data",
        "predict/tiles_failed",
    ),
    total="predict/tiles_planned",
    failed=("predict/tiles_failed",),
    waiting="planning tiles",
)


# --- formatting (pure) ----------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def status_line(
    progress: Progress,
    counts: Mapping[str, int],
    elapsed: float,
    rate: float | None,
    *,
    tty: bool = False,
    final: bool = False,
) -> str:
    """One line: done/total, percentage, rate and time left, then notes and failures."""
    done = sum(counts.get(k, 0) for k in progress.done)
    total = counts.get(progress.total, 0)
    failed = sum(counts.get(k, 0) for k in progress.failed)
    # A note of 0 says nothing (no guard band), except the first: the points sampled so far.
    notes = [
        f"{counts.get(k, 0):,} {label}"
        for i, (label, k) in enumerate(progress.notes)
        if i == 0 or counts.get(k, 0)
    ]
    if failed:
        notes.append(f"{failed:,} failed")
    if not total and not final:
        return f"{progress.title}: {progress.waiting}, {format_duration(elapsed)} so far"
    total = max(total, done)
    fraction = done / total if total else 1.0
    if final:
        speed = f" ({done / elapsed:,.1f} {progress.unit}/s)" if elapsed > 0 and done else ""
        line = f"{progress.title}: {done:,}/{total:,} {progress.unit} in {format_duration(elapsed)}{speed}"
        return line + ("; " + ", ".join(notes) if notes else "")
    parts = [f"{done:,}/{total:,} {progress.unit} ({100 * fraction:.0f}%)"]
    if done >= total:
        parts.append("writing the outputs")
    elif rate:
        parts.append(f"{rate:,.1f} {progress.unit}/s")
        parts.append(f"{format_duration((total - done) / rate)} left")
    else:
        parts.append(f"{format_duration(elapsed)} so far")
    head = f"{progress.title} {bar(fraction)} " if tty else f"{progress.title}: "
    line = head + ", ".join(parts)
    return line + ("; " + ", ".join(notes) if notes else "")


class RateMeter:
    """Units per second over the last `window` seconds of samples (a steady figure, quick to follow)."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> float | None:
        if len(self.samples) == 1 and done == self.samples[0][1]:
            self.samples[0] = (now, done)  # nothing done yet: the clock starts when the work does
        elif not self.samples or done != self.samples[-1][1]:
            self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] > self.window:
            self.samples.popleft()
        (t0, d0), d1 = self.samples[0], self.samples[-1][1]
        if d1 <= d0 or now <= t0:
            return None
        # Up to now, not just the last change: a stall lowers the rate.
        return (d1 - d0) / (now - t0)


# --- the reporter ---------------------------------------------------------------------------------


class Reporter:
    """A thread that reads counts every `interval` seconds and writes a progress line to `stream`."""

    def __init__(
        self,
        progress: Progress,
        read: Callable[[], Mapping[str, int]],
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        interval: float | None = None,
    ) -> None:
        self.progress = progress
        self.read = read
        self.stream = stream or sys.stderr
        self.tty = _isatty(self.stream) if tty is None else tty
        self.interval = interval if interval is not None else _interval(self.tty)
        self.started = time.monotonic()
        self.meter = RateMeter()
        self.lines: list[str] = []  # every line written, for tests and the final summary
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="terrabeam-progress-reporter", daemon=True)
        self._drawn = False

    def start(self) -> Reporter:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update(self.read())
            except Exception:  # progress must never break the job
                continue

    def update(self, counts: Mapping[str, int]) -> str:
        self.counts = dict(counts)
        now = time.monotonic()
        done = sum(counts.get(k, 0) for k in self.progress.done)
        rate = self.meter.add(now, done)
        line = status_line(self.progress, counts, now - self.started, rate, tty=self.tty)
        self._write(line)
        return line

    def finish(self, counts: Mapping[str, int] | None) -> str | None:
        """Stop the thread; write the final line (from `counts`, Beam's metrics) unless None."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if counts is None:
            if self._drawn and self.tty:
                self.stream.write("\n")
            return None
        self.counts = dict(counts)
        line = status_line(
            self.progress, counts, time.monotonic() - self.started, None, final=True, tty=False
        )
        self._write(line, final=True)
        return line

    def _write(self, line: str, final: bool = False) -> None:
        self.lines.append(line)
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            text = "\r" + line[:width] + "\x1b[K" + ("\n" if final else "")
        else:
            text = line + "\n"
        self.stream.write(text)
        self.stream.flush()
        self._drawn = not final


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _interval(tty: bool) -> float:
    value = os.environ.get(ENV_INTERVAL)
    if value:
        try:
            return max(0.05, float(value))
        except ValueError:
            pass
    return TTY_INTERVAL if tty else LOG_INTERVAL


def enabled() -> bool:
    return os.environ.get(ENV_ENABLED, "1").strip().lower() not in ("0", "false", "no", "off")


# --- metrics --------------------------------------------------------------------------------------


def metric_counts(result: Any, keys: set[str]) -> dict[str, int] | None:
    """Counter values (summed over steps) from a PipelineResult's metrics, or None if it has none."""
    try:
        results = result.metrics().query()["counters"]
    except Exception:  # a runner without metrics, or an API error on a remote job
        return None
    counts: dict[str, int] = {}
    for metric in results:
        key = counters.key(metric.key.metric.namespace, metric.key.metric.name)
        if key not in keys:
            continue
        value = metric.committed if metric.committed is not None else metric.attempted
        counts[key] = counts.get(key, 0) + int(value or 0)
    return counts


def console_url(job_id: str, options: PipelineOptions) -> str:
    gcp = options.view_as(GoogleCloudOptions)
    return f"https://console.cloud.google.com/dataflow/jobs/{gcp.region}/{job_id}?project={gcp.project}"


def is_dataflow(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__ if runner else ""
    return "dataflow" in (name or "").lower()


# --- running a job --------------------------------------------------------------------------------


class LocalRunner(PipelineRunner):
    """Beam's DirectRunner for a batch job, without its first try with Prism.

    With no --runner, Beam's DirectRunner first tries its Prism runner (a binary it downloads from
    GitHub, which ignores --direct_num_workers) and falls back to the FnApiRunner. This runner goes
    straight to the FnApiRunner, built as the DirectRunner builds it (the workers get the pipeline
    options), so a local run works offline and honours --direct_num_workers/--direct_running_mode.
    """

    def run_pipeline(self, pipeline, options: PipelineOptions):
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=info).run_pipeline(pipeline, options)


def run_pipeline(
    options: PipelineOptions,
    build: Callable[[beam.Pipeline], Any],
    progress: Progress,
    stream: TextIO | None = None,
    runner: Any = None,
) -> Any:
    """Build and run the pipeline to completion (like `with beam.Pipeline(...)`), reporting progress.

    `runner`: a PipelineRunner instance, or None for the one the options name. Returns the
    PipelineResult. A failed job raises what `wait_until_finish` raises.
    """
    stream = stream or sys.stderr
    pipeline = beam.Pipeline(runner=runner, options=options)
    build(pipeline)
    if not enabled():
        result = pipeline.run()
        if not options.view_as(StandardOptions).no_wait_until_finish:
            result.wait_until_finish()
        return result
    if is_dataflow(options):
        return _run_remote(pipeline, options, progress, stream)
    return _run_local(pipeline, options, progress, stream)


def run_job(
    options: PipelineOptions,
    build: Callable[[beam.Pipeline, bool], Any],
    progress: Progress,
    *,
    outcome_path: str,
    job: str,
    where: str,
    runner: Any = None,
) -> Outcome | None:
    """`run_pipeline` for a job that records its outcome in `outcome_path` (manifest.json,
    prediction.json): raises JobFailed when the recorded outcome says the job failed (in its last step,
    before it, or past --max-error-fraction), else returns the outcome (None where the runner returned
    before the job ended). `build(pipeline, remote)`: remote when the runner is not in this process.
    """
    remote = not is_local_runner(options.view_as(StandardOptions).runner)
    try:
        run_pipeline(options, lambda pipeline: build(pipeline, remote), progress, runner=runner)
    except Exception:
        outcome = read_outcome(outcome_path)
        if outcome is None or outcome.ok:
            raise
        raise JobFailed(outcome, job, where) from None
    outcome = read_outcome(outcome_path)
    if outcome is not None and not outcome.ok:
        raise JobFailed(outcome, job, where)
    return outcome


def _run_local(pipeline: beam.Pipeline, options: PipelineOptions, progress: Progress, stream: TextIO) -> Any:
    folder = tempfile.mkdtemp(prefix="terrabeam-progress-")
    previous = os.environ.get(counters.ENV_DIR)
    os.environ[counters.ENV_DIR] = folder  # inherited by the runner's worker subprocesses
    reporter = Reporter(progress, lambda: counters.read_totals(folder)[0], stream).start()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except BaseException:
        reporter.finish(None)
        raise
    finally:
        if previous is None:
            os.environ.pop(counters.ENV_DIR, None)
        else:
            os.environ[counters.ENV_DIR] = previous
        shutil.rmtree(folder, ignore_errors=True)
    reporter.finish(metric_counts(result, progress.keys()) or reporter.counts)
    return result


def _run_remote(pipeline: beam.Pipeline, options: PipelineOptions, progress: Progress, stream: TextIO) -> Any:
    result = pipeline.run()
    job_id = _job_id(result)
    if job_id:
        stream.write(f"{progress.title}: Dataflow job {job_id}\n  {console_url(job_id, options)}\n")
        stream.flush()
    if options.view_as(StandardOptions).no_wait_until_finish:
        return result
    keys = progress.keys()
    # Dataflow's metrics are live: each query is an API call, so not too often, and on no terminal.
    reporter = Reporter(
        progress, lambda: metric_counts(result, keys) or {}, stream, tty=False, interval=REMOTE_INTERVAL
    ).start()
    try:
        result.wait_until_finish()
    except BaseException:
        reporter.finish(None)
        raise
    reporter.finish(metric_counts(result, keys))
    return result


def _job_id(result: Any) -> str | None:
    try:
        return result.job_id() if getattr(result, "has_job", True) else None
    except Exception:  # template launches and runners without jobs
        return None
