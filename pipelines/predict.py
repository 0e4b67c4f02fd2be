"""Batch prediction: a trained model + imagery -> land-cover Cloud-Optimized GeoTIFFs, at any size.

    python -m pipelines.predict                       # the demo scene with the demo model (out/demo/model)
    python -m pipelines.predict --model gs://bucket/model --inputs s2.tif dem.tif \\
        --aoi region.geojson --tile-size 256 --overlap 64 --probabilities uint8 --output gs://bucket/maps \\
        --runner DataflowRunner --project P --region us-central1 --temp_location gs://bucket/tmp \\
        --setup_file ./setup.py

The region is `--aoi` (a GeoJSON file of lon/lat polygons, or a lon/lat bounding box `W,S,E,N`); Beam's
Google Cloud options own `--region` (the Dataflow region), so `--region` is read as the area of interest
only when its value is a bounding box or a GeoJSON path. Without a region the whole imagery is predicted.

Steps: plan tiles on the model's pixel grid (CRS + scale from model.json, or --crs/--scale) -> fetch each
tile through the same source code as extraction (retries, dead letters) -> RunInference with the
SavedModel -> trim the overlap border -> one COG per tile -> VRT mosaic (and with --mosaic one COG) ->
quick-look PNG -> prediction.json. Inputs are validated before the pipeline starts, so bad input stops
with `error: <what to change>` (exit status 2) and writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from model.errors import ModelError
from pipelines.options import (
    SharedArgumentGroup,
    add_demo_cache_option,
    add_earthengine_options,
    add_grid_options,
    add_imagery_options,
    add_local_runner_options,
    add_max_attempts_option,
    add_output_options,
    available_cpus,
    local_runner,
    use_local_cores,
    worker_environment,
    worker_processes,
)
from pipelines.shell import JobShell, UsageError, comma_list, earthengine_sources, prepare_output
from transforms.contracts.label_scheme import LabelScheme, LabelSchemeError, scheme_from_metadata
from transforms.contracts.prediction import (
    CLASSES_NAME,
    POSITIVE_NAME,
    PROBABILITIES,
    PROBABILITIES_NAME,
    QUICKLOOK_NAME,
    TILES_DIR,
)
from transforms.geometry.grid import GridSpec, grid_spec_of
from transforms.runtime.command import quiet_start
from transforms.runtime.outcome import (
    DEFAULT_MAX_ERROR_FRACTION,
    Outcome,
    check_max_error_fraction,
    warning_lines,
)

# Beam, TensorFlow, rasterio and the Beam steps load when the job runs, not for --help (pipelines.shell).
if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.cog import OutputSpec
    from transforms.geometry.tiling import RegionMask, TilePlan, TilingSpec
    from transforms.io.earthengine.assets import AssetRequest
    from transforms.io.retry import RetryConfig

DEFAULT_MODEL = "out/demo/model"
# What marks a model folder (model.export.MODEL_JSON, which loads TensorFlow to be imported).
MODEL_JSON = "model.json"
DEFAULT_OUTPUT = "out/demo/predictions"
SUMMARY_NAME = "prediction.json"
# One worker writes the --mosaic COG; above this many pixels, per-tile COGs + VRT are the way (a
# 65,536² uint8 map is 4 GiB before compression, plus a third for overviews, on one worker's disk).
MAX_MOSAIC_PIXELS = 1 << 32
# Memory of one local worker process, for the --max-memory guard: TensorFlow, Beam and the loaded model
# (WORKER_BASE_BYTES), plus what a batch in flight needs per input pixel (the tiles, the model's
# activations, the probabilities): 1.45-1.51 GB measured with the default U-Net, 8 tiles of 256 px (README,
# Every local core).
WORKER_BASE_BYTES = 900 << 20
WORKER_BYTES_PER_BATCH_PIXEL = 1200
# A worker process takes seconds to start (TensorFlow, the model): with fewer tiles than this per
# worker, fewer workers finish sooner (benchmarks/local_cores.py).
MIN_TILES_PER_WORKER = 32
# TensorFlow runs one worker's model on several cores already (its intra-op threads), and the model is
# most of a prediction's time (benchmarks/predict_throughput.py: the job runs at 0.80x the model alone).
# On 2 CPUs one process beats a pool of two, 31.7 s against 35.3 s for the demo scene
# (benchmarks/local_cores.py), so a worker process gets this many CPUs.
CPUS_PER_PREDICTION_WORKER = 4
DESCRIPTION = """\
Batch prediction: a trained model and imagery -> a land-cover map as Cloud-Optimized GeoTIFFs (one per
tile and a VRT mosaic, or one COG with --mosaic), a quick-look PNG and prediction.json. With no options
it predicts the generated demo scene with the demo model (out/demo/model) into out/demo/predictions.
Examples: README.md, "Batch prediction"."""


def add_options(parser) -> None:
    """The prediction's options, grouped (PredictOptions and --help are made of them)."""
    group = SharedArgumentGroup(parser, "model and imagery (default: the demo model and scene)")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Model folder (local or gs://) written by `python -m model.train`.",
    )
    add_imagery_options(group)
    group.add_argument(
        "--aoi",
        default=None,
        help="Area to predict: a GeoJSON file of lon/lat (multi)polygons, or a lon/lat box W,S,E,N "
        "(default: the whole imagery). `--region <geojson or W,S,E,N>` is accepted too.",
    )
    add_demo_cache_option(group)
    group = SharedArgumentGroup(parser, "output grid and tiles")
    add_grid_options(group, "output grid", "the model's, from model.json", "the model's")
    group.add_argument(
        "--tile-size", dest="tile_size", type=int, default=256, help="Input tile side in pixels."
    )
    group.add_argument(
        "--overlap",
        type=int,
        default=64,
        help="Total overlap between neighbouring tiles in pixels (even; 2N trims an N-pixel border). "
        "At least the model's receptive field avoids seams.",
    )
    group = SharedArgumentGroup(parser, "reads and inference")
    group.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="Tiles per model call.")
    add_max_attempts_option(group, "tile read")
    group.add_argument(
        "--tta",
        action="store_true",
        help="Average each tile's prediction over its 8 flips/rotations (8x the model's cost).",
    )
    group = SharedArgumentGroup(parser, "output")
    group.add_argument(
        "--probabilities",
        choices=PROBABILITIES,
        default="none",
        help="Also write per-class probabilities: uint8 (p x 254, nodata 255) or float32 (nodata NaN).",
    )
    group.add_argument(
        "--mosaic",
        action="store_true",
        help="Write one COG for the whole region (classes.tif) instead of per-tile COGs + VRT.",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="Finish an earlier, stopped prediction in --output (same model and options): keep its "
        "complete tiles, predict the rest, rebuild the mosaic.",
    )
    add_output_options(group, DEFAULT_OUTPUT, "tiles", "prediction")
    group.add_argument(
        "--ee-asset",
        dest="ee_asset",
        default=None,
        help="Register the class map as this Earth Engine image asset (projects/P/assets/NAME), backed by "
        "the mosaic COG; needs a gs:// --output and implies --mosaic.",
    )
    add_earthengine_options(parser, with_labels=False)
    add_local_runner_options(parser)


