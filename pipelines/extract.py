"""Extract training data: stratified points -> patches -> TFRecord shards + manifest.json.

    python -m pipelines.extract                       # the generated demo scene, DirectRunner
    python -m pipelines.extract --inputs a.tif b.tif --labels worldcover.tif --regions regions.geojson \\
        --bands B2,B3,B4,B8,elevation --patch-size 128 --points-per-class 100 --output gs://bucket/data \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp --setup_file ./setup.py

Every Beam pipeline option passes through. Inputs are validated before the pipeline starts, so bad input
stops with a clear message and writes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pipelines.options import (
    SharedArgumentGroup,
    add_demo_cache_option,
    add_earthengine_options,
    add_grid_options,
    add_imagery_options,
    add_local_runner_options,
    add_max_attempts_option,
    add_output_options,
    local_runner,
    use_local_cores,
)
from pipelines.shell import JobShell, UsageError, comma_list, earthengine_sources, prepare_output
from transforms.contracts.label_scheme import (
    PRESETS,
    UNKNOWN_ERROR,
    UNKNOWN_POLICIES,
    LabelScheme,
    LabelSchemeError,
    describe_histogram,
    dynamic_world,
    example_classes_file,
    label_histogram,
    resolve_label_scheme,
    scheme_from_raster,
)
from transforms.contracts.schema import COMPRESSIONS, PatchSchema
from transforms.geometry.grid import GridSpec, grid_spec_of
from transforms.runtime.command import quiet_start
from transforms.runtime.outcome import (
    DEFAULT_MAX_ERROR_FRACTION,
    Outcome,
    check_max_error_fraction,
    warning_lines,
)

# Beam, rasterio and the Beam steps load when the job runs, not for --help (see pipelines.shell).
if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.extract import LabelConfig, SplitConfig
    from transforms.geometry.sampling import Point, Region
    from transforms.io.rasters import LocalRasterSource, PixelSource
    from transforms.io.retry import RetryConfig

DEFAULT_OUTPUT = "out/demo/data"
# Points are fetched in spatial groups of this many pixels square, sorted in raster order, so tiles
# decoded for one patch serve the next ones too (see benchmarks: cache-starved reads).
READ_CHUNK_PIXELS = 512
# Points per work item: the points of a chunk are split into runs of about this many (in raster order)
# and the runs spread over the workers, so a pool of workers shares the work evenly whatever the
# classes' layout, while consecutive reads still share decoded tiles.
RUN_POINTS = 64
# Memory of one local worker process (Beam, rasterio/GDAL with its block cache, a patch in flight), for
# the --max-memory guard: about 390 MB measured on the demo scene, with a margin (README, Every local core).
WORKER_BYTES = 512 << 20
# A worker process takes seconds to start: with fewer points than this per worker, fewer workers finish
# sooner (benchmarks/local_cores.py).
MIN_POINTS_PER_WORKER = 1000
DESCRIPTION = """\
Extract training data: stratified points inside labelled regions, a multi-band patch and its label patch
under each point, TFRecord shards (Earth Engine's patch layout) split into train/validation, and
manifest.json. With no options it extracts from the generated demo scene into out/demo/data.
Examples: README.md, "Extraction"."""


def add_options(parser) -> None:
    """The extraction's options, grouped (ExtractOptions and --help are made of them)."""
    group = SharedArgumentGroup(parser, "inputs (default: the generated demo scene)")
    add_imagery_options(group)
    group.add_argument(
        "--label-raster",
        dest="label_raster",
        default=None,
        help="Label raster (label values per pixel, turned into classes by --label-scheme; default: the "
        "demo scene's). `--labels PATH` is accepted too.",
    )
    group.add_argument(
        "--label-scheme",
        dest="label_scheme",
        default=None,
        help="Classes of the labels: a preset (" + ", ".join(PRESETS) + "), the binary shortcut "
        "binary:NAME=VALUE[,VALUE...][:ignore=VALUE,...], or a classes file (JSON, local or gs://). "
        "Default: dynamic-world for the demo scene and the WorldCover recipe, else the class names "
        "the label raster carries.",
    )
    group.add_argument(
        "--unknown-labels",
        dest="unknown_labels",
        choices=UNKNOWN_POLICIES,
        default=UNKNOWN_ERROR,
        help="Label values the scheme does not list: stop with an error (default) or treat them as no label.",
    )
    group.add_argument(
        "--label-band",
        dest="label_band",
        default=None,
        help="Name of the label band in --labels (default: its first band).",
    )
    group.add_argument(
        "--regions",
        default=None,
        help="GeoJSON of (multi)polygons in lon/lat to sample inside (default: the demo scene's; for "
        "your own label raster, its whole extent).",
    )
    group.add_argument("--bands", default=None, help="Comma-separated input bands to export (default: all).")
    add_demo_cache_option(group)
    group = SharedArgumentGroup(parser, "sampling")
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
    group = SharedArgumentGroup(parser, "patches")
    add_grid_options(group, "patch grid", "the label raster's", "the label raster's")
    group.add_argument(
        "--pad-edges",
        dest="pad_edges",
        action="store_true",
        help="Keep points whose patch runs off the raster, padded with 0 (inputs) and 255 (label), flagged padded=1. Default: dead-letter them.",
    )
    add_max_attempts_option(group, "patch read")
    group = SharedArgumentGroup(parser, "train/validation split")
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
        type=float,
        default=0.0,
        help="Split by spatial blocks of this size (CRS units) instead of per point; avoids leakage between overlapping patches.",
    )
    group = SharedArgumentGroup(parser, "output")
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
        help="gzip level 0-9; 0-3 use the fast ISA-L deflate (see README for ratio vs. speed).",
    )
    add_output_options(group, DEFAULT_OUTPUT, "points", "extraction")
    add_earthengine_options(parser, with_labels=True)
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


