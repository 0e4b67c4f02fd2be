"""Train a land-cover model as a Beam job: one training run on one worker, then the model folder.

    python -m pipelines.train --data out/demo/data --output out/demo/model --epochs 5     # DirectRunner
    python -m pipelines.train --data gs://bucket/data --output gs://bucket/models/run1 \\
        --runner DataflowRunner --project P --region R --temp_location gs://bucket/tmp \\
        --sdk_container_image IMAGE --machine_type n1-standard-8 \\
        --dataflow_service_options "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"

The job's only work item is the training configuration: `Create([settings]) | Map(train_and_export)`
runs `model.train.train` (the same function as `python -m model.train`) on one worker, which writes
`saved_model/`, `eeified/`, `earthengine.json`, `model.json`, `metrics.json` (and the confusion matrix,
history and checkpoints) to `--output`, local or gs://. On Dataflow that worker can carry a GPU
(`--dataflow_service_options=worker_accelerator=...`, with an image built with GPU=true). The flags
mirror `python -m model.train`; every Beam option passes through. The data and the settings are checked
before the pipeline starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions, WorkerOptions

from pipelines.options import (
    help_flags,
    help_parser,
    local_runner,
    parse_job_flags,
    runner_help,
    unknown_flags_message,
)
from transforms.contracts.manifest import ManifestError, read_manifest
from transforms.runtime.command import prog, quiet_start
from transforms.runtime.outcome import is_local_runner

# Flags of `python -m model.train` that other terrabeam options classes register too (ExtractOptions:
# --output, --seed; PredictOptions: --output, --batch-size). Beam merges every PipelineOptions subclass
# into one parser when it runs a pipeline, where a flag registered twice is an error, so TrainOptions
# registers these under its own names and `run` accepts the model.train spelling.
FLAG_ALIASES = {
    "--output": "--model-dir",
    "--seed": "--training-seed",
    "--batch-size": "--training-batch-size",
}


class UsageError(ValueError):
    """Bad command-line input; the message says what to change."""


class TrainOptions(PipelineOptions):
    # The options the job cannot run without (see pipelines.launch.required_options).
    REQUIRED_OPTIONS = ("data", "model_dir")

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        group = parser.add_argument_group("data and model folder")
        group.add_argument(
            "--data",
            default=None,
            help="Folder with manifest.json written by pipelines.extract (local or gs://). Required.",
        )
        group.add_argument(
            "--model-dir",
            dest="model_dir",
            default=None,
            help="Model folder to write (local or gs://). Required; `--output PATH` is accepted too.",
        )
        group = parser.add_argument_group("model")
        group.add_argument(
            "--mode",
            choices=("segmentation", "classification"),
            default="segmentation",
            help="Per-pixel maps or one label per patch.",
        )
        group.add_argument(
            "--architecture", default=None, help="unet (default for segmentation), minimal, or classifier."
        )
        group.add_argument("--filters", type=int, default=32, help="Filters of the first level.")
        group.add_argument("--depth", type=int, default=None, help="Poolings of unet/classifier.")
        group = parser.add_argument_group("training")
        group.add_argument(
            "--epochs",
            type=int,
            default=80,
            help="Epochs of the cosine schedule; under --schedule plateau the most epochs.",
        )
        group.add_argument(
            "--training-batch-size",
            dest="training_batch_size",
            type=int,
            default=16,
            help="Patches per batch. `--batch-size N` is accepted too.",
        )
        group.add_argument(
            "--learning-rate", dest="learning_rate", type=float, default=1e-3, help="Adam learning rate."
        )
        group.add_argument(
            "--patience", type=int, default=6, help="Epochs without a better validation loss before stopping."
        )
        group.add_argument(
            "--selection-fraction",
            dest="selection_fraction",
            type=float,
            default=0.1,
            help="Share of the training records (by record hash) held out to select the model when the "
            "data has no 'selection' split; 0 selects on the validation split (optimistic scores).",
        )
        group.add_argument(
            "--schedule",
            choices=("plateau", "cosine"),
            default="cosine",
            help="Learning rate: halve on plateaus with early stopping, or a cosine over all epochs.",
        )
        group.add_argument(
            "--ema", type=float, default=0.99, help="Momentum of a moving average of the weights (0: off)."
        )
        group.add_argument(
            "--loss", choices=("crossentropy", "focal"), default="crossentropy", help="Per-pixel loss."
        )
        group.add_argument(
            "--region-loss",
            dest="region_loss",
            choices=("none", "dice", "lovasz"),
            default="lovasz",
            help="Loss over each batch added to the per-pixel one: soft Dice or Lovász-softmax.",
        )
        group.add_argument(
            "--label-smoothing",
            dest="label_smoothing",
            type=float,
            default=0.1,
            help="Label smoothing (0: off).",
        )
        group.add_argument(
            "--bootstrap", type=float, default=0.0, help="Soft bootstrapping weight of the prediction."
        )
        group.add_argument(
            "--spectral-indices",
            dest="spectral_indices",
            default="auto",
            help="Indices computed inside the model: auto, none, or names from ndvi,ndwi,mndwi,ndbi.",
        )
        group.add_argument(
            "--band-roles",
            dest="band_roles",
            default=None,
            help="role=band pairs naming green, red, nir, swir1 bands, e.g. nir=SR_B5,red=SR_B4.",
        )
        group.add_argument(
            "--class-weight-power",
            dest="class_weight_power",
            type=float,
            default=0.5,
            help="Class weight = (median freq / freq) ** power; 0 disables class weighting.",
        )
        group.add_argument(
            "--label-source",
            dest="label_source",
            choices=("majority", "feature"),
            default="majority",
            help="Classification mode: majority class of the label patch, or the label as one value per patch.",
        )
        group.add_argument(
            "--max-minutes",
            dest="max_minutes",
            type=float,
            default=None,
            help="Stop training within this time budget.",
        )
        group.add_argument(
            "--init-model",
            dest="init_model",
            default=None,
            help="Continue from this model folder (same bands and classes).",
        )
        group.add_argument(
            "--training-seed",
            dest="training_seed",
            type=int,
            default=0,
            help="Seed of weights, shuffling and augmentation. `--seed N` is accepted too.",
        )
        group.add_argument(
            "--deterministic", action="store_true", help="Deterministic TensorFlow ops (slower)."
        )
        group.add_argument(
            "--cache", default="memory", help="memory, none, or a file prefix for the tf.data cache."
        )
        group.add_argument(
            "--verbose",
            type=int,
            nargs="?",
            const=2,
            default=2,
            help="Keras fit output: 0 none, 1 a progress bar, 2 a line per epoch. Given at all, it also shows "
            "TensorFlow's start-up lines and library warnings.",
        )


DESCRIPTION = """\
Train a land-cover model as a Beam job: one worker runs the same training as `python -m model.train`
(flags as there; --output, --seed and --batch-size are also spelt --model-dir, --training-seed and
--training-batch-size) and writes the model folder to --output, local or gs://. On Dataflow that worker
can carry a GPU. Examples: README.md, "Training as a Beam job"."""

# TrainOptions dest -> model.train.TrainConfig field, where they differ.
CONFIG_FIELDS = {"model_dir": "output", "training_seed": "seed", "training_batch_size": "batch_size"}


def training_aliases(argv: Sequence[str]) -> list[str]:
    """Accept model.train's spellings `--output`, `--seed` and `--batch-size` (see FLAG_ALIASES)."""
    args = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if name in FLAG_ALIASES:
            arg = FLAG_ALIASES[name] + sep + value
        args.append(arg)
    return args


