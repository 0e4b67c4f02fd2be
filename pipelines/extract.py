"""Extract training data: stratified points -> patches -> TFRecord shards + manifest.json.

    python -m pipelines.extract                       # the generated demo scene, DirectRunner
    python -m pipelines.extract --inputs a.tif b.tif --labels worldcover.tif --regions regions.geojson \\
        --bands B2,B3,B4,B8,elevation --patch-size 128 --points-per-class 100 --output gs://bucket/data \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp --setup_file ./setup.py

Every Beam pipeline option passes through. Inputs are validated before the pipeline starts, so bad input
stops with a clear message and writes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipelines.checks.labels import add_label_options, class_subset
from pipelines.options import (
    JobOptionGroup,
    add_earthengine_options,
    add_local_runner_options,
    add_plan_options,
    use_local_cores,
)
from pipelines.shell import JobShell, UsageError, check_shared_options
from transforms.contracts.label_scheme import LabelSchemeError
from transforms.contracts.schema import COMPRESSIONS, PatchSchema
from transforms.geometry.grid import GridSpec
from transforms.runtime.command import quiet_start
from transforms.runtime.outcome import DEFAULT_MAX_ERROR_FRACTION, Outcome, warning_lines

# Beam, rasterio and the Beam steps load when the job runs, not for --help (see pipelines.shell).
if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.extract import LabelConfig, SplitConfig
    from transforms.geometry.sampling import Point, Region
    from transforms.io.rasters import PixelSource
    from transforms.io.retry import RetryConfig

DEFAULT_OUTPUT = "out/demo/data"
# --split-block-size auto: blocks of BLOCKS_PER_PATCH_EXTENT patch extents (transforms/geometry/split.py).
AUTO = "auto"


def block_size(value: str) -> str | float:
    """--split-block-size: `auto` or a size >= 0 in CRS units."""
    if value.strip().lower() == AUTO:
        return AUTO
    try:
        size = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a size in CRS units, got {value!r}") from None
    if size < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 (0: a per-point split), got {value!r}")
    return size


# Points are fetched in spatial groups of this many pixels square, sorted in raster order, so tiles
# decoded for one patch serve the next ones too (see benchmarks: cache-starved reads).
READ_CHUNK_PIXELS = 512
# Points per work item: the points of a chunk are split into runs of about this many (in raster order)
# and the runs spread over the workers, so a pool of workers shares the work evenly whatever the
# classes' layout, while consecutive reads still share decoded tiles.
RUN_POINTS = 64
# Memory of one local worker process (Beam, rasterio/GDAL with its block cache, a patch in flight), for
# the --max-memory guard: about 390 MB measured on the demo scene, with a margin (docs/local-cores.md).
WORKER_BYTES = 512 << 20
# A worker process takes seconds to start: with fewer points than this per worker, fewer workers finish
# sooner (benchmarks/local_cores.py).
MIN_POINTS_PER_WORKER = 1000
DESCRIPTION = """\
Extract training data: stratified points inside labelled regions, a multi-band patch and its label patch
under each point, TFRecord shards (Earth Engine's patch layout) split into train/validation, and
manifest.json. With no options it extracts from the generated demo scene into out/demo/data.
Examples: docs/extraction.md."""


def add_options(parser) -> None:
    """The extraction's options, grouped (ExtractOptions and --help are made of them)."""
    group = JobOptionGroup(parser, "inputs (default: the generated demo scene)")
    group.add_imagery()
    add_label_options(group)
    group.add_argument(
        "--regions",
        default=None,
        help="GeoJSON of (multi)polygons in lon/lat to sample inside (default: the demo scene's; for "
        "your own label raster, its whole extent).",
    )
    group.add_argument("--bands", default=None, help="Comma-separated input bands to export (default: all).")
    group.add_demo_cache()
    group = JobOptionGroup(parser, "sampling")
    group.add_argument(
        "--patch-size", dest="patch_size", type=int, default=128, help="Patch width/height in pixels."
    )
    group.add_argument(
        "--points-per-class",
        dest="points_per_class",
        type=int,
        default=100,
        help="Points per stratum and region.",
    )
    group.add_argument(
        "--classes",
        default=None,
        help="Comma-separated class names of the label scheme to sample (default: every class).",
    )
    group.add_argument(
        "--strata-band",
        dest="strata_band",
        default=None,
        help="Input band whose bins split each class into strata (e.g. elevation).",
    )
    group.add_argument(
        "--strata-edges",
        dest="strata_edges",
        default=None,
        help="Comma-separated bin edges for --strata-band, e.g. 500,1000,2000.",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="Sampling seed: the same seed gives the same points."
    )
    group = JobOptionGroup(parser, "patches")
    group.add_grid("patch grid", "the label raster's", "the label raster's")
    group.add_argument(
        "--pad-edges",
        dest="pad_edges",
        action="store_true",
        help="Keep points whose patch runs off the raster, padded with 0 (inputs) and 255 (label), flagged padded=1. Default: dead-letter them.",
    )
    group.add_max_attempts("patch read")
    group = JobOptionGroup(parser, "train/validation split")
    group.add_argument(
        "--validation-fraction",
        dest="validation_fraction",
        type=float,
        default=0.1,
        help="Fraction of points in the validation split.",
    )
    group.add_argument(
        "--split-block-size",
        dest="split_block_size",
        type=block_size,
        default=AUTO,
        help="Side of the split's spatial blocks (CRS units of the patch grid). auto: 4 patch extents, down to 2 where the regions would hold fewer than 64 blocks. Points whose patch would reach a block of the other side are left out (a guard band), so no validation pixel lies in a training patch. 0: a per-point split, whose validation patches overlap training patches (the score leaks).",
    )
    group.add_argument(
        "--split-fold",
        dest="split_fold",
        type=int,
        default=0,
        metavar="K",
        help="Which share of the blocks (or points) is held out: folds 0 to 1/fraction - 1 hold out disjoint shares that together cover the regions (at 0.1: ten folds), for a cross-validation by place with one extraction per fold.",
    )
    group = JobOptionGroup(parser, "output")
    group.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default="gzip",
        help="TFRecord compression (gzip is read by TensorFlow with compression_type='GZIP').",
    )
    group.add_argument(
        "--compression-level",
        dest="compression_level",
        type=int,
        default=1,
        help="gzip level 0-9; 0-3 use the fast ISA-L deflate (docs/performance.md: ratio vs. speed).",
    )
    group.add_output(DEFAULT_OUTPUT, "points", "extraction")
    add_earthengine_options(parser, with_labels=True)
    add_plan_options(parser)
    add_local_runner_options(parser)


