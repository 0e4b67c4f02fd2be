"""Train a land-cover model on an extraction and write the model folder.

    python -m model.train                                   # demo data of `python -m pipelines.extract`
    python -m model.train --data gs://bucket/data --output gs://bucket/model --epochs 30 --batch-size 32
    python -m model.train --mode classification --architecture classifier ...

Reads `<data>/manifest.json` (bands, patch size, classes, record files), trains with early stopping on
the validation loss, keeps the best epoch, evaluates it on the validation split (metrics.json,
confusion_matrix.png) and exports the model folder described in model/export.py.

Class imbalance: a class-weighted loss. Each labelled pixel's cross-entropy is weighted by
(median class frequency / its class frequency) ** 0.5 (`--class-weight-power`), counted on the training
pixels. Keras' `class_weight` argument only supports one label per sample, whereas per-pixel sample
weights also carry the nodata mask (weight 0); the square root lifts rare classes (built, snow, flooded
vegetation: ~1% of pixels) enough to be predicted, without the over-prediction full inverse frequency
causes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from model.architecture import (
    CLASSIFICATION,
    DEFAULT_ARCHITECTURE,
    MODES,
    SEGMENTATION,
    build_model,
)
from model.callbacks import BestEpoch
from model.command import HelpFormatter, fill, prog, quiet_start
from model.dataset import (
    LABEL_FEATURE,
    LABEL_MAJORITY,
    PatchReader,
    check_data_matches_model,
    class_weights_from_counts,
    load_data_manifest,
    make_batches,
    manifest_compression,
    manifest_schema,
    read_patches,
    scan_statistics,
)
from model.errors import IncompatibleDataError, ModelError
from model.evaluate import confusion_matrix, plot_confusion_matrix, summarize
from model.export import export_model, join_path, load_keras_model, load_model_metadata, write_json
from transforms.label_scheme import scheme_from_metadata
from transforms.schema import LABEL_NODATA

DEFAULT_DATA = "out/demo/data"
DEFAULT_OUTPUT = "out/demo/model"
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
CHECKPOINT = "checkpoints/best.weights.h5"
HISTORY = "history.json"
METRICS = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"

log = logging.getLogger("terrabeam.train")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (the CLI flags, one to one)."""

    data: str = DEFAULT_DATA
    output: str = DEFAULT_OUTPUT
    mode: str = SEGMENTATION
    architecture: str | None = None  # default per mode: unet / classifier
    filters: int = 32
    depth: int | None = None  # the architecture's default
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 1e-3
    patience: int = 6
    class_weight_power: float = 0.5
    label_source: str = LABEL_MAJORITY
    max_minutes: float | None = None
    init_model: str | None = None
    seed: int = 0
    deterministic: bool = False
    cache: str = "memory"  # "memory", "none" or a file prefix
    verbose: int = 2

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ModelError(f"--mode must be one of {list(MODES)}, got {self.mode!r}.")
        for name in ("epochs", "batch_size", "filters"):
            if getattr(self, name) < 1:
                raise ModelError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise ModelError(f"--learning-rate must be positive, got {self.learning_rate}.")
        if self.patience < 0 or self.class_weight_power < 0:
            raise ModelError("--patience and --class-weight-power cannot be negative.")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ModelError(f"--max-minutes must be positive, got {self.max_minutes}.")


class TimeLimit(keras.callbacks.Callback):
    """Stops training before an epoch that would end past the time budget (the longest epoch so far)."""

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds = minutes * 60
        self.start = time.monotonic()
        self.longest = 0.0
        self.epoch_start = self.start

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self.epoch_start)
        if now - self.start + self.longest > self.seconds:
            self.model.stop_training = True
            log.info("Time budget of %.1f min reached after epoch %d.", self.seconds / 60, epoch + 1)


def _split_files(manifest: dict[str, Any], split: str) -> list[str]:
    files = manifest["splits"].get(split, {}).get("files", [])
    missing = [f for f in files[:50] if not tf.io.gfile.exists(f)]
    if missing:
        raise IncompatibleDataError(
            f"The manifest lists {split} records that do not exist, e.g. {missing[0]!r}; "
            "re-run the extraction or copy the whole data folder."
        )
    return files


def _scan(patches: tf.data.Dataset, num_bands: int, num_classes: int, where: str):
    """The statistics pass, the first full read: turns TensorFlow's parse errors into clear ones."""
    try:
        return scan_statistics(patches, num_bands, num_classes)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        first = str(e.message).strip().splitlines()[0][:300]
        raise IncompatibleDataError(
            f"The records of {where} do not match the manifest's schema (bands, patch size, label, "
            f"compression): {first}"
        ) from None
    except tf.errors.NotFoundError as e:
        raise IncompatibleDataError(f"A record file of {where} cannot be read: {e.message}") from None