@dataclasses.dataclass(frozen=True)
class PredictJob:
    """Validated prediction settings: everything the pipeline needs, checked before it starts."""

    model_dir: str
    model: dict[str, Any]  # model.json
    source: Any  # any object with read(grid, bands, *, fill, dtype, resampling)
    source_info: dict[str, Any]
    plan: TilePlan
    region: RegionMask | None
    output: OutputSpec
    mosaic: bool
    batch_size: int
    retry: RetryConfig
    max_error_fraction: float = DEFAULT_MAX_ERROR_FRACTION
    record: dict[str, Any] | None = None  # what identifies this prediction (written to PLAN_NAME)
    reuse: frozenset[str] = frozenset()  # --resume: ids of tiles with files from the earlier run
    ee_asset: AssetRequest | None = None  # register the mosaic as an Earth Engine asset
    tta: bool = False

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.model["bands"])


# --- validation -----------------------------------------------------------------------------------


def validate(opts: PipelineOptions) -> PredictJob:
    """Check every input and return the job, or raise UsageError (or a ValueError subclass)."""
    from transforms.cog import OutputSpec
    from transforms.geometry.tiling import TilingSpec, plan_for_bounds
    from transforms.io.earthengine.assets import asset_request
    from transforms.io.rasters import SourceError
    from transforms.io.retry import RetryConfig
    from transforms.resume import model_fingerprint, run_record

    if opts.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {opts.batch_size}.")
    if opts.max_attempts < 1:
        raise UsageError(f"--max-attempts must be at least 1, got {opts.max_attempts}.")
    try:
        check_max_error_fraction(opts.max_error_fraction)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if opts.resume and opts.overwrite:
        raise UsageError("--resume finishes the prediction in --output, --overwrite replaces it: pick one.")
    if opts.scale is not None and not opts.scale > 0:
        raise UsageError(f"--scale must be a positive pixel size, got {opts.scale}.")
    spec = TilingSpec(opts.tile_size, opts.overlap)  # TilingError is a ValueError with the message
    model_dir = opts.model.rstrip("/")
    info = _model_info(model_dir)
    _check_mode(info, spec)

    bands = list(info["bands"])
    source, source_info = _source(opts, spec, len(bands))
    if hasattr(source, "check_bands"):
        try:
            source.check_bands(bands)
        except SourceError as e:
            raise UsageError(
                f"The model at {model_dir!r} needs bands {bands}, but the imagery lacks some: {e} "
                "Pass imagery with these bands (--inputs, --band-names) or a model trained on the bands you have."
            ) from None

    lattice = _lattice(opts, info, source)
    aoi = opts.aoi
    bounds, region = _region(aoi, lattice.crs) if aoi else (None, None)
    footprint = source.footprint(lattice.crs) if hasattr(source, "footprint") else None
    if bounds is None:
        if footprint is None:
            raise UsageError("This source has no footprint to predict by default; pass --aoi.")
        bounds = footprint
    elif footprint is not None and not _intersects(bounds, footprint):
        raise UsageError(
            f"The region {aoi!r} lies outside the imagery: in {lattice.crs} the region spans "
            f"{_fmt(bounds)} and the imagery {_fmt(footprint)}. Check the region's coordinates (lon/lat) "
            "or the input rasters."
        )
    plan = plan_for_bounds(lattice, bounds, spec)
    ee_asset = asset_request(opts) if opts.ee_asset else None
    mosaic = opts.mosaic or ee_asset is not None  # Earth Engine registers one COG
    if mosaic and plan.width * plan.height > MAX_MOSAIC_PIXELS:
        raise UsageError(
            f"--mosaic writes one COG on one worker; the region is {plan.width}×{plan.height} pixels, more "
            f"than {MAX_MOSAIC_PIXELS:,}. Drop --mosaic to get one COG per tile and a VRT mosaic."
        )
    _check_signature(model_dir, info, spec)
    _warn_receptive_field(info, spec)
    output = OutputSpec(opts.output.rstrip("/"), _scheme(info, model_dir), opts.probabilities)
    record = run_record(
        model_dir=model_dir,
        model_fingerprint=model_fingerprint(model_dir),
        plan=plan,
        region=region,
        source=source_info,
        output=output,
        tta=opts.tta,
    )
    reuse: frozenset[str] = frozenset()
    if opts.resume:
        reuse = _prepare_resume(output, record)
    else:
        _prepare_output(output.output, opts.overwrite)
    return PredictJob(
        model_dir=model_dir,
        model=info,
        source=source,
        source_info=source_info,
        plan=plan,
        region=region,
        output=output,
        mosaic=mosaic,
        batch_size=opts.batch_size,
        retry=RetryConfig(attempts=opts.max_attempts),
        max_error_fraction=opts.max_error_fraction,
        record=record,
        reuse=reuse,
        ee_asset=ee_asset,
        tta=opts.tta,
    )