@dataclasses.dataclass(frozen=True)
class ExtractJob:
    """Validated extraction settings: everything the pipeline needs, checked before it starts."""

    inputs: PixelSource
    labels: PixelSource
    label_band: str
    label_config: LabelConfig
    regions: tuple[Region, ...]
    schema: PatchSchema
    grid: GridSpec
    split: SplitConfig
    points_per_class: int
    seed: int
    classes: tuple[int, ...] | None
    strata_band: tuple[str, int] | None
    strata_edges: tuple[float, ...]
    pad_edges: bool
    compression: str
    compression_level: int
    retry: RetryConfig
    output: str
    source: dict[str, Any]
    options: dict[str, Any]


def validate(opts: PipelineOptions) -> ExtractJob:
    """Check every input and the output folder, and return the job, or raise
    UsageError/SourceError/RegionsError."""
    job = resolve(opts)
    claim_output(job, opts)
    return job


def claim_output(job: ExtractJob, opts: PipelineOptions) -> None:
    """Stop unless the output folder is writable and free (or --overwrite: then clear it)."""
    from pipelines.checks.output import extraction_output

    extraction_output(opts.output, opts.overwrite)


def resolve(opts: PipelineOptions, offline: bool = False) -> ExtractJob:
    """Check every input (not the output folder) and return the job. `offline` (for a plan): Earth
    Engine is not contacted (pipelines.checks.sources)."""
    from pipelines.checks.sources import extraction_sources
    from transforms.extract import RetryConfig, SplitConfig
    from transforms.geometry.sampling import regions_area

    _check_numbers(opts)
    sources = extraction_sources(opts, offline)
    scheme = sources.label_config.scheme
    classes = class_subset(opts.classes, scheme)
    try:
        block = None if opts.split_block_size == AUTO else float(opts.split_block_size)
        area = regions_area(sources.regions, sources.grid.crs) if block is None else None
        split = SplitConfig.for_patches(
            opts.validation_fraction, block, opts.patch_size, sources.grid.scale, area, opts.split_fold
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    return ExtractJob(
        inputs=sources.inputs,
        labels=sources.labels,
        label_band=sources.label_band,
        label_config=sources.label_config,
        regions=sources.regions,
        schema=PatchSchema(tuple(sources.bands), opts.patch_size),
        grid=sources.grid,
        split=split,
        points_per_class=opts.points_per_class,
        seed=opts.seed,
        classes=classes,
        strata_band=sources.strata_band,
        strata_edges=sources.strata_edges,
        pad_edges=opts.pad_edges,
        compression=opts.compression,
        compression_level=opts.compression_level,
        retry=RetryConfig(attempts=opts.max_attempts),
        output=opts.output.rstrip("/"),
        source=sources.source,
        options={
            "points_per_class": opts.points_per_class,
            "seed": opts.seed,
            "validation_fraction": opts.validation_fraction,
            "split_block_size": opts.split_block_size,
            "split_fold": opts.split_fold,
            "pad_edges": opts.pad_edges,
            "classes": [scheme.names[c] for c in classes] if classes else None,
            "unknown_labels": sources.label_config.unknown,
            "strata_band": opts.strata_band,
            "strata_edges": list(sources.strata_edges),
            "compression": opts.compression,
            "compression_level": opts.compression_level,
            "max_error_fraction": opts.max_error_fraction,
        },
    )


def _check_numbers(opts: PipelineOptions) -> None:
    if opts.patch_size <= 0:
        raise UsageError(f"--patch-size must be a positive number of pixels, got {opts.patch_size}.")
    if opts.points_per_class <= 0:
        raise UsageError(f"--points-per-class must be at least 1, got {opts.points_per_class}.")
    if opts.compression == "gzip" and not 0 <= opts.compression_level <= 9:
        raise UsageError(f"--compression-level must be 0-9, got {opts.compression_level}.")
    check_shared_options(opts)


def build_pipeline(pipeline: beam.Pipeline, job: ExtractJob, fail_in_pipeline: bool = False) -> None:
    """Sample -> group points spatially -> fetch+encode+split+write shards; dead letters; manifest.

    The last step checks the outcome; with `fail_in_pipeline` (a runner that does not run in this
    process, e.g. Dataflow) a failed extraction fails the job itself, after the manifest is written.
    """
    import apache_beam as beam
    from apache_beam.pvalue import AsDict, AsList, AsSingleton

    from pipelines.tail import DeadLetters, Finish
    from transforms.extract import CENTRES, ERRORS, SPLITS, STATS, FetchPatches, SumArrays
    from transforms.io.tfrecords import WriteRecords

    temp_dir = f"{job.output}/.temp-{uuid.uuid4().hex}"
    chunk = READ_CHUNK_PIXELS * job.grid.scale
    points = (
        pipeline
        | "Regions" >> beam.Create(job.regions)
        | "StratifiedSample" >> _sample_step(job)
        # Spread the points (not the patches) over workers, in spatial groups read in raster order:
        # chunks, split into runs of similar size so that every worker gets a similar share.
        | "GroupNearby" >> beam.GroupBy(lambda p: spatial_chunk(p, chunk))
        | "SplitIntoRuns" >> beam.FlatMapTuple(lambda _, group: runs_in_raster_order(group, RUN_POINTS))
        | "SpreadRuns" >> beam.Reshuffle()
        | "RasterOrder" >> beam.FlatMap(lambda run: run)
    )
    fetched = points | "FetchPatches" >> beam.ParDo(
        FetchPatches(
            job.inputs,
            job.labels,
            job.label_band,
            job.schema,
            job.grid,
            job.split,
            job.label_config,
            job.pad_edges,
            job.retry,
        )
    ).with_outputs(*SPLITS, ERRORS, STATS, CENTRES)
    shards = {
        split: fetched[split]
        | f"Write{split.title()}"
        >> beam.ParDo(WriteRecords(temp_dir, split, job.compression, job.compression_level))
        for split in SPLITS
    }
    letters = fetched[ERRORS] | "DeadLetters" >> DeadLetters(f"{job.output}/errors/errors")
    stats = fetched[STATS] | "SumStats" >> beam.CombinePerKey(SumArrays())
    # The patch centres are small (three numbers a patch): gathered once to measure the split's overlap.
    overlap = (
        fetched[CENTRES]
        | "GatherCentres" >> beam.combiners.ToList()
        | "MeasureOverlap" >> beam.Map(measured_overlap, job.schema.patch_size, job.grid.scale)
    )
    _ = pipeline | "FinalizeAndWriteManifest" >> Finish(
        "extraction",
        _finalize,
        letters,
        job,
        temp_dir,
        AsList(shards["train"]),
        AsList(shards["validation"]),
        stats=AsDict(stats),
        overlap=AsSingleton(overlap),
        fail_in_pipeline=fail_in_pipeline,
    )


def _sample_step(job: ExtractJob) -> beam.PTransform:
    """Region -> points: Earth Engine's stratifiedSample for --source earthengine, else the local sampler."""
    import apache_beam as beam

    from transforms.extract import sample_points

    if job.source.get("kind") == "earthengine":
        from transforms.io.earthengine.client import stratified_sample

        return beam.FlatMap(
            stratified_sample,
            job.labels,
            job.label_band,
            job.grid,
            job.points_per_class,
            job.seed,
            job.classes,
            job.retry,
        )
    return beam.FlatMap(
        sample_points,
        job.labels.paths[0],
        job.points_per_class,
        job.seed,
        job.classes,
        job.strata_band,
        job.strata_edges,
        job.label_config.scheme,
        job.labels.band_refs[job.label_band].index,
    )


def spatial_chunk(point: Point, chunk: float) -> tuple[int, int]:
    return (math.floor(point.x / chunk), math.floor(point.y / chunk))


def raster_order(point: Point) -> tuple[float, float]:
    return (-point.y, point.x)


def runs_in_raster_order(points: Sequence[Point], run_points: int) -> Iterator[list[Point]]:
    """The points in raster order, cut into consecutive runs of at most `run_points`, of even sizes."""
    ordered = sorted(points, key=raster_order)
    if not ordered:
        return
    runs = math.ceil(len(ordered) / run_points)
    size = math.ceil(len(ordered) / runs)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def measured_overlap(centres: Sequence[tuple[str, float, float]], patch_size: int, scale: float) -> float:
    """Share of validation patch pixels that some training patch covers (what the split leaked)."""
    from transforms.geometry.split import TRAIN, VALIDATION, overlap_fraction

    train = [(x, y) for split, x, y in centres if split == TRAIN]
    validation = [(x, y) for split, x, y in centres if split == VALIDATION]
    return overlap_fraction(train, validation, patch_size, scale)


def split_line(split: dict[str, Any]) -> str:
    """The split in one line: its rule, what the guard band left out, and the measured overlap."""
    from transforms.geometry.split import RULE_PER_POINT

    overlap = f"{100 * split['overlap']:.1f} % of validation pixels lie in training patches"
    if split["rule"] == RULE_PER_POINT:
        return (
            f"Split: per point; {overlap} (the validation score leaks; the default spatial blocks avoid it)."
        )
    guard = split.get("points_in_guard_band", 0)
    return (
        f"Split: spatial blocks of {split['block_size']:,.0f} CRS units with a guard band, {guard:,} points "
        f"left out in it; {overlap}."
    )


def _finalize(
    _,
    job: ExtractJob,
    temp_dir,
    train_temp,
    validation_temp,
    *,
    error_files,
    error_count,
    stats,
    reasons,
    overlap: float = 0.0,
) -> dict[str, Any]:
    """Move the shards into place, then write the manifest (last, so it marks a complete extraction)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.contracts.manifest import build_manifest, write_manifest
    from transforms.extract import SPLITS
    from transforms.geometry.split import GUARD
    from transforms.io.tfrecords import SUFFIX, finalize_shards

    suffix = SUFFIX[job.compression]
    train_files = finalize_shards(train_temp, f"{job.output}/train/data", suffix)
    validation_files = finalize_shards(validation_temp, f"{job.output}/validation/data", suffix)
    if FileSystems.exists(temp_dir):
        FileSystems.delete([temp_dir])
    scheme = job.label_config.scheme
    num_classes = scheme.num_classes
    split_stats = {
        split: {"patches_per_class": s[:num_classes].tolist(), "pixels_per_class": s[num_classes:].tolist()}
        for split, s in stats.items()
        if split in SPLITS
    }
    guarded = stats.get(GUARD)
    split = {
        **job.split.describe(),
        "points_in_guard_band": int(guarded[:num_classes].sum()) if guarded is not None else 0,
        "overlap": overlap,
        "overlap_measure": "share of validation patch pixels covered by at least one training patch",
    }
    manifest = build_manifest(
        schema=job.schema,
        scheme=scheme,
        crs=job.grid.crs,
        scale=job.grid.scale,
        compression="GZIP" if job.compression == "gzip" else "NONE",
        split_files={"train": train_files, "validation": validation_files},
        split_stats=split_stats,
        error_count=error_count,
        error_files=error_files if error_count else [],
        source=job.source,
        options=job.options,
    )
    produced = sum(manifest["splits"][s]["patches"] for s in SPLITS)
    outcome = Outcome.of(
        "points", produced, reasons, job.options.get("max_error_fraction", DEFAULT_MAX_ERROR_FRACTION)
    )
    manifest["outcome"] = outcome.to_json()
    manifest["split"] = split
    path = write_manifest(job.output, manifest)
    logging.info("Wrote %s: %s", path, {s: manifest["splits"][s]["patches"] for s in SPLITS})
    return manifest["outcome"]


def label_raster_alias(argv: Sequence[str]) -> list[str]:
    """Accept `--labels PATH` for the label raster.

    Beam's Google Cloud options already own `--labels` (Dataflow job labels, always `key=value`), so the
    typed option is `--label-raster`; a `--labels` value without "=" is taken as the label raster.
    """
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--labels" and i + 1 < len(args) and "=" not in args[i + 1]:
            args[i] = "--label-raster"
        elif arg.startswith("--labels=") and "=" not in arg[len("--labels=") :]:
            args[i] = "--label-raster=" + arg[len("--labels=") :]
    return args


def planned_points(job: ExtractJob) -> int:
    """The most points the job can sample (a class absent from a region gives fewer)."""
    classes = len(job.classes) if job.classes else job.label_config.scheme.num_classes
    strata = len(job.strata_edges) + 1 if job.strata_band else 1
    return job.points_per_class * classes * strata * len(job.regions)


def input_errors() -> tuple[type[Exception], ...]:
    """The errors besides UsageError that mean bad input (exit status 2)."""
    from transforms.geometry.sampling import RegionsError
    from transforms.io.rasters import SourceError
    from transforms.planning import PlanError

    return (SourceError, RegionsError, LabelSchemeError, PlanError)


SHELL = JobShell("pipelines.extract", "ExtractOptions", add_options, DESCRIPTION, "extraction")
# ExtractOptions, the options as Beam's PipelineOptions class, is made when first asked for.
__getattr__ = SHELL.module_attribute


def run(argv: Sequence[str] | None = None, save_main_session: bool = False) -> Outcome | None:
    """Parse flags, validate, run the pipeline to completion; JobFailed when the result is a failure."""
    command = SHELL.parse(argv, save_main_session, label_raster_alias)  # --help ends here
    from pipelines.plan import extraction_plan, submission_plan, write_plan
    from pipelines.progress import EXTRACTION
    from transforms.contracts.manifest import MANIFEST_NAME, read_manifest

    opts, options = command.job, command.options
    job = resolve(opts)
    # On a distributed runner: the plan first, held to --budget, before anything is written.
    plan = submission_plan(command, lambda: extraction_plan(job, opts, command), SHELL.job)
    claim_output(job, opts)
    if plan is not None:
        write_plan(job.output, plan, "extract", command.args)
    use_local_cores(
        options, command.args, WORKER_BYTES, opts.max_memory, planned_points(job), MIN_POINTS_PER_WORKER
    )
    manifest = f"{job.output}/{MANIFEST_NAME}"
    outcome = SHELL.run_pipeline(
        options,
        lambda pipeline, remote: build_pipeline(pipeline, job, remote),
        EXTRACTION,
        manifest,
        job.output,
    )
    print(f"Extraction written to {job.output} (manifest: {manifest})")
    written = read_manifest(job.output) if outcome else {}
    if written.get("split"):
        print(split_line(written["split"]))
        if job.split.validation_fraction and not written["splits"]["validation"]["patches"]:
            print(
                "warning: the split left no validation patch (too few blocks of the split over the "
                "regions): pass a smaller --split-block-size or a larger --validation-fraction.",
                file=sys.stderr,
            )
    for line in warning_lines(outcome) if outcome else []:
        print(line, file=sys.stderr)
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipelines.extract`: 0 written, 1 failed, 2 bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = quiet_start(argv)  # first: TensorFlow reads its log level once, when it loads
    return SHELL.exit_status(run, argv, verbose, input_errors)


if __name__ == "__main__":
    sys.exit(main())