def train(config: TrainConfig) -> dict[str, Any]:
    """Run training as configured; returns the model.json metadata (with the validation metrics)."""
    config.validate()
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    manifest = load_data_manifest(config.data)
    schema = manifest_schema(manifest)
    scheme = scheme_from_metadata(manifest)
    classes = list(scheme.names)
    base_model = None
    mode = config.mode
    if config.init_model:
        info = load_model_metadata(config.init_model)
        check_data_matches_model(info, manifest)
        mode = info["mode"]
        base_model = load_keras_model(config.init_model)
    if len(classes) < 2:
        raise IncompatibleDataError(
            f"The manifest lists {len(classes)} class(es); a land-cover model needs at least 2."
        )
    # A per-patch label feature only exists for classification; segmentation reads the label raster.
    label_source = config.label_source if mode == CLASSIFICATION else LABEL_MAJORITY
    reader = PatchReader(schema, len(classes), mode, label_source)

    train_files = _split_files(manifest, TRAIN_SPLIT)
    if not train_files:
        raise IncompatibleDataError(
            f"The data at {config.data!r} has no {TRAIN_SPLIT!r} records; re-run the extraction with "
            "more points or a smaller --validation-fraction."
        )
    val_files = _split_files(manifest, VALIDATION_SPLIT)
    compression = manifest_compression(manifest)
    cache: bool | str = {"memory": True, "none": False}.get(config.cache, config.cache)
    train_patches = read_patches(
        train_files, reader, cache=cache, shuffle_files=True, seed=config.seed, compression=compression
    )
    stats = _scan(train_patches, len(schema.bands), len(classes), f"{config.data!r} ({TRAIN_SPLIT})")
    # Filtering hides the size from tf.data; telling it lets Keras show progress and not warn.
    train_patches = train_patches.apply(tf.data.experimental.assert_cardinality(stats.patches))
    weights = class_weights_from_counts(stats.class_counts, config.class_weight_power)
    log.info(
        "Training on %d patches of %s (%d bands, %d classes); class weights %s",
        stats.patches,
        config.data,
        len(schema.bands),
        len(classes),
        dict(zip(classes, weights)),
    )
    train_batches = make_batches(
        train_patches,
        batch_size=config.batch_size,
        class_weights=weights,
        shuffle=True,
        augment_patches=True,
        shuffle_buffer=max(1, min(stats.patches, 4096)),
        seed=config.seed,
    )
    val_batches = None
    if val_files:
        val_cache = cache if cache is True or not cache else f"{cache}-validation"
        val_patches = read_patches(val_files, reader, cache=val_cache, compression=compression)
        val_stats = _scan(
            val_patches, len(schema.bands), len(classes), f"{config.data!r} ({VALIDATION_SPLIT})"
        )
        val_patches = val_patches.apply(tf.data.experimental.assert_cardinality(val_stats.patches))
        val_batches = make_batches(val_patches, batch_size=config.batch_size, class_weights=weights)
    else:
        log.warning("No validation split: early stopping and metrics use the training data.")

    architecture = config.architecture or DEFAULT_ARCHITECTURE[mode]
    if base_model is not None:
        model = base_model
    else:
        options: dict[str, Any] = {"filters": config.filters}
        if config.depth is not None:
            options["depth"] = config.depth
        try:
            model = build_model(
                architecture,
                len(schema.bands),
                len(classes),
                mean=stats.mean,
                variance=stats.variance,
                **options,
            )
        except (ValueError, TypeError) as e:
            raise ModelError(f"Cannot build {architecture!r}: {e}") from None
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(ignore_class=LABEL_NODATA),
        metrics=[
            keras.metrics.MeanIoU(
                len(classes), sparse_y_pred=False, ignore_class=LABEL_NODATA, name="mean_iou"
            )
        ],
    )

    tf.io.gfile.makedirs(join_path(config.output, "checkpoints"))
    checkpoint = join_path(config.output, CHECKPOINT)
    monitor = "val_loss" if val_batches is not None else "loss"
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.ModelCheckpoint(
            checkpoint, monitor=monitor, save_best_only=True, save_weights_only=True
        ),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5, patience=max(1, config.patience // 2)),
        BestEpoch(monitor, config.epochs),
    ]
    if config.max_minutes:
        callbacks.append(TimeLimit(config.max_minutes - (time.monotonic() - started) / 60))
    history = model.fit(
        train_batches,
        validation_data=val_batches,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
        verbose=config.verbose,
    )
    losses = history.history[monitor]
    best_epoch = min(range(len(losses)), key=losses.__getitem__)
    if tf.io.gfile.exists(checkpoint):
        model.load_weights(checkpoint)

    eval_batches = (
        val_batches if val_batches is not None else make_batches(train_patches, batch_size=config.batch_size)
    )
    metrics = summarize(confusion_matrix(model, eval_batches, len(classes)), classes)
    metrics["split"] = VALIDATION_SPLIT if val_batches is not None else TRAIN_SPLIT
    write_json(join_path(config.output, METRICS), metrics)
    plot_confusion_matrix(
        metrics["confusion_matrix"],
        scheme,
        join_path(config.output, CONFUSION_PNG),
        title=f"Confusion matrix, {metrics['split']} pixels ({metrics['pixels']})",
    )
    write_json(
        join_path(config.output, HISTORY), {k: [float(v) for v in vs] for k, vs in history.history.items()}
    )

    metadata = {
        "mode": mode,
        "bands": list(schema.bands),
        "classes": classes,
        "label_scheme": scheme.to_json(),
        "patch_size": schema.patch_size,
        "crs": manifest.get("crs") or "",
        "scale": float(manifest.get("scale") or 0.0),
        "architecture": model.name,
        "metrics": {
            "split": metrics["split"],
            "overall_accuracy": metrics["overall_accuracy"],
            "mean_iou": metrics["mean_iou"],
            "per_class_iou": metrics["per_class_iou"],
            f"best_{monitor}": round(float(losses[best_epoch]), 6),
        },
        "training": {
            "data": config.data,
            "patches": stats.patches,
            "epochs_run": len(losses),
            "best_epoch": best_epoch + 1,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "class_weights": dict(zip(classes, weights)),
            "loss": "class-weighted sparse categorical cross-entropy",
            "seed": config.seed,
            "seconds": round(time.monotonic() - started, 1),
        },
    }
    export_model(model, config.output, metadata)
    log.info(
        "Wrote %s: validation accuracy %s, mean IoU %s (best epoch %d of %d).",
        config.output,
        metrics["overall_accuracy"],
        metrics["mean_iou"],
        best_epoch + 1,
        len(losses),
    )
    return load_model_metadata(config.output)


