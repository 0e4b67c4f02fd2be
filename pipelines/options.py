"""The Beam jobs' options: the groups they share, --help, unknown flags, and every local core.

Nothing here imports Apache Beam at module level (it takes seconds): --help builds its parser from the
jobs' option declarations alone, and the functions that need Beam import it when a job runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from transforms.runtime.command import (
    VERBOSE_FLAG,
    HelpFormatter,
    add_verbose_flag,
    fill,
    unknown_options_message,
)
from transforms.runtime.outcome import DEFAULT_MAX_ERROR_FRACTION

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineRunner

# Runners that honour --direct_num_workers/--direct_running_mode (a subset of the local runners of
# transforms.runtime.outcome.is_local_runner: Prism runs locally but ignores them).
POOL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner")
# Beam options that matter most to a terrabeam job; --help names them (every Beam option passes through).
RUNNER_FLAGS = (
    "--runner",
    "--project",
    "--region",
    "--temp_location",
    "--staging_location",
    "--max_num_workers",
    "--setup_file",
    "--sdk_container_image",
    "--direct_num_workers",
    "--direct_running_mode",
)
GIB = 1 << 30
# Memory a local run leaves to the rest of the machine when it sizes its worker pool.
MEMORY_HEADROOM = 0.8


def runner_help(job: str, local_cores: bool = True) -> str:
    """The --help paragraph on Beam's runner options, which the job passes through to Beam untouched."""
    text = """\
runner options (passed through to Apache Beam, as in Beam's examples):
  --runner DirectRunner (the default: this machine) or DataflowRunner (Google Cloud), with --project,
  --region, --temp_location gs://..., --staging_location, --max_num_workers, --setup_file ./setup.py,
  --sdk_container_image; every other Beam pipeline option passes through as well
  (https://cloud.google.com/dataflow/docs/reference/pipeline-options)."""
    if local_cores:
        text += f"""
  On this machine the {job} runs one worker process per CPU it may use ({available_cpus()} here),
  fewer when the work is small or the memory (--max-memory) cannot hold them; --direct_num_workers N
  and --direct_running_mode {{in_memory,multi_threading,multi_processing}} choose for yourself
  (--direct_num_workers 1: one process, Beam's default)."""
    return text


# Adds a job's options to a parser: a function, or a `PipelineOptions` class (its `_add_argparse_args`).
OptionDeclarations = Callable[[Any], None] | type


def help_parser(
    prog: str, description: str, declarations: Sequence[OptionDeclarations], epilog: str
) -> argparse.ArgumentParser:
    """A parser of the job's own options, grouped as its declarations group them, for --help and type
    errors.

    The declarations are what the job's `PipelineOptions` class adds, so --help lists exactly what Beam
    will parse; Beam's own options are described in `epilog`.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        usage="%(prog)s [options] [runner options]",
        description=fill(description),
        epilog=fill(epilog),
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    parser._optionals.title = "general"
    for declare in declarations:
        getattr(declare, "_add_argparse_args", declare)(parser)
    if VERBOSE_FLAG not in parser._option_string_actions:  # training's --verbose is its own
        add_verbose_flag(parser)
    return parser


def parse_job_flags(argv: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """Answer --help, and stop on a badly typed value of the job's own options (exit status 2).

    The job's options are parsed again by Beam; this pass only reports, with the job's own usage line,
    what argparse would otherwise report under Beam's anonymous parser.
    """
    parser.parse_known_args(list(argv))


def typed_flags(argv: Sequence[str]) -> list[str]:
    """The long flags on a command line as typed (`--name` of `--name value` and `--name=value`)."""
    flags = []
    for arg in argv:
        if arg == "--":  # the end of the options
            break
        if arg.startswith("--") and len(arg) > 2:
            flags.append(arg.split("=", 1)[0])
    return flags


def known_flags() -> list[str]:
    """Every long flag of every registered options class, spelt as its parser accepts it."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(add_help=False, allow_abbrev=False)
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)
    return sorted(flag for flag in parser._option_string_actions if flag.startswith("--"))


def unknown_flags(options: PipelineOptions) -> list[str]:
    """Flags no registered option class knows, as option names (Beam would only log and drop them).

    A flag is known by its spelling: Beam drops `--patch_size 3` when the option is `--patch-size`
    (its dest `patch_size` is known, the flag is not), so dests cannot tell.
    """
    known = set(known_flags())
    typed = typed_flags(getattr(options, "_flags", None) or ())
    return sorted({flag[2:].replace("-", "_") for flag in typed if flag not in known})