def _model_info(model_dir: str) -> dict[str, Any]:
    """The model folder's model.json, checked (TensorFlow loads only once there is one to read)."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(f"{model_dir}/{MODEL_JSON}"):
        if model_dir == DEFAULT_MODEL:
            raise UsageError(
                f"No demo model at {DEFAULT_MODEL!r}: run `python -m pipelines.extract` and "
                "`python -m model.train` first (`make demo` runs all three), or pass --model."
            )
        raise UsageError(
            f"--model {model_dir!r} holds no model (no {MODEL_JSON} in it). Train one into it with "
            f"`terrabeam train --output {model_dir}` (`terrabeam train --help` lists the training "
            "options), or point --model at a folder that `terrabeam train` wrote."
        )
    from model.export import load_model_metadata

    try:
        info = load_model_metadata(model_dir)
    except ModelError as e:
        raise UsageError(str(e)) from None
    missing = [k for k in ("mode", "bands", "classes", "crs", "scale") if k not in info]
    if missing:
        raise UsageError(f"{model_dir}/model.json lacks {missing}; re-export the model.")
    return info


def _scheme(info: dict[str, Any], model_dir: str) -> LabelScheme:
    try:
        return scheme_from_metadata(info)
    except LabelSchemeError as e:
        raise UsageError(f"{model_dir}/model.json: {e}") from None


def _check_mode(info: dict[str, Any], spec: TilingSpec) -> None:
    if info["mode"] == "classification" and (spec.overlap or spec.tile_size != info.get("patch_size")):
        raise UsageError(
            f"The model classifies whole {info.get('patch_size')}-pixel patches: predict with "
            f"--tile-size {info.get('patch_size')} --overlap 0 (each tile's class fills its tile)."
        )


def _check_signature(model_dir: str, info: dict[str, Any], spec: TilingSpec) -> None:
    from transforms.inference import ModelSignatureError, load_saved_model

    try:
        model = load_saved_model(model_dir)
    except ModelSignatureError as e:
        raise UsageError(str(e)) from None
    shape = model.input_shape()
    if len(shape) != 4 or shape[-1] not in (None, len(info["bands"])):
        raise UsageError(
            f"The SavedModel takes input of shape {shape} but model.json names {len(info['bands'])} bands; "
            "re-export the model."
        )
    fixed = [n for n in shape[1:3] if n is not None]
    if fixed and any(n != spec.tile_size for n in fixed):
        raise UsageError(
            f"The SavedModel only takes {shape[1]}×{shape[2]} inputs; pass --tile-size {fixed[0]}."
        )


def _warn_receptive_field(info: dict[str, Any], spec: TilingSpec) -> None:
    """Warn about tilings that make a tile's prediction differ from a whole-image prediction."""
    field = info.get("receptive_field")
    if info["mode"] != "segmentation":
        return
    if field and spec.border < field // 2:
        logging.warning(
            "--overlap %d leaves a %d-pixel border, less than half the model's receptive field (%d): "
            "tile edges may show seams; use --overlap %d or more.",
            spec.overlap,
            spec.border,
            field,
            2 * math.ceil(field / 2),
        )
    # A U-Net pools on a grid anchored at each tile's top-left pixel: tiles whose origins are not on a
    # common multiple of its pooling factor see shifted grids and disagree on a few uncertain pixels.
    depth = re.match(r"unet_d(\d+)", str(info.get("architecture", "")))
    multiple = 2 ** int(depth.group(1)) if depth else 1
    if spec.step % multiple or spec.border % multiple:
        logging.warning(
            "The model pools by %d: with --tile-size minus --overlap (%d) and half the overlap (%d) "
            "multiples of %d, every tile sees the same pooling grid (e.g. --tile-size 256 --overlap 64).",
            multiple,
            spec.step,
            spec.border,
            multiple,
        )