def _numbers(value: str | None, kind, flag: str) -> list:
    try:
        return [kind(v) for v in comma_list(value) or []]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, got {value!r}.") from None


def validate(opts: PipelineOptions) -> ExtractJob:
    """Check every input and return the job, or raise UsageError/SourceError/RegionsError."""
    if opts.source == "earthengine":
        return _earthengine_job(opts)
    from transforms.extract import LabelConfig, raw_label_reading
    from transforms.geometry.sampling import load_regions, region_windows, whole_raster_region
    from transforms.io.rasters import LocalRasterSource

    source = {"kind": "local"}
    inputs, labels_path, regions_path = opts.inputs, opts.label_raster, opts.regions
    if not (inputs and labels_path):
        if inputs or labels_path or regions_path:
            raise UsageError(
                "Give both --inputs and --labels (--label-raster), with --regions optional, or none of the "
                "three for the demo scene."
            )
        from pipelines.demo.scene import ensure_demo_scene

        scene = ensure_demo_scene(opts.demo_cache)
        inputs, labels_path, regions_path = [scene.image], scene.labels, scene.regions
        source["kind"] = "demo"
    _check_numbers(opts)

    input_source = LocalRasterSource(inputs, comma_list(opts.band_names))
    label_source = LocalRasterSource([labels_path])
    input_source.check_files()  # a broken or cut-short file stops the job here, not on the workers
    label_source.check_files()
    bands = comma_list(opts.bands) or list(input_source.bands)
    input_source.check_bands(bands)
    label_band = opts.label_band or label_source.bands[0]
    label_source.check_bands([label_band])

    crs, transform, width, height = label_source.native_grid()
    try:
        grid = grid_spec_of(crs, transform)
    except ValueError as e:
        if not (opts.crs and opts.scale):
            raise UsageError(f"Label raster {labels_path!r}: {e}") from None
        grid = None
    if opts.crs or opts.scale:
        grid = GridSpec(opts.crs or crs, opts.scale or grid.scale)
    if opts.patch_size > min(width, height) * abs(transform.a) / grid.scale:
        raise UsageError(
            f"--patch-size {opts.patch_size} is larger than the label raster ({width}x{height} pixels); "
            "use a smaller patch."
        )

    if regions_path:
        regions = tuple(load_regions(regions_path))
        _check_regions_inside(regions, input_source, label_source)
    else:
        regions = (whole_raster_region(labels_path),)
        notice(
            f"No --regions given: sampling the whole label raster {labels_path!r} (less its nodata) as one "
            f"region, {regions[0].name!r}."
        )
    band_index = label_source.band_refs[label_band].index
    margin = math.ceil(opts.patch_size * grid.scale / abs(transform.a) / 2)
    scheme = _local_scheme(opts, labels_path, band_index, source["kind"])
    histogram = label_histogram(labels_path, band_index, region_windows(labels_path, regions, margin))
    where = f"The label raster {labels_path!r}, where patches are read,"
    _check_unknown_values(scheme, histogram, opts.unknown_labels, where)
    dtype, nodata = label_source.band_type(label_band)
    label_config = LabelConfig(scheme, opts.unknown_labels, **raw_label_reading(dtype, nodata))

    strata_band = None
    strata_edges = tuple(_numbers(opts.strata_edges, float, "--strata-edges"))
    if opts.strata_band:
        input_source.check_bands([opts.strata_band])
        ref = input_source.band_refs[opts.strata_band]
        strata_band = (ref.path, ref.index)
        if not strata_edges:
            raise UsageError("--strata-band needs --strata-edges, e.g. --strata-edges 500,1000,2000.")
    source.update(inputs=list(inputs), labels=labels_path, regions=regions_path, label_band=label_band)
    return _job(
        opts,
        input_source,
        label_source,
        label_band,
        label_config,
        regions,
        bands,
        grid,
        source,
        strata_band,
        strata_edges,
    )


