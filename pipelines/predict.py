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
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from model.errors import ModelError
from pipelines.options import (
    JobOptionGroup,
    add_earthengine_options,
    add_local_runner_options,
    add_plan_options,
    available_cpus,
    use_local_cores,
    worker_environment,
    worker_processes,
)
from pipelines.shell import JobShell, UsageError, check_shared_options
from transforms.contracts.prediction import (
    CLASSES_NAME,
    POSITIVE_NAME,
    PROBABILITIES,
    QUICKLOOK_NAME,
    SUMMARY_NAME,
    TILES_DIR,
)
from transforms.runtime.command import quiet_start
from transforms.runtime.outcome import DEFAULT_MAX_ERROR_FRACTION, Outcome, warning_lines

# Beam, TensorFlow, rasterio and the Beam steps load when the job runs, not for --help (pipelines.shell).
if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.cog import OutputSpec
    from transforms.geometry.tiling import RegionMask, TilePlan
    from transforms.io.earthengine.assets import AssetRequest
    from transforms.io.retry import RetryConfig

DEFAULT_MODEL = "out/demo/model"
DEFAULT_OUTPUT = "out/demo/predictions"
# One worker writes the --mosaic COG; above this many pixels, per-tile COGs + VRT are the way (a
# 65,536² uint8 map is 4 GiB before compression, plus a third for overviews, on one worker's disk).
MAX_MOSAIC_PIXELS = 1 << 32
# Memory of one local worker process, for the --max-memory guard: TensorFlow, Beam and the loaded model
# (WORKER_BASE_BYTES), plus what a batch in flight needs per input pixel (the tiles, the model's
# activations, the probabilities): 1.45-1.51 GB measured with the default U-Net, 8 tiles of 256 px
# (docs/local-cores.md).
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
Examples: docs/prediction.md."""


def add_options(parser) -> None:
    """The prediction's options, grouped (PredictOptions and --help are made of them)."""
    group = JobOptionGroup(parser, "model and imagery (default: the demo model and scene)")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="Model folder (local or gs://) written by `python -m model.train`.",
    )
    group.add_imagery()
    group.add_argument(
        "--aoi",
        default=None,
        help="Area to predict: a GeoJSON file of lon/lat (multi)polygons, or a lon/lat box W,S,E,N "
        "(default: the whole imagery). `--region <geojson or W,S,E,N>` is accepted too.",
    )
    group.add_demo_cache()
    group = JobOptionGroup(parser, "output grid and tiles")
    group.add_grid("output grid", "the model's, from model.json", "the model's")
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
    group = JobOptionGroup(parser, "reads and inference")
    group.add_argument("--batch-size", dest="batch_size", type=int, default=8, help="Tiles per model call.")
    group.add_max_attempts("tile read")
    group.add_argument(
        "--tta",
        action="store_true",
        help="Average each tile's prediction over its 8 flips/rotations (8x the model's cost).",
    )
    group = JobOptionGroup(parser, "output")
    group.add_argument(
        "--mosaic",
        action="store_true",
        help="Write one COG for the whole region (classes.tif) instead of per-tile COGs + VRT.",
    )
    group.add_argument(
        "--probabilities",
        choices=PROBABILITIES,
        default="none",
        help="Also write per-class probabilities: uint8 (p x 254, nodata 255) or float32 (nodata NaN).",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="Finish an earlier, stopped prediction in --output (same model and options): keep its "
        "complete tiles, predict the rest, rebuild the mosaic.",
    )
    group.add_output(DEFAULT_OUTPUT, "tiles", "prediction")
    group.add_argument(
        "--ee-asset",
        dest="ee_asset",
        default=None,
        help="Register the class map as this Earth Engine image asset (projects/P/assets/NAME), backed by "
        "the mosaic COG; needs a gs:// --output and implies --mosaic.",
    )
    add_earthengine_options(parser, with_labels=False)
    add_plan_options(parser)
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
    """Check every input and the output folder, and return the job, or raise UsageError (or a
    ValueError subclass)."""
    return claim_output(resolve(opts), opts)


def claim_output(job: PredictJob, opts: PipelineOptions) -> PredictJob:
    """The job with the output folder checked: free (or --overwrite: cleared), or with --resume the
    earlier run's complete tiles to keep."""
    from pipelines.checks.output import prediction_output, resumed_prediction

    if opts.resume:
        return dataclasses.replace(job, reuse=resumed_prediction(job.output, job.record))
    prediction_output(job.output.output, opts.overwrite)
    return job