def settings_of(opts: TrainOptions) -> dict[str, Any]:
    """The keyword arguments of model.train.TrainConfig, from the options."""
    values = opts.get_all_options(current_only=True)
    return {CONFIG_FIELDS.get(name, name): values[name] for name in _option_dests()}


def _option_dests() -> list[str]:
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(add_help=False, allow_abbrev=False)
    TrainOptions._add_argparse_args(parser)
    return [a.dest for a in parser._actions if a.option_strings]


def validate(opts: TrainOptions) -> dict[str, Any]:
    """Check the settings and the data before any worker starts; return TrainConfig's keyword arguments."""
    from model.errors import ModelError
    from model.train import TrainConfig

    for dest in TrainOptions.REQUIRED_OPTIONS:
        if not getattr(opts, dest):
            flag = {"model_dir": "--output"}.get(dest, "--" + dest.replace("_", "-"))
            raise UsageError(f"{flag} is required (see `python -m pipelines.train --help`).")
    settings = settings_of(opts)
    try:
        TrainConfig(**settings).validate()
    except ModelError as e:
        raise UsageError(str(e)) from None
    try:
        manifest = read_manifest(opts.data)
    except ManifestError as e:
        raise UsageError(str(e)) from None
    if not manifest["splits"].get("train", {}).get("files"):
        raise UsageError(
            f"The data at {opts.data!r} has no 'train' records; re-run the extraction with more points."
        )
    if opts.init_model and not FileSystems.exists(opts.init_model.rstrip("/") + "/model.json"):
        raise UsageError(f"--init-model {opts.init_model!r} is not a model folder (it has no model.json).")
    return settings


