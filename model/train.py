"""Train a land-cover model on an extraction and write the model folder.

    python -m model.train                                   # demo data of `python -m pipelines.extract`
    python -m model.train --data gs://bucket/data --output gs://bucket/model --epochs 30 --batch-size 32
    python -m model.train --mode classification --architecture classifier ...

Reads `<data>/manifest.json` (bands, patch size, classes, record files), trains, and exports the model
folder described in model/export.py. The options are TrainConfig's (model/config.py, which the Beam job
`python -m pipelines.train` and its Flex Template share); `train` runs the stages of model/training.py,
which load TensorFlow when training starts, not for --help.

Model selection (early stopping, the best epoch, the learning-rate plateaus) uses a selection set that
is not the scored split: the manifest's `selection` split when it has one, else `--selection-fraction`
of the training records, carved by a hash of each record's bytes (the same records on every run). The
`validation` split is then used once, to score the final model (metrics.json, confusion_matrix.png),
so its figures are what a user can expect on pixels the model never saw. `--selection-fraction 0`
selects on the validation split itself, as older versions did; its scores are then optimistic.

Class imbalance: a class-weighted loss. Each labelled pixel's cross-entropy is weighted by
(median class frequency / its class frequency) ** 0.25 (`--class-weight-power`), counted on the training
pixels (per-pixel sample weights, since Keras' `class_weight` supports one label per sample). The
Lovász-softmax term already optimizes each class's IoU, so a light weighting is enough: 0.5, the
default before 2026-12-07, scored lower on the selection carve, and none at all lost on held-out
places (docs/performance.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from model.config import DEFAULT_DATA, TrainConfig, add_arguments
from model.errors import ModelError
from transforms.runtime.command import HelpFormatter, fill, prog, quiet_start, unknown_options_message

# The demo extraction's manifest (transforms.contracts.manifest.MANIFEST_NAME; that module loads Beam,
# which a missing demo need not wait for).
DEMO_MANIFEST = os.path.join(DEFAULT_DATA, "manifest.json")


def train(config: TrainConfig) -> dict[str, Any]:
    """Run training as configured; returns the model.json metadata (with the validation metrics)."""
    config.validate()
    require_demo_data(config)
    from model import training  # TensorFlow loads here, after the command's quiet start

    run = training.start(config)
    data = training.load_training_data(config)
    model = training.build_model(config, data)
    fitted = training.fit(config, data, model, run)
    report = training.score(data, fitted)
    return training.export(config, data, fitted, report)


def require_demo_data(config: TrainConfig) -> None:
    """With the default --data, say how to make the demo extraction when there is none."""
    if config.data == DEFAULT_DATA and not os.path.exists(DEMO_MANIFEST):
        raise ModelError(
            f"No demo extraction at {DEFAULT_DATA!r}: run `make demo` (or `terrabeam extract`) first, "
            "or pass --data."
        )


DESCRIPTION = """\
Train a land-cover model on an extraction (manifest.json and its TFRecords) and write the model folder:
SavedModel, Earth-Engine-ready SavedModel, model.json, metrics.json and the confusion matrix. With no
options it trains on the demo extraction (out/demo/data) into out/demo/model. On Google Cloud, `python -m
pipelines.train` runs the same training as a Beam job. Examples: docs/training.md."""


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The configuration a command line asks for (SystemExit 2, with a message, for a bad one)."""
    parser = argparse.ArgumentParser(
        prog=prog("model.train"),
        usage="%(prog)s [options]",
        description=fill(DESCRIPTION),
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    parser._optionals.title = "general"
    add_arguments(parser)
    args, extras = parser.parse_known_args(argv)
    unknown = [arg.split("=", 1)[0] for arg in extras if arg.startswith("--") and len(arg) > 2]
    if unknown:
        known = sorted(flag for flag in parser._option_string_actions if flag.startswith("--"))
        parser.exit(2, f"error: {unknown_options_message(unknown, known)}\n")
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return TrainConfig(**vars(args))


def run(argv: Sequence[str] | None = None) -> int:
    """`python -m model.train` and `terrabeam train`: 0 trained, 2 bad input."""
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)  # first: TensorFlow reads its log level once, when it loads
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # not one line per SavedModel asset folder
    try:
        config = parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad option that argparse reported (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        train(config)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run())