def notice(message: str) -> None:
    """A line for the user about a choice the job made for them."""
    print(f"note: {message}", file=sys.stderr)


def _local_scheme(opts: PipelineOptions, labels_path: str, band: int, kind: str) -> LabelScheme:
    """--label-scheme, else the demo's preset, else the classes the raster names; never a guess."""
    if opts.label_scheme:
        return _resolve(opts.label_scheme)
    if kind == "demo":
        return dynamic_world()
    carried = scheme_from_raster(labels_path, band)
    if carried is not None:
        notice(
            f"Label scheme from the label raster's own class names: "
            f"{', '.join(f'{v}={c.name}' for c in carried.classes for v in c.values)}."
        )
        return carried
    histogram = label_histogram(labels_path, band)
    raise UsageError(
        f"The label raster {labels_path!r} does not name its classes, and no --label-scheme was given: "
        f"terrabeam will not guess class names. Values found: {describe_histogram(histogram)}. Write a "
        f"classes file naming each value's class, e.g. {example_classes_file(histogram)}, and pass "
        f"--label-scheme classes.json; or use a preset ({', '.join(PRESETS)}) or binary:NAME=VALUE. "
        "See README, 'Your own labels'."
    )


def _resolve(spec: str) -> LabelScheme:
    try:
        return resolve_label_scheme(spec)
    except LabelSchemeError as e:
        raise UsageError(str(e)) from None


def _check_unknown_values(scheme: LabelScheme, histogram: dict, policy: str, where: str) -> None:
    unknown = scheme.unknown_values(histogram)
    if unknown and policy == UNKNOWN_ERROR:
        raise UsageError(
            f"{where} holds label values the label scheme {scheme.name!r} does not list: "
            f"{describe_histogram(unknown)}. Add them to a class (or to 'ignore') in the classes file, or "
            "pass --unknown-labels ignore to treat them as no label."
        )
    if unknown:
        notice(f"Treating label values {describe_histogram(unknown)} as no label (--unknown-labels ignore).")