def _source(opts: PipelineOptions, spec: TilingSpec, num_bands: int) -> tuple[Any, dict[str, Any]]:
    if opts.source == "earthengine":
        return _earthengine_source(opts, spec, num_bands)
    from transforms.io.rasters import LocalRasterSource, SourceError

    inputs = opts.inputs
    kind = "local"
    if not inputs:
        from pipelines.demo.scene import ensure_demo_scene

        inputs = [ensure_demo_scene(opts.demo_cache).image]
        kind = "demo"
    source = LocalRasterSource(inputs, comma_list(opts.band_names))
    try:
        source.check_files()  # a broken or cut-short file stops the job here, not on the workers
        source.native_grid()
    except SourceError as e:
        raise UsageError(str(e)) from None
    return source, {"kind": kind, "inputs": list(inputs)}


def _earthengine_source(
    opts: PipelineOptions, spec: TilingSpec, num_bands: int
) -> tuple[Any, dict[str, Any]]:
    """An Earth Engine image recipe as the source; the session starts here, so bad credentials stop early."""
    from transforms.io.earthengine.recipes import DEFAULT_INPUTS

    if opts.inputs or opts.band_names:
        raise UsageError(
            "--inputs and --band-names describe local rasters; with --source earthengine use --ee-image."
        )
    if not opts.aoi:
        raise UsageError("--source earthengine needs --aoi: a GeoJSON file of lon/lat polygons, or W,S,E,N.")
    config, (source,) = earthengine_sources(opts, opts.ee_image or DEFAULT_INPUTS)
    source.connect()
    source.check_request(spec.tile_size, spec.tile_size, num_bands, "float32")
    info = {
        "kind": "earthengine",
        "project": config.project,
        "endpoint": config.endpoint,
        "image": source.recipe.spec,
        "fetch": opts.ee_fetch,
    }
    return source, info


