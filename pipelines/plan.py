"""`terrabeam plan extract|predict [the job's options]`: what a job will do and cost, before it runs.

    terrabeam plan extract --source earthengine --regions country.geojson --points-per-class 5000 \\
        --max_num_workers 50
    terrabeam plan predict --source earthengine --aoi region.geojson --model gs://bucket/model

The plan takes the job's own options (the same declarations, so the flags cannot drift) and checks them
as the job does, but starts no job, fetches no pixel and never contacts Earth Engine: it counts the work
(points, patches or tiles, pixels, bytes read and written), the Earth Engine requests and the time the
project's quota allows them, the workers and hours from the throughputs benchmarks/ measured, the
Dataflow cost from a dated price table and the output's size and monthly cost in Cloud Storage.
Extraction from local rasters samples its points as the job does (the label raster only), so its
counts are exact; from Earth Engine they are upper bounds.

A job run with a distributed runner (DataflowRunner) prints the same plan first, writes it beside its
outputs (plan.json) and, above --budget, asks before it starts (`submission_plan`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import json
import math
import pickle
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pipelines.shell import CommandLine, JobShell, UsageError
from transforms.runtime.command import fill, prog, quiet_start

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.extract import ExtractJob
    from pipelines.predict import PredictJob
    from transforms.geometry.tiling import RegionMask, TilePlan
    from transforms.planning import Plan

MODULE = "pipelines.plan"
PLAN_JSON = "plan.json"
# The jobs a plan is made for: the command's word, the job module, the spelling aliases its run() takes.
JOBS = {
    "extract": ("pipelines.extract", "label_raster_alias"),
    "predict": ("pipelines.predict", "region_alias"),
}
DESCRIPTION = """\
Plan {article} {job} before it runs: the work (points, patches or tiles, pixels, bytes read and written), the
Earth Engine requests and the time the project's quota allows them, the workers and hours from measured
throughputs, the Dataflow cost from a dated price table, and the output's size and monthly cost in Cloud
Storage. Takes the {job}'s own options; starts nothing, fetches no pixel, never contacts Earth Engine.
Details: docs/planning.md."""
EPILOG = """\
runner options (Apache Beam's, as the job takes them):
  The plan prices a Dataflow run of the job: --machine_type (default n1-standard-1), --max_num_workers
  (default: Dataflow's limit of 1000; reading Earth Engine, the workers that keep --max-requests in
  flight), --num_workers, --disk_size_gb (default 25), --worker_disk_type,
  --number_of_worker_harness_threads (default: one a vCPU). With the default --runner DirectRunner it
  also says how long this machine would take."""
USAGE_EPILOG = """\
`terrabeam plan JOB --help` lists the options, which are the job's own. A job run with --runner
DataflowRunner prints the same plan first, writes it to plan.json beside its outputs, and asks before it
starts when the plan costs more than --budget (or stops, without a terminal, unless --yes)."""


def shell(job: str) -> JobShell:
    """The job's shell, named and described as `terrabeam plan JOB`."""
    module = importlib.import_module(JOBS[job][0])
    return dataclasses.replace(
        module.SHELL,
        name=f"{prog(MODULE)} {job}",
        description=DESCRIPTION.format(
            article="an" if module.SHELL.job[0] in "aeiou" else "a", job=module.SHELL.job
        ),
        epilog=EPILOG,
    )


def usage() -> str:
    lines = [
        f"usage: {prog(MODULE)} {{{','.join(JOBS)}}} [the job's options]",
        "",
        "What a job will do and cost, before it runs.",
        "",
        "jobs:",
        "  extract   plan an extraction (terrabeam extract's options)",
        "  predict   plan a prediction (terrabeam predict's options)",
        "",
        fill(USAGE_EPILOG),
    ]
    return "\n".join(lines)


# --- the settings the plan reads from Beam's options -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the plan takes from the command line besides the job: workers, runner, quota."""

    machine_type: str
    max_workers: int | None
    disk_gb: int | None
    ssd: bool
    runner: str
    local: bool  # the runner runs on this machine
    ee_processes: int  # worker processes that share --max-requests on Dataflow
    threads: int | None  # --number_of_worker_harness_threads: elements a worker processes at once
    max_requests: int
    requests_per_minute: int
    request_seconds: float


def settings(opts: Any, options: PipelineOptions) -> Settings:
    from apache_beam.options.pipeline_options import DebugOptions, StandardOptions, WorkerOptions

    from transforms.planning.prices import DEFAULT_MACHINE_TYPE
    from transforms.runtime.outcome import is_local_runner

    if opts.ee_requests_per_minute < 1:
        raise UsageError(f"--ee-requests-per-minute must be at least 1, got {opts.ee_requests_per_minute}.")
    if not opts.ee_request_seconds > 0:
        raise UsageError(f"--ee-request-seconds must be a positive number, got {opts.ee_request_seconds}.")
    if opts.budget < 0:
        raise UsageError(f"--budget must be a number of USD >= 0, got {opts.budget}.")
    workers = options.view_as(WorkerOptions)
    runner = options.view_as(StandardOptions).runner
    name = (runner if isinstance(runner, str) or runner is None else type(runner).__name__) or "DirectRunner"
    max_workers = workers.max_num_workers or workers.num_workers or None
    return Settings(
        machine_type=workers.machine_type or DEFAULT_MACHINE_TYPE,
        max_workers=max_workers,
        disk_gb=workers.disk_size_gb or None,
        ssd="pd-ssd" in (workers.disk_type or ""),
        runner=name,
        local=is_local_runner(runner),
        # Each Dataflow worker process takes its share of --max-requests (at least one); without a
        # worker count the job's share is the whole of it.
        ee_processes=max_workers or 1,
        threads=options.view_as(DebugOptions).number_of_worker_harness_threads or None,
        max_requests=opts.max_requests,
        requests_per_minute=opts.ee_requests_per_minute,
        request_seconds=opts.ee_request_seconds,
    )


def earthengine_requests(by_kind: dict[str, int], s: Settings, vcpus: int, notes: list[str]):
    """The requests as the job sends them on Dataflow, and the workers that send them: a worker process
    keeps its share of --max-requests in flight (at least one), but no more than the elements it
    processes at once, one a thread; and the project answers at most its concurrent requests (Earth
    Engine's default, or --max-requests if higher) at once."""
    from transforms.planning import Requests, share_of
    from transforms.planning.prices import EE_CONCURRENT_REQUESTS

    # Dataflow gives a batch worker's SDK harness threads by its cores (WorkerPool.numThreadsPerWorker)
    # unless --number_of_worker_harness_threads says; each thread reads one element at a time.
    threads = s.threads or vcpus
    processes = s.ee_processes
    if s.max_workers is None:
        # The job needs --max_num_workers on Dataflow; until it is given, plan the workers whose
        # threads keep --max-requests in flight.
        processes = math.ceil(s.max_requests / threads)
        notes.append(
            f"Without --max_num_workers the plan takes {processes} worker{'s' if processes != 1 else ''}: as many "
            f"as keep --max-requests ({s.max_requests}) in flight; on Dataflow the job needs --max_num_workers."
        )
    share = share_of(s.max_requests, processes)
    per_worker = min(share, threads)
    if threads < share:
        notes.append(
            f"A worker reads {threads} element{'s' if threads != 1 else ''} at a time (one a thread: "
            f"--number_of_worker_harness_threads, else one a vCPU), less than its share of --max-requests "
            f"({share}): --number_of_worker_harness_threads {share} would keep {share} requests in flight each."
        )
    ceiling = max(s.max_requests, EE_CONCURRENT_REQUESTS)
    if per_worker * processes > ceiling:
        notes.append(
            f"{processes:,} worker processes send at least one request each, more than the "
            f"{ceiling} in flight the project answers at once: the plan counts {ceiling} (the rest wait on "
            "429 answers); fewer --max_num_workers would cost less."
        )
    return Requests(by_kind, per_worker, ceiling, s.requests_per_minute, s.request_seconds), processes


def _fetch_kinds(fetch: str, reads: int) -> dict[str, int]:
    """Requests of `reads` pixel reads: computePixels is one request a read; getDownloadURL two (the URL,
    then the download)."""
    if fetch == "getDownloadURL":
        return {"getDownloadURL": reads, "download": reads}
    return {"computePixels": reads}


def element_bytes(element: Any) -> int:
    """Bytes of one element as it crosses a shuffle (pickled, as Beam codes Python objects)."""
    return len(pickle.dumps(element, protocol=pickle.HIGHEST_PROTOCOL))


# --- extraction ----------------------------------------------------------------------------------


def sampled_points(job: ExtractJob) -> list:
    """The points the job samples from local rasters: the same function and arguments as its first step
    (pipelines.extract._sample_step), so the same seed gives the same points."""
    from transforms.extract import sample_points

    points = []
    for region in job.regions:
        points += sample_points(
            region,
            job.labels.paths[0],
            job.points_per_class,
            job.seed,
            job.classes,
            job.strata_band,
            job.strata_edges,
            job.label_config.scheme,
            job.labels.band_refs[job.label_band].index,
        )
    return points


def split_counts(job: ExtractJob, points: Sequence) -> Counter:
    """Points per side of the job's split (train, validation, guard), as the job splits them."""
    from transforms.extract import _reproject_point

    counts: Counter = Counter()
    for p in points:
        x, y = (p.x, p.y) if p.crs == job.grid.crs else _reproject_point(p, job.grid.crs)
        counts[job.split.split_of(p, x, y)] += 1
    return counts


def extraction_plan(job: ExtractJob, opts: Any, command: CommandLine) -> Plan:
    """The plan of a resolved extraction."""
    from pipelines.extract import MIN_POINTS_PER_WORKER, RUN_POINTS, WORKER_BYTES, planned_points
    from pipelines.options import available_cpus, available_memory_bytes, plan_local_workers
    from transforms.geometry.sampling import Point
    from transforms.geometry.split import GUARD
    from transforms.io.earthengine.client import MAX_POINTS_PER_REQUEST
    from transforms.planning import extraction_work, machine, make_plan
    from transforms.planning.measured import EXTRACT_UTILIZATION

    s = settings(opts, command.options)
    notes: list[str] = []
    earthengine = job.source.get("kind") == "earthengine"
    classes = len(job.classes) if job.classes else job.label_config.scheme.num_classes
    if earthengine:
        points = planned_points(job)
        patches, guard = points, None
        how = (
            f"{job.points_per_class:,} per class × {classes} classes × {len(job.regions)} region{'s' if len(job.regions) != 1 else ''}; a class "
            "absent from a region gives fewer, and the split's guard band leaves some unfetched"
        )
        sample = Point("region/123456/123456", "region", 0.0, 0.0, job.grid.crs, 0.0, 0.0, 0, 0)
    else:
        sampled = sampled_points(job)
        counts = split_counts(job, sampled)
        points, guard = len(sampled), counts[GUARD]
        patches = points - guard
        how = f"from the label raster, seed {job.seed}"
        sample = sampled[0] if sampled else None
    work = extraction_work(
        points=points,
        patches=patches,
        patch_size=job.schema.patch_size,
        bands=len(job.schema.bands),
        compression=job.compression,
        run_points=RUN_POINTS,
        point_bytes=element_bytes(sample) if sample is not None else 0,
        details={
            "points_exact": not earthengine,
            "points_how": how,
            "guard": guard,
            "regions": len(job.regions),
            "classes": classes,
            "patch_size": job.schema.patch_size,
            "source": job.source.get("kind"),
        },
    )
    requests, ee_workers = None, None
    if earthengine:
        per_region = math.ceil(job.points_per_class * classes / MAX_POINTS_PER_REQUEST)
        by_kind = _fetch_kinds(job.source.get("fetch", "computePixels"), 2 * patches)
        by_kind["stratifiedSample"] = per_region * len(job.regions)
        by_kind["label histogram"] = len(job.regions)
        requests, ee_workers = earthengine_requests(by_kind, s, _machine(s, machine).vcpus, notes)
        work = dataclasses.replace(
            work,
            details={**work.details, "requests_how": "two reads a patch: its bands and its labels"},
        )
    local = None
    if s.local:
        cpus = available_cpus()
        processes = _local_processes(
            command,
            lambda: (
                plan_local_workers(
                    cpus,
                    WORKER_BYTES,
                    opts.max_memory,
                    available_memory_bytes(),
                    planned_points(job),
                    MIN_POINTS_PER_WORKER,
                ).workers
            ),
        )
        local = _local_estimate(
            work, requests, processes, min(processes, cpus), cpus, EXTRACT_UTILIZATION, s.max_requests
        )
    return make_plan(
        work,
        requests,
        _machine(s, machine),
        runner=s.runner,
        max_workers=s.max_workers or ee_workers,
        disk_gb=s.disk_gb,
        ssd=s.ssd,
        utilization=EXTRACT_UTILIZATION,
        assumptions=[*notes, *extraction_assumptions(job, earthengine, s)],
        local=local,
    )


def extraction_assumptions(job: ExtractJob, earthengine: bool, s: Settings) -> list[str]:
    from transforms.planning.measured import (
        EXTRACT_MEASURED,
        EXTRACT_SOURCE,
        EXTRACT_UTILIZATION,
        LOCAL_CORES_MEASURED,
        LOCAL_CORES_SOURCE,
    )

    lines = [
        "A patch's CPU time scales with its pixels × bands from the measured 128×128×14 float32 patch "
        f"(local GeoTIFF reads, {EXTRACT_SOURCE}, {EXTRACT_MEASURED}); workers' cores are "
        f"{EXTRACT_UTILIZATION:.0%} busy ({LOCAL_CORES_SOURCE}, {LOCAL_CORES_MEASURED}).",
    ]
    if job.compression == "gzip":
        lines.append(
            "Records compress as the demo scene's did (generated imagery); real imagery may compress less."
        )
        if job.compression_level > 3:
            lines.append(
                f"--compression-level {job.compression_level} uses zlib, much slower than the measured level 1 "
                "(docs/performance.md): the CPU time is a lower bound."
            )
    if earthengine:
        lines.append(
            f"Earth Engine requests take {s.request_seconds:g} s each (--ee-request-seconds; not measured "
            "here); retries are not counted; Earth Engine's own charges (EECU-hours of commercial projects) "
            "are not included."
        )
    return lines + _dataflow_assumptions()


def _dataflow_assumptions() -> list[str]:
    from transforms.planning.prices import WORKER_STARTUP_S

    return [
        "Dataflow runs the plan's workers for the whole job, each with "
        f"{WORKER_STARTUP_S / 60:g} minutes of start-up (an assumption) billed like the rest.",
    ]


# --- prediction ----------------------------------------------------------------------------------


def tiles_touching(plan: TilePlan, region: RegionMask | None) -> int:
    """Tiles the job predicts: all of the plan's, or with a region those whose core it touches (counted
    on a grid of tile cores, so a tile the region only grazes counts: an upper bound)."""
    if region is None:
        return len(plan)
    from rasterio.features import rasterize
    from rasterio.transform import Affine

    step = plan.spec.step * plan.lattice.scale
    _, _, left, _, _, top = plan.output.transform
    cells = rasterize(
        [region.geometry],
        out_shape=(plan.rows, plan.cols),
        transform=Affine(step, 0.0, left, 0.0, -step, top),
        all_touched=True,
        fill=0,
        default_value=1,
        dtype="uint8",
    )
    return int(cells.sum())


def prediction_plan(job: PredictJob, opts: Any, command: CommandLine) -> Plan:
    """The plan of a resolved prediction."""
    from pipelines.options import available_cpus, available_memory_bytes, plan_local_workers
    from pipelines.predict import CPUS_PER_PREDICTION_WORKER, MIN_TILES_PER_WORKER, worker_bytes
    from transforms.planning import machine, make_plan, prediction_work
    from transforms.planning.measured import PREDICT_UTILIZATION, class_map_bytes_per_pixel

    s = settings(opts, command.options)
    notes: list[str] = []
    plan = job.plan
    tiles = tiles_touching(plan, job.region)
    area = plan.width * plan.height
    output_pixels = area if job.region is None else min(area, tiles * plan.spec.step**2)
    per_tile_files = not job.mosaic
    bytes_per_pixel, size_how = class_map_bytes_per_pixel(per_tile_files)
    if job.output.probabilities != "none":
        size_how += "; probabilities uncompressed"
    work = prediction_work(
        tiles=tiles,
        tile_size=plan.spec.tile_size,
        bands=len(job.bands),
        output_pixels=output_pixels,
        classes=len(job.output.classes),
        probabilities=job.output.probabilities,
        per_tile_files=per_tile_files,
        tta=job.tta,
        tile_bytes=element_bytes(plan.tile(0, 0)),
        class_map_bytes_per_pixel=bytes_per_pixel,
        details={
            "size_how": size_how,
            "tile_size": plan.spec.tile_size,
            "overlap": plan.spec.overlap,
            "grid": {
                "crs": plan.lattice.crs,
                "scale": plan.lattice.scale,
                "width": plan.width,
                "height": plan.height,
            },
            "source": job.source_info.get("kind"),
            "model": job.model_dir,
        },
    )
    requests, ee_workers = None, None
    if job.source_info.get("kind") == "earthengine":
        by_kind = _fetch_kinds(job.source_info.get("fetch", "computePixels"), tiles)
        requests, ee_workers = earthengine_requests(by_kind, s, _machine(s, machine).vcpus, notes)
        work = dataclasses.replace(work, details={**work.details, "requests_how": "one read a tile"})
    local = None
    if s.local:
        cpus = available_cpus()
        processes = _local_processes(
            command,
            lambda: (
                plan_local_workers(
                    cpus,
                    worker_bytes(job),
                    opts.max_memory,
                    available_memory_bytes(),
                    len(plan),
                    MIN_TILES_PER_WORKER,
                    CPUS_PER_PREDICTION_WORKER,
                ).workers
            ),
        )
        cores = min(cpus, processes * CPUS_PER_PREDICTION_WORKER)
        local = _local_estimate(work, requests, processes, cores, cpus, PREDICT_UTILIZATION, s.max_requests)
    return make_plan(
        work,
        requests,
        _machine(s, machine),
        runner=s.runner,
        max_workers=s.max_workers or ee_workers,
        disk_gb=s.disk_gb,
        ssd=s.ssd,
        utilization=PREDICT_UTILIZATION,
        assumptions=[*notes, *prediction_assumptions(job, s)],
        local=local,
    )


def prediction_assumptions(job: PredictJob, s: Settings) -> list[str]:
    from transforms.planning.measured import (
        LOCAL_CORES_MEASURED,
        LOCAL_CORES_SOURCE,
        PREDICT_MEASURED,
        PREDICT_SOURCE,
        PREDICT_UTILIZATION,
    )

    architecture = job.model.get("architecture", "unknown")
    lines = [
        "The model's CPU time per input pixel is the default U-Net's (unet_d2_f32, 14 bands, 9 classes: "
        f"{PREDICT_SOURCE}, {PREDICT_MEASURED})"
        + ("" if architecture == "unet_d2_f32" else f"; this model is {architecture!r} and costs otherwise")
        + f"; workers' cores are {PREDICT_UTILIZATION:.0%} busy ({LOCAL_CORES_SOURCE}, {LOCAL_CORES_MEASURED}). "
        "A model's speed depends much on the CPU: benchmarks/predict_throughput.py measures it on yours.",
    ]
    if job.source_info.get("kind") == "earthengine":
        lines.append(
            f"Earth Engine requests take {s.request_seconds:g} s each (--ee-request-seconds; not measured "
            "here); retries are not counted; Earth Engine's own charges (EECU-hours of commercial projects) "
            "are not included."
        )
    return lines + _dataflow_assumptions()


# --- shared helpers --------------------------------------------------------------------------------


def _machine(s: Settings, machine: Callable):
    from transforms.planning import PlanError

    try:
        return machine(s.machine_type)
    except PlanError as e:
        raise UsageError(str(e)) from None


def _local_processes(command: CommandLine, default: Callable[[], int]) -> int:
    """Worker processes of a local run: as the command line chose them, else as the job would."""
    from apache_beam.options.pipeline_options import DirectOptions

    from pipelines.options import available_cpus, chose_direct_options

    if not chose_direct_options(command.args):
        return default()
    direct = command.options.view_as(DirectOptions)
    if direct.direct_running_mode != "multi_processing":
        return 1
    return direct.direct_num_workers or available_cpus()


def _local_estimate(
    work, requests, processes: int, cores: int, cpus: int, utilization: float, max_requests: int
) -> dict:
    """A run on this machine: its CPU time on the cores it uses, or the quota's time if longer (its
    processes share --max-requests). One process keeps its core busy; a pool is as busy as measured."""
    from transforms.planning import local_seconds, share_of

    cpu_s = work.throughput.cpu_s(work.cpu_units)
    seconds = local_seconds(cpu_s, cores, utilization if processes > 1 else 1.0)
    if requests is not None:
        here = dataclasses.replace(requests, per_worker=share_of(max_requests, processes), workers=processes)
        seconds = max(seconds, here.seconds)
    return {"processes": processes, "cpus": cpus, "cores": cores, "cpu_s": cpu_s, "seconds": seconds}


def plan_text(plan: Plan, title: str) -> str:
    from transforms.planning import plan_lines

    return "\n".join(plan_lines(plan, title))


def plan_json(plan: Plan, job: str, argv: Sequence[str]) -> bytes:
    """plan.json: the plan, with the job and the command line it was made for."""
    doc = {"job": job, "argv": list(argv), **plan.to_json()}
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")


def write_plan(folder: str, plan: Plan, job: str, argv: Sequence[str]) -> str:
    """Write plan.json into the job's output `folder` (local or gs://); returns its path."""
    from apache_beam.io.filesystems import FileSystems

    path = f"{folder.rstrip('/')}/{PLAN_JSON}"
    with FileSystems.create(path) as f:
        f.write(plan_json(plan, job, argv))
    return path


# --- before a distributed job starts ---------------------------------------------------------------


def terminal_prompt() -> Callable[[str], str] | None:
    """`input` when a person can answer (stdin and stdout are terminals), else None."""
    if sys.stdin is not None and sys.stdin.isatty() and sys.stdout.isatty():
        return input
    return None


def check_budget(plan: Plan, budget: float, yes: bool, ask: Callable[[str], str] | None) -> None:
    """Go on when the plan's cost is within `budget`, or with `yes`, or when `ask` gets a yes; else
    UsageError (exit status 2) saying how to go on."""
    from transforms.planning.report import usd

    cost = plan.cost.job
    if yes or cost <= budget:
        return
    above = f"The plan's cost, {usd(cost)}, is above --budget {usd(budget)}"
    if ask is None:
        raise UsageError(
            f"{above}: pass --yes to start the job anyway, or raise --budget. Nothing was started."
        )
    try:
        answer = ask(f"{above}. Start the job? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError(f"{above}, and the job was not confirmed: nothing was started.")


def submission_plan(command: CommandLine, make: Callable[[], Plan], what: str) -> Plan | None:
    """Before a job on a distributed runner starts: print its plan, hold it to --budget (asking on a
    terminal). Returns the plan to write beside the outputs; None, doing nothing, for a local runner."""
    from apache_beam.options.pipeline_options import StandardOptions

    from transforms.runtime.outcome import is_local_runner

    if is_local_runner(command.options.view_as(StandardOptions).runner):
        return None
    plan = make()
    print(plan_text(plan, f"Plan of this {what} (written to {PLAN_JSON} beside its outputs):"), flush=True)
    check_budget(plan, command.job.budget, command.job.yes, terminal_prompt())
    return plan


# --- the command ---------------------------------------------------------------------------------


def run(job: str, argv: Sequence[str]) -> Plan:
    """Parse the job's options as the job does, resolve its inputs without contacting Earth Engine, and
    return its plan (printed by `main`)."""
    module_name, alias = JOBS[job]
    module = importlib.import_module(module_name)
    command = shell(job).parse(argv, aliases=getattr(module, alias))  # --help ends here
    opts = command.job
    resolved = module.resolve(opts, offline=True)
    make = extraction_plan if job == "extract" else prediction_plan
    return make(resolved, opts, command)


def input_errors(job: str) -> tuple[type[Exception], ...]:
    from transforms.planning import PlanError

    module = importlib.import_module(JOBS[job][0])
    return (*module.input_errors(), PlanError)


def main(argv: Sequence[str] | None = None) -> int:
    """`terrabeam plan JOB [options]`: 0 planned, 2 bad input."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = quiet_start(args)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        if not args:
            print(f"\nerror: name the job to plan ({', '.join(JOBS)}).", file=sys.stderr)
        return 0 if args else 2
    job, rest = args[0], args[1:]
    if job not in JOBS:
        close = difflib.get_close_matches(job, list(JOBS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"error: no plan for {job!r}{hint}; plan one of: {', '.join(JOBS)}.", file=sys.stderr)
        return 2
    title = f"Plan of this {'extraction' if job == 'extract' else 'prediction'} (nothing started, no pixel fetched):"
    return shell(job).exit_status(
        lambda a: run(job, a),
        rest,
        verbose,
        lambda: input_errors(job),
        report=lambda plan: print(plan_text(plan, title)),
    )


if __name__ == "__main__":
    sys.exit(main())