def _check_numbers(opts: PipelineOptions) -> None:
    if opts.patch_size <= 0:
        raise UsageError(f"--patch-size must be a positive number of pixels, got {opts.patch_size}.")
    if opts.points_per_class <= 0:
        raise UsageError(f"--points-per-class must be at least 1, got {opts.points_per_class}.")
    if opts.compression == "gzip" and not 0 <= opts.compression_level <= 9:
        raise UsageError(f"--compression-level must be 0-9, got {opts.compression_level}.")
    if opts.max_attempts < 1:
        raise UsageError(f"--max-attempts must be at least 1, got {opts.max_attempts}.")
    try:
        check_max_error_fraction(opts.max_error_fraction)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _job(
    opts: PipelineOptions,
    inputs: PixelSource,
    labels: PixelSource,
    label_band: str,
    label_config: LabelConfig,
    regions: tuple[Region, ...],
    bands: Sequence[str],
    grid: GridSpec,
    source: dict[str, Any],
    strata_band: tuple[str, int] | None = None,
    strata_edges: tuple[float, ...] = (),
) -> ExtractJob:
    """The job from checked sources: checks the settings every source shares, the output last."""
    from transforms.extract import RetryConfig, SplitConfig

    classes = _class_subset(opts.classes, label_config.scheme)
    try:
        split = SplitConfig(opts.validation_fraction, opts.split_block_size)
    except ValueError as e:
        raise UsageError(str(e)) from None
    _prepare_output(opts.output, opts.overwrite)
    return ExtractJob(
        inputs=inputs,
        labels=labels,
        label_band=label_band,
        label_config=label_config,
        regions=regions,
        schema=PatchSchema(tuple(bands), opts.patch_size),
        grid=grid,
        split=split,
        points_per_class=opts.points_per_class,
        seed=opts.seed,
        classes=classes,
        strata_band=strata_band,
        strata_edges=strata_edges,
        pad_edges=opts.pad_edges,
        compression=opts.compression,
        compression_level=opts.compression_level,
        retry=RetryConfig(attempts=opts.max_attempts),
        output=opts.output.rstrip("/"),
        source=source,
        options={
            "points_per_class": opts.points_per_class,
            "seed": opts.seed,
            "validation_fraction": opts.validation_fraction,
            "split_block_size": opts.split_block_size,
            "pad_edges": opts.pad_edges,
            "classes": [label_config.scheme.names[c] for c in classes] if classes else None,
            "unknown_labels": label_config.unknown,
            "strata_band": opts.strata_band,
            "strata_edges": list(strata_edges),
            "compression": opts.compression,
            "compression_level": opts.compression_level,
            "max_error_fraction": opts.max_error_fraction,
        },
    )


def _class_subset(value: str | None, scheme: LabelScheme) -> tuple[int, ...] | None:
    """--classes as class indices: names of the scheme (a class index is accepted too)."""
    indices = []
    for item in comma_list(value) or []:
        if item in scheme.names:
            indices.append(scheme.names.index(item))
        elif item.isdigit() and int(item) < scheme.num_classes:
            indices.append(int(item))
        else:
            raise UsageError(
                f"--classes {item!r} is not a class of the label scheme {scheme.name!r}; its classes are "
                f"{', '.join(scheme.names)}."
            )
    return tuple(sorted(set(indices))) or None