def help_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The long flags a job's --help lists: its own options and the runner options it names."""
    own = {f for f in parser._option_string_actions if f.startswith("--")}
    return sorted(own | {f for f in RUNNER_FLAGS if f in (parser.epilog or "")})


def unknown_flags_message(options: PipelineOptions, preferred: Sequence[str] = ()) -> str | None:
    """A message naming each unknown flag and the closest known one, or None when all are known.

    Flags are quoted as the user typed them and suggestions as the parser spells them: terrabeam's
    options take hyphens (--patch-size), Beam's underscores (--temp_location). Suggestions come from
    `preferred` (the flags --help lists) first, then from every option Beam knows.
    """
    known = known_flags()
    known_set = set(known)
    unknown = sorted({f for f in typed_flags(getattr(options, "_flags", None) or ()) if f not in known_set})
    if not unknown:
        return None
    return unknown_options_message(unknown, list(preferred), known)


class SharedArgumentGroup:
    """An argument group that skips flags another job's options class already registered.

    Beam builds one parser from every `PipelineOptions` subclass it has seen, so two jobs that both
    offer `--inputs` or `--output` would clash once both modules are imported. Each job's own view
    (`options.view_as(ExtractOptions)`) still parses with its own definitions and defaults; only the
    merged parser keeps the first definition.
    """

    def __init__(self, parser, title: str) -> None:
        self._parser = parser
        self._group = parser.add_argument_group(title)

    def add_argument(self, *flags: str, **kwargs):
        registered = self._parser._option_string_actions  # argparse keeps no public registry
        if any(flag in registered for flag in flags):
            return None
        return self._group.add_argument(*flags, **kwargs)


def add_earthengine_options(parser, *, with_labels: bool) -> None:
    """The Earth Engine source options, the same for every job that reads imagery."""
    ee = SharedArgumentGroup(parser, "Earth Engine source (--source earthengine)")
    ee.add_argument(
        "--source",
        choices=("local", "earthengine"),
        default="local",
        help="Read pixels from local rasters (--inputs) or from Earth Engine (--ee-image).",
    )
    ee.add_argument(
        "--ee-project",
        dest="ee_project",
        default=None,
        help="Cloud project registered for Earth Engine (required with --source earthengine).",
    )
    ee.add_argument(
        "--ee-key-file",
        dest="ee_key_file",
        default=None,
        help="Service-account JSON key, local or gs:// (default: `earthengine authenticate` or application "
        "default credentials).",
    )
    ee.add_argument(
        "--ee-endpoint",
        dest="ee_endpoint",
        default=None,
        help="Earth Engine API URL (default: the high-volume endpoint "
        "https://earthengine-highvolume.googleapis.com).",
    )
    ee.add_argument(
        "--ee-image",
        dest="ee_image",
        default=None,
        help="Input image recipe: presets s2-l1c, s2-sr, landsat and s1-grd as PRESET:WINDOW[@OPTION...] "
        "(WINDOW 2023, 2023-summer or 2023-05-01..2023-09-30; OPTION median, mean, p25, greenest, cs=0.6, "
        "orbit=ASCENDING or a band-name suffix), s2-l1c-median[:YEAR] and elevation, or ASSET_ID[:BAND,...], "
        "joined with + (default: s2-l1c-median:2020+elevation; two dates: "
        "s2-sr:2019-summer@before+s2-sr:2023-summer@after). See docs/earth-engine.md.",
    )
    if with_labels:
        ee.add_argument(
            "--ee-labels",
            dest="ee_labels",
            default=None,
            help="Label image recipe: worldcover-dynamicworld[:YEAR] (the default), "
            "dynamicworld-label:WINDOW, hansen-loss:YEAR..YEAR (forest loss, 0/1), or ASSET_ID[:BAND]; band "
            "landcover. Points come from Earth Engine's stratifiedSample on it.",
        )
    ee.add_argument(
        "--ee-fetch",
        dest="ee_fetch",
        choices=("computePixels", "getDownloadURL"),
        default="computePixels",
        help="How pixels are fetched (default: computePixels).",
    )
    ee.add_argument(
        "--max-requests",
        dest="max_requests",
        type=int,
        default=20,
        help="Earth Engine requests in flight across the whole job (a project allows 40 by default).",
    )


# A Dataflow job whose plan costs more than this asks before it starts (--budget).
DEFAULT_BUDGET_USD = 10.0