def train_and_export(settings: dict[str, Any]) -> dict[str, Any]:
    """One training run (model.train.train) on this worker; returns the model folder's summary."""
    import tensorflow as tf

    from model.train import TrainConfig, train

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    logging.info("Training on %s with %s", "GPU " + ", ".join(gpus) if gpus else "CPU", settings)
    info = train(TrainConfig(**settings))
    summary = {
        "model_dir": settings["output"],
        "devices": gpus or ["CPU"],
        "metrics": info.get("metrics", {}),
    }
    logging.info("Model written: %s", json.dumps(summary))
    return summary


def build_pipeline(pipeline: beam.Pipeline, settings: dict[str, Any]) -> beam.PCollection:
    """The one-element pipeline: the training settings -> train and export on one worker -> summary."""
    return (
        pipeline
        | "TrainingSettings" >> beam.Create([settings])
        | "TrainAndExport" >> beam.Map(train_and_export)
    )


def job_help_parser() -> argparse.ArgumentParser:
    """--help: the job's options as TrainOptions groups them, then Beam's runner options."""
    return help_parser(
        prog("pipelines.train"), DESCRIPTION, [TrainOptions], runner_help("training", local_cores=False)
    )


def run(argv: Sequence[str] | None = None, save_main_session: bool = False) -> dict[str, Any]:
    """Parse flags, validate, run the training job; returns the settings it ran with."""
    args = training_aliases(argv or [])
    parser = job_help_parser()
    parse_job_flags(args, parser)
    options = PipelineOptions(args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    problem = unknown_flags_message(options, help_flags(parser))
    if problem:
        raise UsageError(problem)
    settings = validate(options.view_as(TrainOptions))
    workers = options.view_as(WorkerOptions)
    # One work item: never ask the service for more than one worker.
    if workers.num_workers is None:
        workers.num_workers = 1
    if workers.max_num_workers is None:
        workers.max_num_workers = 1
    with beam.Pipeline(runner=local_runner(options), options=options) as pipeline:
        build_pipeline(pipeline, settings)
    runner = options.view_as(StandardOptions).runner
    output = settings["output"]
    if is_local_runner(runner):
        _print_metrics(output)
    else:
        print(f"Training submitted; the model folder will be {output}")
    return settings


def _print_metrics(output: str) -> None:
    path = output.rstrip("/") + "/metrics.json"
    try:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            metrics = json.loads(f.read())
    except (OSError, ValueError):
        print(f"Model written to {output}")
        return
    print(
        f"Model written to {output}: overall accuracy {metrics.get('overall_accuracy')}, "
        f"mean IoU {metrics.get('mean_iou')} ({metrics.get('split')} pixels)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)
    logging.getLogger().setLevel(logging.INFO)
    try:
        run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help (0), or a badly typed option that argparse reported (2)
        return e.code if isinstance(e.code, int) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