def _earthengine_job(opts: PipelineOptions) -> ExtractJob:
    """The job for --source earthengine: images by recipe, points by Earth Engine's stratifiedSample.

    The session is started here, so a missing project, bad credentials or an unreachable endpoint stop
    the job before it starts.
    """
    from transforms.extract import LabelConfig
    from transforms.geometry.sampling import load_regions
    from transforms.io.earthengine import client as earthengine
    from transforms.io.earthengine.recipes import DEFAULT_INPUTS, DEFAULT_LABELS

    if opts.inputs or opts.label_raster or opts.band_names:
        raise UsageError(
            "--inputs, --labels and --band-names describe local rasters; with --source earthengine use "
            "--ee-image and --ee-labels."
        )
    if not opts.regions:
        raise UsageError("--source earthengine needs --regions, a GeoJSON of lon/lat polygons to sample in.")
    if opts.strata_band:
        raise UsageError(
            "--strata-band works with local rasters only; leave it out with --source earthengine."
        )
    _check_numbers(opts)
    config, (inputs, raw_labels) = earthengine_sources(
        opts, opts.ee_image or DEFAULT_INPUTS, opts.ee_labels or DEFAULT_LABELS
    )
    regions = tuple(load_regions(opts.regions))
    inputs.connect()
    raw_labels.connect()
    bands = comma_list(opts.bands) or list(inputs.bands)
    inputs.check_bands(bands)
    label_band = opts.label_band or raw_labels.bands[0]
    raw_labels.check_bands([label_band])
    inputs.check_request(opts.patch_size, opts.patch_size, len(bands), "float32")
    raw_labels.check_request(opts.patch_size, opts.patch_size, 1, "uint8")
    grid = GridSpec(opts.crs or earthengine.utm_crs_of(regions), opts.scale or earthengine.DEFAULT_SCALE)
    # The label values in the regions, counted by Earth Engine: unknown values stop the job here.
    histogram = earthengine.label_histogram(raw_labels, label_band, regions, grid)
    if opts.label_scheme:
        scheme = _resolve(opts.label_scheme)
    elif raw_labels.recipe.spec == DEFAULT_LABELS:
        scheme = dynamic_world()
    else:
        raise UsageError(
            f"--ee-labels {raw_labels.recipe.spec!r} needs --label-scheme: terrabeam will not guess class "
            f"names. Values found in the regions: {describe_histogram(histogram)}. Write a classes file, "
            f"e.g. {example_classes_file(histogram)}, or use a preset ({', '.join(PRESETS)}) or "
            "binary:NAME=VALUE. See README, 'Your own labels'."
        )
    where = f"--ee-labels {raw_labels.recipe.spec!r}, in the regions,"
    _check_unknown_values(scheme, histogram, opts.unknown_labels, where)
    # Earth Engine remaps the labels to class indices on the server (ee.Image.remap).
    labels = earthengine.EarthEngineSource(
        raw_labels.recipe,
        config,
        opts.ee_fetch,
        label_scheme=scheme,
        label_band=label_band,
        unknown_labels=opts.unknown_labels,
    )
    label_config = LabelConfig(scheme, opts.unknown_labels, remapped_by_source=True)
    source = {
        "kind": "earthengine",
        "project": config.project,
        "endpoint": config.endpoint,
        "image": inputs.recipe.spec,
        "labels": labels.recipe.spec,
        "label_band": label_band,
        "fetch": opts.ee_fetch,
        "regions": opts.regions,
        "max_requests": opts.max_requests,
    }
    return _job(opts, inputs, labels, label_band, label_config, regions, bands, grid, source)


def _check_regions_inside(regions: Sequence[Region], *sources: LocalRasterSource) -> None:
    from rasterio.warp import transform_bounds

    from transforms.geometry.sampling import RegionsError, features

    outside = []
    for region in regions:
        left, bottom, right, top = features.bounds(region.geometry)
        for src in sources:
            crs = src.native_grid()[0]
            fl, fb, fr, ft = src.footprint(crs)
            rl, rb, rr, rt = transform_bounds("EPSG:4326", crs, left, bottom, right, top)
            if rl >= fr or rr <= fl or rb >= ft or rt <= fb:
                outside.append(region.name)
                break
    if outside:
        raise RegionsError(
            f"Region(s) {', '.join(outside)} lie outside the raster footprint. Regions are lon/lat "
            "(EPSG:4326) polygons; check the coordinates or the rasters."
        )