def add_plan_options(parser) -> None:
    """The plan's options, the same for every job that prints one before it starts on Dataflow
    (`terrabeam plan` takes them too)."""
    from transforms.planning.prices import EE_REQUEST_SECONDS, EE_REQUESTS_PER_MINUTE

    plan = SharedArgumentGroup(
        parser, "plan and budget (DataflowRunner; `terrabeam plan` prints the plan alone)"
    )
    plan.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_USD,
        help="USD. A Dataflow job whose planned cost (with a month of storage) is above this asks "
        "before it starts (y/N); without a terminal it stops unless --yes.",
    )
    plan.add_argument(
        "--yes",
        action="store_true",
        help="Start the Dataflow job whatever its planned cost, without asking.",
    )
    plan.add_argument(
        "--ee-requests-per-minute",
        dest="ee_requests_per_minute",
        type=int,
        default=EE_REQUESTS_PER_MINUTE,
        help="The project's Earth Engine request quota a minute, for the plan's time (default: "
        f"{EE_REQUESTS_PER_MINUTE}, Earth Engine's default; concurrency is --max-requests).",
    )
    plan.add_argument(
        "--ee-request-seconds",
        dest="ee_request_seconds",
        type=float,
        default=EE_REQUEST_SECONDS,
        help="Seconds one Earth Engine pixel request takes, for the plan's time (an assumption: "
        "measure yours).",
    )


def add_local_runner_options(parser) -> None:
    """Options of a run on this machine (the DirectRunner), the same for every job that uses them."""
    local = SharedArgumentGroup(parser, "this machine (DirectRunner)")
    local.add_argument(
        "--max-memory",
        dest="max_memory",
        type=float,
        default=None,
        help="GiB the local worker processes may use together; caps how many start, from an estimate per "
        "worker (default: 80%% of the memory free when the job starts).",
    )


# --- options that extraction and prediction share ---------------------------------------------------


class JobOptionGroup(SharedArgumentGroup):
    """A group of a job's options, with the options that extraction and prediction share, each added to
    the group where the job lists it."""

    def add_imagery(self) -> None:
        """--inputs and --band-names: local rasters to read."""
        self.add_argument(
            "--inputs",
            nargs="+",
            default=None,
            help="Input rasters: one multi-band file or one per band (default: the demo scene). Imagery by "
            "date: LABEL=PATH per file (before=a.tif after=b.tif; a label repeats for several files of a "
            "date), or a STAC catalog or item collection (.json); the dates are read as one stack whose "
            "bands carry the date, {band}_{label} (docs/prediction.md, Imagery by date).",
        )
        self.add_argument(
            "--band-names",
            dest="band_names",
            default=None,
            help="Comma-separated names for all input bands, in file order; with dated inputs, for each "
            "date's bands (default: band descriptions, else file names).",
        )

    def add_demo_cache(self) -> None:
        self.add_argument(
            "--demo-cache",
            dest="demo_cache",
            default=None,
            help="Folder for the generated demo scene (default: $TERRABEAM_CACHE or ~/.cache/terrabeam).",
        )

    def add_grid(self, grid: str, crs_default: str, scale_default: str) -> None:
        """--crs and --scale of the job's pixel grid (`grid`: "patch grid", "output grid")."""
        self.add_argument("--crs", default=None, help=f"CRS of the {grid} (default: {crs_default}).")
        self.add_argument(
            "--scale",
            type=float,
            default=None,
            help=f"Pixel size of the {grid} in CRS units (default: {scale_default}).",
        )

    def add_max_attempts(self, read: str) -> None:
        """--max-attempts of each `read` ("patch read", "tile read")."""
        self.add_argument(
            "--max-attempts",
            dest="max_attempts",
            type=int,
            default=5,
            help=f"Tries per {read} before it is dead-lettered.",
        )

    def add_output(self, default: str, unit: str, earlier: str) -> None:
        """--max-error-fraction (of the job's `unit`s), --output (default `default`) and --overwrite (of an
        `earlier` result)."""
        self.add_argument(
            "--max-error-fraction",
            dest="max_error_fraction",
            type=float,
            default=DEFAULT_MAX_ERROR_FRACTION,
            help=f"Fail (exit status 1) when more than this fraction of the {unit} fail; 1.0 turns the check off.",
        )
        self.add_argument("--output", default=default, help="Output folder (local or gs://).")
        self.add_argument(
            "--overwrite", action="store_true", help=f"Replace an earlier {earlier} in --output."
        )