def _lattice(opts: PipelineOptions, info: dict[str, Any], source: Any) -> GridSpec:
    """The model's grid (or --crs/--scale), on the imagery's own lattice when it is the same grid."""
    import rasterio.crs

    crs = opts.crs or info["crs"]
    scale = float(opts.scale or info["scale"])
    try:
        wanted = rasterio.crs.CRS.from_user_input(crs)
    except rasterio.errors.CRSError as e:
        raise UsageError(f"Unknown CRS {crs!r}: {e}") from None
    if hasattr(source, "native_grid"):
        native_crs, transform, _, _ = source.native_grid()
        try:
            native = grid_spec_of(native_crs, transform)
        except ValueError:
            native = None
        if (
            native is not None
            and rasterio.crs.CRS.from_user_input(native_crs) == wanted
            and math.isclose(native.scale, scale, rel_tol=1e-9)
        ):
            return GridSpec(crs, scale, native.origin_x, native.origin_y)
    return GridSpec(crs, scale)


def _region(aoi: str, crs: str) -> tuple[tuple[float, float, float, float], RegionMask | None]:
    """Bounds in `crs` and, for polygons, the mask of pixels outside them."""
    from apache_beam.io.filesystems import FileSystems
    from rasterio.features import bounds as geometry_bounds
    from rasterio.warp import transform_bounds, transform_geom

    from transforms.geometry.sampling import RegionsError, parse_regions
    from transforms.geometry.tiling import RegionMask

    box = _bbox(aoi)
    if box is not None:
        return transform_bounds("EPSG:4326", crs, *box, densify_pts=21), None
    try:
        with FileSystems.open(aoi) as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(
            f"--aoi {aoi!r} is neither a bounding box W,S,E,N nor a readable GeoJSON file: {e}"
        ) from None
    try:
        regions = parse_regions(doc, source=aoi)
    except RegionsError as e:
        raise UsageError(str(e)) from None
    polygons = []
    for region in regions:
        geometry = transform_geom("EPSG:4326", crs, region.geometry)
        if geometry["type"] == "Polygon":
            polygons.append(geometry["coordinates"])
        else:
            polygons.extend(geometry["coordinates"])
    geometry = {"type": "MultiPolygon", "coordinates": polygons}
    return tuple(geometry_bounds(geometry)), RegionMask(geometry)


def _bbox(aoi: str) -> tuple[float, float, float, float] | None:
    parts = aoi.split(",")
    if len(parts) != 4:
        return None
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--aoi {aoi!r}: a bounding box is four numbers W,S,E,N in lon/lat.") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise UsageError(
            f"--aoi {aoi!r}: a bounding box is W,S,E,N in degrees with W < E and S < N "
            "(longitudes in [-180, 180], latitudes in [-90, 90])."
        )
    return west, south, east, north


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fmt(bounds: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in bounds) + ")"


def _prepare_output(output: str, overwrite: bool) -> None:
    """Fail early if the output is not writable or holds an earlier prediction (unless --overwrite)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.cog import join

    earlier = [join(output, name) for name in (SUMMARY_NAME, f"{CLASSES_NAME}.tif", f"{CLASSES_NAME}.vrt")]
    found = [path for path in earlier if FileSystems.exists(path)]
    tiles = join(output, TILES_DIR)
    if FileSystems.exists(tiles):
        found.append(tiles)
    prepare_output(
        output,
        found,
        overwrite,
        "a prediction",
        lambda found: _delete_finished_outputs(output, found),
        or_else=", or --resume to finish a stopped one",
    )


def _delete_finished_outputs(output: str, also: Sequence[str] = ()) -> None:
    """Remove what the end of a prediction writes (mosaics, quick-look, summary, dead letters)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.cog import join

    kinds = (CLASSES_NAME, PROBABILITIES_NAME, POSITIVE_NAME)
    stale = [join(output, f"{kind}{ext}") for kind in kinds for ext in (".tif", ".vrt")]
    stale.append(join(output, SUMMARY_NAME))
    stale += [join(output, QUICKLOOK_NAME), join(output, "errors")]
    stale = [p for p in dict.fromkeys([*also, *stale]) if FileSystems.exists(p)]
    if stale:
        FileSystems.delete(stale)