DESCRIPTION = """\
Train a land-cover model on an extraction (manifest.json and its TFRecords) and write the model folder:
SavedModel, Earth-Engine-ready SavedModel, model.json, metrics.json and the confusion matrix. With no
options it trains on the demo extraction (out/demo/data) into out/demo/model. On Google Cloud, `python -m
pipelines.train` runs the same training as a Beam job. Examples: README.md, "Training"."""


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog=prog("model.train"),
        usage="%(prog)s [options]",
        description=fill(DESCRIPTION),
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    p._optionals.title = "general"
    group = p.add_argument_group("data and model folder")
    group.add_argument("--data", default=defaults.data, help="Folder with manifest.json (local or gs://).")
    group.add_argument("--output", default=defaults.output, help="Model folder to write (local or gs://).")
    group.add_argument(
        "--init-model", default=None, help="Continue from this model folder (same bands/classes)."
    )
    group = p.add_argument_group("model")
    group.add_argument(
        "--mode", choices=MODES, default=defaults.mode, help="Per-pixel maps or one label per patch."
    )
    group.add_argument("--architecture", default=None, help="unet (default), minimal, or classifier.")
    group.add_argument("--filters", type=int, default=defaults.filters, help="Filters of the first level.")
    group.add_argument("--depth", type=int, default=None, help="Poolings of unet/classifier.")
    group = p.add_argument_group("training")
    group.add_argument(
        "--epochs", type=int, default=defaults.epochs, help="Most epochs (early stopping may end sooner)."
    )
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="Patches per batch.")
    group.add_argument(
        "--learning-rate", type=float, default=defaults.learning_rate, help="Adam learning rate."
    )
    group.add_argument(
        "--patience", type=int, default=defaults.patience, help="Epochs without a better val loss."
    )
    group.add_argument(
        "--class-weight-power",
        type=float,
        default=defaults.class_weight_power,
        help="Class weight = (median freq / freq) ** power; 0 disables class weighting.",
    )
    group.add_argument(
        "--label-source",
        choices=(LABEL_MAJORITY, LABEL_FEATURE),
        default=defaults.label_source,
        help="Classification mode: majority class of the label patch, or the label as one value per patch.",
    )
    group.add_argument(
        "--max-minutes", type=float, default=None, help="Stop training within this time budget."
    )
    group.add_argument(
        "--seed", type=int, default=defaults.seed, help="Seed of weights, shuffling and augmentation."
    )
    group.add_argument("--deterministic", action="store_true", help="Deterministic TensorFlow ops (slower).")
    group.add_argument(
        "--cache", default=defaults.cache, help="memory, none, or a file prefix for the tf.data cache."
    )
    p.add_argument(
        "--verbose",
        type=int,
        nargs="?",
        const=defaults.verbose,
        default=defaults.verbose,
        help="Keras fit output: 0 none, 1 a progress bar, 2 a line per epoch. Given at all, it also shows "
        "TensorFlow's start-up lines and library warnings.",
    )
    args = p.parse_args(argv)
    return TrainConfig(**vars(args))


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)
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