def _prepare_output(output: str, overwrite: bool) -> None:
    """Fail early if the output is not writable or holds an earlier extraction (unless --overwrite)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.contracts.manifest import MANIFEST_NAME

    base = output.rstrip("/")
    existing = FileSystems.match([f"{base}/{MANIFEST_NAME}", f"{base}/train/*", f"{base}/validation/*"])
    found = [m.path for result in existing for m in result.metadata_list]
    prepare_output(output, found, overwrite, "an extraction", FileSystems.delete)


def build_pipeline(pipeline: beam.Pipeline, job: ExtractJob, fail_in_pipeline: bool = False) -> None:
    """Sample -> group points spatially -> fetch+encode+split+write shards; dead letters; manifest.

    The last step checks the outcome; with `fail_in_pipeline` (a runner that does not run in this
    process, e.g. Dataflow) a failed extraction fails the job itself, after the manifest is written.
    """
    import apache_beam as beam
    from apache_beam.pvalue import AsDict, AsList

    from pipelines.tail import DeadLetters, Finish
    from transforms.extract import ERRORS, SPLITS, STATS, FetchPatches, SumArrays
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
    ).with_outputs(*SPLITS, ERRORS, STATS)
    shards = {
        split: fetched[split]
        | f"Write{split.title()}"
        >> beam.ParDo(WriteRecords(temp_dir, split, job.compression, job.compression_level))
        for split in SPLITS
    }
    letters = fetched[ERRORS] | "DeadLetters" >> DeadLetters(f"{job.output}/errors/errors")
    stats = fetched[STATS] | "SumStats" >> beam.CombinePerKey(SumArrays())
    _ = pipeline | "FinalizeAndWriteManifest" >> Finish(
        "extraction",
        _finalize,
        letters,
        job,
        temp_dir,
        AsList(shards["train"]),
        AsList(shards["validation"]),
        stats=AsDict(stats),
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


def _finalize(
    _, job: ExtractJob, temp_dir, train_temp, validation_temp, *, error_files, error_count, stats, reasons
) -> dict[str, Any]:
    """Move the shards into place, then write the manifest (last, so it marks a complete extraction)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.contracts.manifest import build_manifest, write_manifest
    from transforms.extract import SPLITS
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

    return (SourceError, RegionsError, LabelSchemeError)


SHELL = JobShell(
    module="pipelines.extract",
    options_name="ExtractOptions",
    add_options=add_options,
    description=DESCRIPTION,
    job="extraction",
    aliases=label_raster_alias,
    input_errors=input_errors,
)


def __getattr__(name: str) -> type:
    """`ExtractOptions`: the options as Beam's PipelineOptions class, made when first asked for."""
    return SHELL.module_attribute(name)


def run(argv: Sequence[str] | None = None, save_main_session: bool = False) -> Outcome | None:
    """Parse flags, validate, run the pipeline to completion; JobFailed when the result is a failure."""
    command = SHELL.parse(argv, save_main_session)  # --help ends here, before the job's imports
    from pipelines.progress import EXTRACTION, run_job
    from transforms.contracts.manifest import MANIFEST_NAME

    opts, options = command.job, command.options
    job = validate(opts)
    use_local_cores(
        options, command.args, WORKER_BYTES, opts.max_memory, planned_points(job), MIN_POINTS_PER_WORKER
    )
    manifest = f"{job.output}/{MANIFEST_NAME}"
    outcome = run_job(
        options,
        lambda pipeline, remote: build_pipeline(pipeline, job, remote),
        EXTRACTION,
        outcome_path=manifest,
        job="extraction",
        where=job.output,
        runner=local_runner(options),
    )  # None where the runner returned before the job ended
    print(f"Extraction written to {job.output} (manifest: {manifest})")
    for line in warning_lines(outcome) if outcome else []:
        print(line, file=sys.stderr)
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipelines.extract`: 0 written, 1 failed, 2 bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = quiet_start(argv)  # first: TensorFlow reads its log level once, when it loads
    return SHELL.exit_status(run, argv, verbose)


if __name__ == "__main__":
    sys.exit(main())