def _prepare_resume(output: OutputSpec, record: dict[str, Any]) -> frozenset[str]:
    """Check that --output holds this same prediction; returns the ids of the tiles it already has."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.resume import PLAN_NAME, differences, existing_tiles, read_record

    recorded = read_record(output.output)
    if recorded is None:
        raise UsageError(
            f"--resume: {output.output!r} holds no prediction to finish (no {PLAN_NAME}); run without "
            "--resume to start one."
        )
    changed = differences(recorded, record)
    if changed:
        raise UsageError(
            f"--resume: the prediction in {output.output!r} was made with other settings: "
            + "; ".join(changed)
            + ". Resume with the same --model, imagery and options, or pass --overwrite to start again."
        )
    _delete_finished_outputs(output.output)  # rebuilt at the end from every tile
    try:
        partial = FileSystems.match([output.path(TILES_DIR, "*", "*.partial-*")])[0].metadata_list
    except OSError:  # Beam's BeamIOError where nothing matches
        partial = []
    if partial:  # tiles a stopped run was writing (a local write is renamed into place once whole)
        FileSystems.delete([m.path for m in partial])
    return existing_tiles(output)


# --- the pipeline ---------------------------------------------------------------------------------


def build_pipeline(pipeline: beam.Pipeline, job: PredictJob, fail_in_pipeline: bool = False) -> None:
    """Plan -> spread tiles -> fetch -> RunInference -> trim -> COG per tile -> mosaic, quick-look, summary.

    With `job.reuse` (--resume), tiles whose earlier files are complete skip to the mosaic. The last
    step checks the outcome; with `fail_in_pipeline` (a runner that does not run in this process, e.g.
    Dataflow) a failed prediction fails the job itself, after prediction.json is written.
    """
    import apache_beam as beam
    from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
    from apache_beam.pvalue import AsSingleton

    from pipelines.tail import DeadLetters, Finish
    from transforms.cog import WriteTiles
    from transforms.geometry.tiling import tiles_of_row
    from transforms.inference import (
        ERRORS,
        FetchTiles,
        SavedModelHandler,
        inference_dead_letters,
        to_tile_prediction,
    )
    from transforms.resume import REUSED, ReuseTiles

    spec = job.plan.spec
    tiles = (
        pipeline
        | "TileRows" >> beam.Create(range(job.plan.rows))
        | "PlanTiles" >> beam.FlatMap(tiles_of_row, job.plan, job.region)
        # Spread the tiles (small descriptions, not pixels) over workers.
        | "SpreadTiles" >> beam.Reshuffle()
    )
    reused = None
    if job.reuse:
        split = tiles | "ReuseTiles" >> beam.ParDo(ReuseTiles(job.output, job.reuse)).with_outputs(
            REUSED, main="todo"
        )
        tiles, reused = split.todo, split[REUSED]
    fetched = tiles | "FetchTiles" >> beam.ParDo(FetchTiles(job.source, job.bands, job.retry)).with_outputs(
        ERRORS, main="tiles"
    )
    handler = KeyedModelHandler(SavedModelHandler(job.model_dir, job.batch_size, tta=job.tta))
    predicted, failed = fetched.tiles | "Predict" >> RunInference(handler).with_exception_handling()
    written = (
        predicted
        | "TrimTiles"
        >> beam.Map(
            to_tile_prediction,
            spec,
            with_probabilities=job.output.needs_probabilities,
            region_mask=job.region,
        )
        | "WriteTiles" >> beam.ParDo(WriteTiles(job.output))
    )
    if reused is not None:
        written = (written, reused) | "WrittenAndReused" >> beam.Flatten()
    inference_errors = failed.failed_inferences | "InferenceDeadLetters" >> beam.FlatMap(
        inference_dead_letters
    )
    errors = (fetched[ERRORS], inference_errors) | "AllErrors" >> beam.Flatten()
    letters = errors | "DeadLetters" >> DeadLetters(job.output.path("errors", "errors"))
    records = written | "CollectTiles" >> beam.combiners.ToList()
    _ = pipeline | "Finish" >> Finish(
        "prediction", finish, letters, job, AsSingleton(records), fail_in_pipeline=fail_in_pipeline
    )


def finish(
    _, job: PredictJob, records: list[dict], *, error_files: list[str], error_count: int, reasons
) -> dict[str, Any]:
    """Mosaic (VRT, or one COG), quick-look PNG and prediction.json, once every tile is written; returns
    the outcome."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.cog import build_vrt, quicklook_png, vrt_to_cog, write_bytes

    output, plan = job.output, job.plan
    kinds = output.kinds
    files: dict[str, str] = {}
    counts = [0] * len(output.classes)
    for record in records:
        counts = [a + b for a, b in zip(counts, record["class_counts"])]
    if records:
        for kind in kinds:
            vrt = output.path(f"{kind}.vrt")
            write_bytes(vrt, build_vrt(plan.output, records, output, kind).encode("utf-8"))
            files[kind] = f"{kind}.vrt"
            if job.mosaic:
                vrt_to_cog(vrt, output.path(f"{kind}.tif"), kind)
                files[kind] = f"{kind}.tif"
        title = f"{len(records)} tiles, {plan.width}x{plan.height} px, {plan.lattice.crs} @ {plan.lattice.scale:g}"
        png = quicklook_png(output.path(files[CLASSES_NAME]), output.scheme, counts, title)
        write_bytes(output.path(QUICKLOOK_NAME), png)
        files["quicklook"] = QUICKLOOK_NAME
        if job.mosaic:
            FileSystems.delete([output.path(f"{kind}.vrt") for kind in kinds] + [output.path(TILES_DIR)])
    if not error_count:  # no dead letters: leave no empty errors file behind
        FileSystems.delete([p for p in error_files if FileSystems.exists(p)])
        errors_dir = output.path("errors")
        if "://" not in errors_dir and os.path.isdir(errors_dir) and not os.listdir(errors_dir):
            os.rmdir(errors_dir)
    summary = {
        "output": output.output,
        "model": job.model_dir,
        "bands": list(job.bands),
        "classes": list(output.classes),
        "label_scheme": output.scheme.to_json(),
        "positive_class": output.scheme.positive_class,
        "source": job.source_info,
        "grid": {
            "crs": plan.lattice.crs,
            "transform": list(plan.output.transform),
            "width": plan.width,
            "height": plan.height,
        },
        "tiling": {"tile_size": plan.spec.tile_size, "overlap": plan.spec.overlap, "tiles": len(plan)},
        "tiles_written": len(records),
        "tiles_reused": sum(1 for r in records if r.get("reused")),
        "tiles_failed": int(error_count),
        "class_counts": dict(zip(output.classes, counts)),
        "nodata_pixels": sum(r["nodata"] for r in records),
        "probabilities": output.probabilities,
        "mosaic": job.mosaic,
        "files": files,
        "errors": [os.path.basename(p) for p in error_files] if error_count else [],
        "outcome": Outcome.of("tiles", len(records), reasons, job.max_error_fraction).to_json(),
    }
    write_bytes(output.path(SUMMARY_NAME), (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary["outcome"]


def region_alias(argv: Sequence[str]) -> list[str]:
    """Accept `--region <geojson or W,S,E,N>` for the area of interest.

    Beam's Google Cloud options own `--region` (the Dataflow region, e.g. us-central1), so the typed
    option is `--aoi`; a `--region` value that is a bounding box or a GeoJSON path is taken as the area.
    """

    def is_area(value: str) -> bool:
        return "," in value or value.lower().endswith((".json", ".geojson")) or "/" in value

    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--region" and i + 1 < len(args) and is_area(args[i + 1]):
            args[i] = "--aoi"
        elif arg.startswith("--region=") and is_area(arg[len("--region=") :]):
            args[i] = "--aoi=" + arg[len("--region=") :]
    return args


def worker_bytes(job: PredictJob) -> int:
    """Estimated memory of one local worker process: runtime and model, and the batch in flight."""
    pixels = job.batch_size * job.plan.spec.tile_size**2
    return WORKER_BASE_BYTES + pixels * WORKER_BYTES_PER_BATCH_PIXEL


def tensorflow_threads(workers: int, cpus: int) -> dict[str, str]:
    """TensorFlow thread pools for each of `workers` processes on `cpus` CPUs: a fair share each, so
    that N processes do not each start N threads per operation (TensorFlow reads these at start-up)."""
    share = str(max(1, cpus // max(1, workers)))
    return {"TF_NUM_INTRAOP_THREADS": share, "TF_NUM_INTEROP_THREADS": share}


def input_errors() -> tuple[type[Exception], ...]:
    """The errors besides UsageError that mean bad input (exit status 2, or an AssetError's own)."""
    from transforms.geometry.sampling import RegionsError
    from transforms.geometry.tiling import TilingError
    from transforms.io.earthengine.assets import AssetError
    from transforms.io.rasters import SourceError

    return (SourceError, TilingError, ModelError, RegionsError, AssetError)


SHELL = JobShell(
    module="pipelines.predict",
    options_name="PredictOptions",
    add_options=add_options,
    description=DESCRIPTION,
    job="prediction",
    aliases=region_alias,
    input_errors=input_errors,
)


def __getattr__(name: str) -> type:
    """`PredictOptions`: the options as Beam's PipelineOptions class, made when first asked for."""
    return SHELL.module_attribute(name)


def run(argv: Sequence[str] | None = None, save_main_session: bool = False) -> dict[str, Any]:
    """Parse flags, validate, run the pipeline to completion; returns prediction.json's content."""
    command = SHELL.parse(argv, save_main_session)  # --help ends here, before the job's imports
    from apache_beam.io.filesystems import FileSystems

    from pipelines.progress import PREDICTION, run_job
    from transforms.cog import write_bytes
    from transforms.io.earthengine.assets import register_prediction
    from transforms.resume import PLAN_NAME

    opts, options = command.job, command.options
    job = validate(opts)
    use_local_cores(
        options,
        command.args,
        worker_bytes(job),
        opts.max_memory,
        len(job.plan),
        MIN_TILES_PER_WORKER,
        CPUS_PER_PREDICTION_WORKER,
    )
    processes = worker_processes(options)  # the pool chosen here or on the command line
    threads = tensorflow_threads(processes, available_cpus()) if processes > 1 else {}
    if job.record is not None:  # before any tile, so that a stopped run can be resumed
        write_bytes(job.output.path(PLAN_NAME), (json.dumps(job.record, indent=2) + "\n").encode("utf-8"))
    logging.info(
        "Predicting %d tiles (%d×%d pixels) into %s",
        len(job.plan),
        job.plan.width,
        job.plan.height,
        job.output.output,
    )
    summary_path = job.output.path(SUMMARY_NAME)
    with worker_environment(threads):
        run_job(
            options,
            lambda pipeline, remote: build_pipeline(pipeline, job, remote),
            PREDICTION,
            outcome_path=summary_path,
            job="prediction",
            where=job.output.output,
            runner=local_runner(options),
        )
    with FileSystems.open(summary_path) as f:
        summary = json.loads(f.read())
    if job.ee_asset is not None:
        summary = register_prediction(job.ee_asset, summary, job.model, summary_name=SUMMARY_NAME)
    return summary


def report(summary: dict[str, Any]) -> None:
    """What a finished prediction wrote, on stdout; its warnings on stderr."""
    files = summary["files"]
    where = summary["output"]
    positive = (
        f", {summary['positive_class']} probability {files[POSITIVE_NAME]}" if POSITIVE_NAME in files else ""
    )
    print(
        f"Prediction of {summary['tiles_written']} tiles written to {where}: class map "
        f"{files.get(CLASSES_NAME)}{positive}, quick-look {files.get('quicklook')}, summary {SUMMARY_NAME}"
    )
    if summary.get("earthengine_asset"):
        print(summary["earthengine_asset"]["message"])
    if summary["tiles_reused"]:
        print(f"{summary['tiles_reused']} of them were kept from the earlier run (--resume).")
    for line in warning_lines(Outcome.from_json(summary["outcome"])):
        print(line, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m pipelines.predict`: 0 written, 1 failed, 2 bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = quiet_start(argv)  # first: TensorFlow reads its log level once, when it loads
    return SHELL.exit_status(run, argv, verbose, report)


if __name__ == "__main__":
    sys.exit(main())
