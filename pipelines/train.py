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
(`--dataflow_service_options=worker_accelerator=...`, with an image built with GPU=true). The options are
those of `python -m model.train`, made from the same declarations (model/config.py), as is the Flex
Template's metadata.json; every Beam option passes through. The data and the settings are checked
before the pipeline starts. Neither Beam nor TensorFlow is imported at module level: `TrainOptions`,
the options as Beam's `PipelineOptions` class, is made when first asked for.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from model.config import (
    TrainConfig,
    add_arguments,
    config_from_job,
    job_flag_aliases,
    job_required_options,
)
from model.errors import ModelError
from pipelines.options import (
    help_flags,
    help_parser,
    local_runner,
    parse_job_flags,
    runner_help,
    unknown_flags_message,
)
from transforms.runtime.command import prog, quiet_start

if TYPE_CHECKING:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

# model.train's spelling -> this job's, for the options other jobs register too (see model/config.py):
# --output, --seed and --batch-size are --model-dir, --training-seed and --training-batch-size here, and
# `run` accepts both.
FLAG_ALIASES = job_flag_aliases()
# The options the job cannot run without (see pipelines.launch.required_options).
REQUIRED_OPTIONS = job_required_options()
OPTIONS_CLASS = "TrainOptions"


class UsageError(ValueError):
    """Bad command-line input; the message says what to change."""


def add_options(parser: Any) -> None:
    """The job's options: TrainConfig's, under the job's names, in their groups."""
    add_arguments(parser, job=True)


_options_classes: dict[str, type] = {}


def options_class() -> type:
    """TrainOptions: the job's options as a Beam `PipelineOptions` subclass, made on first use (Beam
    takes seconds to import, and --help needs none of it)."""
    if OPTIONS_CLASS not in _options_classes:
        from apache_beam.options.pipeline_options import PipelineOptions

        class TrainOptions(PipelineOptions):
            @classmethod
            def _add_argparse_args(cls, parser: Any) -> None:
                add_options(parser)

        TrainOptions.REQUIRED_OPTIONS = REQUIRED_OPTIONS
        # Named after this module even when it runs as __main__: Beam merges its options classes by name.
        TrainOptions.__module__ = "pipelines.train"
        _options_classes[OPTIONS_CLASS] = TrainOptions
    return _options_classes[OPTIONS_CLASS]


def __getattr__(name: str) -> type:
    """`TrainOptions`, made when first asked for (see `options_class`)."""
    if name == OPTIONS_CLASS:
        return options_class()
    raise AttributeError(f"module 'pipelines.train' has no attribute {name!r}")


DESCRIPTION = """\
Train a land-cover model as a Beam job: one worker runs the same training as `python -m model.train`
(options as there; --output, --seed and --batch-size are also spelt --model-dir, --training-seed and
--training-batch-size) and writes the model folder to --output, local or gs://. On Dataflow that worker
can carry a GPU. Examples: docs/cloud.md, "Training as a Beam job"."""


def training_aliases(argv: Sequence[str]) -> list[str]:
    """Accept model.train's spellings `--output`, `--seed` and `--batch-size` (see FLAG_ALIASES)."""
    args = []
    for arg in argv:
        name, sep, value = arg.partition("=")
        if name in FLAG_ALIASES:
            arg = FLAG_ALIASES[name] + sep + value
        args.append(arg)
    return args


def settings_of(opts: PipelineOptions) -> dict[str, Any]:
    """The keyword arguments of TrainConfig, from the options."""
    return config_from_job(opts.get_all_options(current_only=True))


def validate(opts: PipelineOptions) -> dict[str, Any]:
    """Check the settings and the data before any worker starts; return TrainConfig's keyword arguments."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.contracts.manifest import ManifestError, read_manifest

    for dest in REQUIRED_OPTIONS:
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

    from model.train import train

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
    import apache_beam as beam

    return (
        pipeline
        | "TrainingSettings" >> beam.Create([settings])
        | "TrainAndExport" >> beam.Map(train_and_export)
    )


def job_help_parser() -> argparse.ArgumentParser:
    """--help: the job's options as model/config.py groups them, then Beam's runner options."""
    return help_parser(
        prog("pipelines.train"), DESCRIPTION, [add_options], runner_help("training", local_cores=False)
    )


def run(argv: Sequence[str] | None = None, save_main_session: bool = False) -> dict[str, Any]:
    """Parse flags, validate, run the training job; returns the settings it ran with."""
    args = training_aliases(argv or [])
    parser = job_help_parser()
    parse_job_flags(args, parser)  # --help ends here
    import apache_beam as beam
    from apache_beam.options.pipeline_options import (
        PipelineOptions,
        SetupOptions,
        StandardOptions,
        WorkerOptions,
    )

    from transforms.runtime.outcome import is_local_runner

    job_options = options_class()  # registered with Beam before the flags are checked against it
    options = PipelineOptions(args)
    options.view_as(SetupOptions).save_main_session = save_main_session
    problem = unknown_flags_message(options, help_flags(parser))
    if problem:
        raise UsageError(problem)
    settings = validate(options.view_as(job_options))
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
    from apache_beam.io.filesystems import FileSystems

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
    """`python -m pipelines.train`: 0 trained (or submitted), 2 bad input."""
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)  # first: TensorFlow reads its log level once, when it loads
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