# --- every local core ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LocalWorkers:
    """How many worker processes a local run starts, and what set the number."""

    workers: int
    cpus: int
    reason: str  # "cpus", "memory" or "work"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (memory that can be used without swapping), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def plan_local_workers(
    cpus: int,
    per_worker_bytes: int,
    max_memory_gib: float | None,
    free_bytes: int | None,
    work: int | None = None,
    min_work_per_worker: int = 1,
    cpus_per_worker: int = 1,
) -> LocalWorkers:
    """One worker per `cpus_per_worker` CPUs, as many as the memory budget holds and the work pays for
    (at least one).

    The budget is `--max-memory` when given, else MEMORY_HEADROOM of the memory free now; with neither
    known, memory sets no bound. A worker process takes seconds to start, so a job gets no more workers
    than `work` (its planned work items) / `min_work_per_worker`.
    """
    if max_memory_gib is not None:
        budget = int(max_memory_gib * GIB)
    elif free_bytes is not None:
        budget = int(free_bytes * MEMORY_HEADROOM)
    else:
        budget = None
    workers, reason = cpus // max(1, cpus_per_worker), "cpus"
    if budget is not None and per_worker_bytes > 0 and budget // per_worker_bytes < workers:
        workers, reason = budget // per_worker_bytes, "memory"
    if work is not None and work // max(1, min_work_per_worker) < workers:
        workers, reason = work // max(1, min_work_per_worker), "work"
    return LocalWorkers(max(1, int(workers)), cpus, reason)


def _runner_name(options: PipelineOptions) -> str | None:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return None
    return (runner if isinstance(runner, str) else type(runner).__name__).split(".")[-1]


def runs_worker_pool(options: PipelineOptions) -> bool:
    """True when the job's runner takes a local worker pool (--direct_num_workers)."""
    name = _runner_name(options)
    return name is None or name in POOL_RUNNERS


def local_runner(options: PipelineOptions) -> PipelineRunner | None:
    """The runner for `beam.Pipeline(runner=...)`: LocalRunner for the DirectRunner (named or the
    default), None (the runner the options name) otherwise."""
    if _runner_name(options) not in (None, "DirectRunner", "SwitchingDirectRunner"):
        return None
    from pipelines.progress import LocalRunner

    return LocalRunner()


def chose_direct_options(argv: Sequence[str]) -> bool:
    """True when the command line sets any of Beam's --direct_* options itself."""
    return any(arg.startswith("--direct_") for arg in argv)


def use_local_cores(
    options: PipelineOptions,
    argv: Sequence[str],
    per_worker_bytes: int,
    max_memory_gib: float | None,
    work: int | None = None,
    min_work_per_worker: int = 1,
    cpus_per_worker: int = 1,
) -> LocalWorkers | None:
    """On the local runner with no --direct_* option given, run one worker process per available CPU
    (per `cpus_per_worker` CPUs for a job whose workers use several cores each).

    Sets --direct_num_workers N (and --direct_running_mode multi_processing when N > 1) in `options`
    and returns the plan; returns None, changing nothing, on a distributed runner or when the user chose.
    """
    if not runs_worker_pool(options) or chose_direct_options(argv):
        return None
    plan = plan_local_workers(
        available_cpus(),
        per_worker_bytes,
        max_memory_gib,
        available_memory_bytes(),
        work,
        min_work_per_worker,
        cpus_per_worker,
    )
    from apache_beam.options.pipeline_options import DirectOptions

    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = plan.workers
    if plan.workers > 1:
        direct.direct_running_mode = "multi_processing"
    why = {
        "cpus": "one per CPU" if cpus_per_worker == 1 else f"one per {cpus_per_worker} CPUs",
        "memory": f"for {plan.cpus} CPUs, as memory allows (about {per_worker_bytes / GIB:.1f} GiB each; "
        "--max-memory)",
        "work": f"for {plan.cpus} CPUs: more would take longer to start than the work they would share",
    }[plan.reason]
    logging.info("Running %d local worker process(es), %s.", plan.workers, why)
    return plan


def worker_processes(options: PipelineOptions) -> int:
    """How many worker processes a local multi_processing run starts (0 for any other run)."""
    from apache_beam.options.pipeline_options import DirectOptions

    direct = options.view_as(DirectOptions)
    if not runs_worker_pool(options) or direct.direct_running_mode != "multi_processing":
        return 0
    return direct.direct_num_workers or os.cpu_count() or 1  # 0: Beam's own "one per CPU"


@contextlib.contextmanager
def worker_environment(variables: dict[str, str]) -> Iterator[None]:
    """Environment variables for the worker processes a local run starts (they inherit the environment);
    restored afterwards. A variable the user set already is left as it is."""
    added = {k: v for k, v in variables.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