def resolve(opts: PipelineOptions, offline: bool = False) -> PredictJob:
    """Check every input (not the output folder) and return the job. `offline` (for a plan): Earth
    Engine is not contacted and the SavedModel is not loaded, only its model.json read."""
    from pipelines.checks import area, model_folder, sources
    from transforms.cog import OutputSpec
    from transforms.geometry.tiling import TilingSpec, plan_for_bounds
    from transforms.io.earthengine.assets import asset_request
    from transforms.io.retry import RetryConfig
    from transforms.resume import model_fingerprint, run_record

    if opts.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {opts.batch_size}.")
    check_shared_options(opts)
    if opts.resume and opts.overwrite:
        raise UsageError("--resume finishes the prediction in --output, --overwrite replaces it: pick one.")
    if opts.scale is not None and not opts.scale > 0:
        raise UsageError(f"--scale must be a positive pixel size, got {opts.scale}.")
    spec = TilingSpec(opts.tile_size, opts.overlap)  # TilingError is a ValueError with the message
    model_dir = opts.model.rstrip("/")
    info = model_folder.model_info(model_dir, DEFAULT_MODEL)
    model_folder.check_mode(info, spec)
    source, source_info = sources.prediction_source(opts, spec, model_dir, info["bands"], offline)
    lattice = area.output_grid(opts, info, source)
    bounds, region = area.area_to_predict(opts.aoi, lattice.crs, source)
    plan = plan_for_bounds(lattice, bounds, spec)
    ee_asset = asset_request(opts) if opts.ee_asset else None
    mosaic = opts.mosaic or ee_asset is not None  # Earth Engine registers one COG
    if mosaic and plan.width * plan.height > MAX_MOSAIC_PIXELS:
        raise UsageError(
            f"--mosaic writes one COG on one worker; the region is {plan.width}×{plan.height} pixels, more "
            f"than {MAX_MOSAIC_PIXELS:,}. Drop --mosaic to get one COG per tile and a VRT mosaic."
        )
    if not offline:
        model_folder.check_signature(model_dir, info, spec)
        model_folder.warn_receptive_field(info, spec)
    written = OutputSpec(
        opts.output.rstrip("/"), model_folder.label_scheme(info, model_dir), opts.probabilities
    )
    record = run_record(
        model_dir=model_dir,
        model_fingerprint=model_fingerprint(model_dir),
        plan=plan,
        region=region,
        source=source_info,
        output=written,
        tta=opts.tta,
    )
    return PredictJob(
        model_dir=model_dir,
        model=info,
        source=source,
        source_info=source_info,
        plan=plan,
        region=region,
        output=written,
        mosaic=mosaic,
        batch_size=opts.batch_size,
        retry=RetryConfig(attempts=opts.max_attempts),
        max_error_fraction=opts.max_error_fraction,
        record=record,
        ee_asset=ee_asset,
        tta=opts.tta,
    )


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
    from transforms.planning import PlanError

    return (SourceError, TilingError, ModelError, RegionsError, AssetError, PlanError)


SHELL = JobShell("pipelines.predict", "PredictOptions", add_options, DESCRIPTION, "prediction")
# PredictOptions, the options as Beam's PipelineOptions class, is made when first asked for.
__getattr__ = SHELL.module_attribute


def run(argv: Sequence[str] | None = None, save_main_session: bool = False) -> dict[str, Any]:
    """Parse flags, validate, run the pipeline to completion; returns prediction.json's content."""
    command = SHELL.parse(argv, save_main_session, region_alias)  # --help ends here
    from apache_beam.io.filesystems import FileSystems

    from pipelines.plan import prediction_plan, submission_plan, write_plan
    from pipelines.progress import PREDICTION
    from transforms.cog import write_bytes
    from transforms.io.earthengine.assets import register_prediction
    from transforms.resume import PLAN_NAME

    opts, options = command.job, command.options
    job = resolve(opts)
    # On a distributed runner: the plan first, held to --budget, before anything is written.
    plan = submission_plan(command, lambda: prediction_plan(job, opts, command), SHELL.job)
    job = claim_output(job, opts)
    if plan is not None:
        write_plan(job.output.output, plan, "predict", command.args)
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
        SHELL.run_pipeline(
            options,
            lambda pipeline, remote: build_pipeline(pipeline, job, remote),
            PREDICTION,
            summary_path,
            job.output.output,
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
    return SHELL.exit_status(run, argv, verbose, input_errors, report)


if __name__ == "__main__":
    sys.exit(main())
