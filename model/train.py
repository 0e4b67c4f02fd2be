"""Train a land-cover model on an extraction and write the model folder.

    python -m model.train                                   # demo data of `python -m pipelines.extract`
    python -m model.train --data gs://bucket/data --output gs://bucket/model --epochs 30 --batch-size 32
    python -m model.train --mode classification --architecture classifier ...

Reads `<data>/manifest.json` (bands, patch size, classes, record files), trains, and exports the model
folder described in model/export.py.

Model selection (early stopping, the best epoch, the learning-rate plateaus) uses a selection set that
is not the scored split: the manifest's `selection` split when it has one, else `--selection-fraction`
of the training records, carved by a hash of each record's bytes (the same records on every run). The
`validation` split is then used once, to score the final model (metrics.json, confusion_matrix.png),
so its figures are what a user can expect on pixels the model never saw. `--selection-fraction 0`
selects on the validation split itself, as older versions did; its scores are then optimistic.

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

from model.architecture import build_model, resolve_spectral_indices
from model.callbacks import BestEpoch
from model.config import TrainConfig, add_arguments
from model.dataset import (
    FIT,
    SELECTION,
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
from model.losses import SegmentationLoss
from model.vocabulary import CLASSIFICATION, DEFAULT_ARCHITECTURE, LABEL_MAJORITY
from transforms.contracts.label_scheme import scheme_from_metadata
from transforms.contracts.schema import LABEL_NODATA
from transforms.runtime.command import HelpFormatter, fill, prog, quiet_start

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
SELECTION_SPLIT = "selection"  # an optional split of the manifest for model selection
CHECKPOINT = "checkpoints/best.weights.h5"
HISTORY = "history.json"
METRICS = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"

log = logging.getLogger("terrabeam.train")


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


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate at the end of each epoch to the logs (history.json), whatever the schedule."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


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


@dataclasses.dataclass
class _Split:
    """One role of the data in a run: its patches (unbatched), their statistics and where they come from."""

    name: str
    patches: tf.data.Dataset
    count: int


def _read_split(
    config: TrainConfig,
    manifest: dict[str, Any],
    reader: PatchReader,
    split: str,
    subset: str | None = None,
    *,
    training: bool = False,
) -> tuple[tf.data.Dataset, Any]:
    """A split's usable patches (optionally one side of the selection carve) and their statistics."""
    files = _split_files(manifest, split)
    cache: bool | str = {"memory": True, "none": False}.get(config.cache, config.cache)
    if isinstance(cache, str):
        cache = f"{cache}-{split}" + (f"-{subset}" if subset else "")
    patches = read_patches(
        files,
        reader,
        cache=cache,
        shuffle_files=training,
        seed=config.seed,
        compression=manifest_compression(manifest),
        subset=subset,
        selection_fraction=config.selection_fraction,
    )
    where = f"{config.data!r} ({split}{', ' + subset if subset else ''})"
    stats = _scan(patches, len(reader.schema.bands), reader.num_classes, where)
    # Filtering hides the size from tf.data; telling it lets Keras show progress and not warn.
    return patches.apply(tf.data.experimental.assert_cardinality(stats.patches)), stats


def _data_roles(
    config: TrainConfig, manifest: dict[str, Any], reader: PatchReader
) -> tuple[_Split, Any, _Split | None, _Split | None]:
    """(fit, fit statistics, selection, score): which records fit, select and score the model.

    See the module docstring; selection is None when there is nothing to select on but the training
    loss, score is None when the data has no validation split (the selection split is scored then).
    """
    splits = manifest["splits"]
    has = {name: bool(splits.get(name, {}).get("files")) for name in (SELECTION_SPLIT, VALIDATION_SPLIT)}
    if not splits.get(TRAIN_SPLIT, {}).get("files"):
        raise IncompatibleDataError(
            f"The data at {config.data!r} has no {TRAIN_SPLIT!r} records; re-run the extraction with "
            "more points or a smaller --validation-fraction."
        )
    carve = not has[SELECTION_SPLIT] and config.selection_fraction > 0
    fit_patches, fit_stats = _read_split(
        config, manifest, reader, TRAIN_SPLIT, FIT if carve else None, training=True
    )
    if not fit_stats.patches:
        raise IncompatibleDataError(
            f"--selection-fraction {config.selection_fraction} leaves no training patch to fit on; lower it."
        )
    fit = _Split(
        TRAIN_SPLIT + (f" without the {config.selection_fraction:g} selection carve" if carve else ""),
        fit_patches,
        fit_stats.patches,
    )
    selection = score = None
    if has[SELECTION_SPLIT]:
        patches, stats = _read_split(config, manifest, reader, SELECTION_SPLIT)
        selection = _Split(SELECTION_SPLIT, patches, stats.patches)
    elif carve:
        patches, stats = _read_split(config, manifest, reader, TRAIN_SPLIT, SELECTION)
        if not stats.patches:
            raise IncompatibleDataError(
                f"A --selection-fraction of {config.selection_fraction} of the {fit_stats.patches} training "
                "patches holds no usable patch; raise it, or pass 0 to select on the validation split."
            )
        name = f"{config.selection_fraction:g} of {TRAIN_SPLIT} by record hash"
        selection = _Split(name, patches, stats.patches)
    if has[VALIDATION_SPLIT]:
        patches, stats = _read_split(config, manifest, reader, VALIDATION_SPLIT)
        score = _Split(VALIDATION_SPLIT, patches, stats.patches)
        if selection is None:
            log.warning(
                "Model selection uses the %s split, which is also scored: its metrics are optimistic. "
                "Keep --selection-fraction above 0 for an honest score.",
                VALIDATION_SPLIT,
            )
            selection = score
    if selection is None:
        log.warning("No selection or validation split: early stopping and metrics use the training data.")
    return fit, fit_stats, selection, score


def _learning_rate(
    config: TrainConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The plateau schedule's starting rate, or a warm-up + cosine decay over all `--epochs` steps."""
    if config.schedule != "cosine":
        return config.learning_rate
    total = config.epochs * steps_per_epoch
    warmup = min(steps_per_epoch, total // 10)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10 if warmup else config.learning_rate,
        decay_steps=max(1, total - warmup),
        alpha=0.01,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def ema_momentum(momentum: float, total_steps: int) -> float:
    """The weight-averaging momentum for a run of `total_steps`: `momentum`, lowered so that the average's
    window (about 1 / (1 - momentum) steps) is at most a tenth of the run. Keras' average starts from the
    initial weights, so a short run (a test, the demo) would otherwise export weights it barely trained."""
    if not momentum:
        return 0.0
    return min(momentum, max(0.0, 1.0 - 10.0 / max(1, total_steps)))


def describe_loss(config: TrainConfig) -> str:
    """The loss in words, for model.json."""
    parts = ["class-weighted" if config.class_weight_power else "unweighted"]
    parts.append("focal loss" if config.loss == "focal" else "cross-entropy")
    if config.label_smoothing:
        parts.append(f"with label smoothing {config.label_smoothing:g}")
    if config.bootstrap:
        parts.append(f"with soft bootstrapping {config.bootstrap:g}")
    text = " ".join(parts)
    if config.region_loss != "none":
        text += {"dice": " + soft Dice", "lovasz": " + Lovász-softmax"}[config.region_loss]
    return text


def train(config: TrainConfig) -> dict[str, Any]:
    """Run training as configured; returns the model.json metadata (with the validation metrics)."""
    config.validate()
    started = time.monotonic()
    cpu_started = time.process_time()
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

    fit, stats, selection, score = _data_roles(config, manifest, reader)
    weights = class_weights_from_counts(stats.class_counts, config.class_weight_power)
    log.info(
        "Training on %d patches of %s (%d bands, %d classes); selecting on %s; class weights %s",
        stats.patches,
        config.data,
        len(schema.bands),
        len(classes),
        f"{selection.count} patches ({selection.name})" if selection else "the training loss",
        dict(zip(classes, weights)),
    )
    train_batches = make_batches(
        fit.patches,
        batch_size=config.batch_size,
        class_weights=weights,
        shuffle=True,
        augment_patches=True,
        shuffle_buffer=max(1, min(stats.patches, 4096)),
        seed=config.seed,
    )
    selection_batches = None
    if selection is not None:
        selection_batches = make_batches(
            selection.patches, batch_size=config.batch_size, class_weights=weights
        )

    architecture = config.architecture or DEFAULT_ARCHITECTURE[mode]
    indices: dict[str, tuple[int, int]] = {}
    if base_model is not None:
        model = base_model
        index_layer = next((layer for layer in model.layers if layer.name == "spectral_indices"), None)
        indices = {k: tuple(v) for k, v in index_layer.indices.items()} if index_layer is not None else {}
    else:
        options: dict[str, Any] = {"filters": config.filters}
        if config.depth is not None:
            options["depth"] = config.depth
        try:
            indices = resolve_spectral_indices(schema.bands, config.index_names(), config.roles())
            if indices:
                options["indices"] = indices
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
    steps_per_epoch = max(1, -(-stats.patches // config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    ema = ema_momentum(config.ema, total_steps)
    if ema != config.ema:
        log.info(
            "Weight averaging: momentum %.3g instead of %g for a run of %d steps",
            ema,
            config.ema,
            total_steps,
        )
    model.compile(
        optimizer=keras.optimizers.Adam(
            _learning_rate(config, steps_per_epoch),
            use_ema=bool(ema),
            ema_momentum=ema or 0.99,
        ),
        loss=SegmentationLoss(
            len(classes),
            label_smoothing=config.label_smoothing,
            bootstrap=config.bootstrap,
            focal_gamma=2.0 if config.loss == "focal" else 0.0,
            region=config.region_loss,
        ),
        metrics=[
            keras.metrics.MeanIoU(
                len(classes), sparse_y_pred=False, ignore_class=LABEL_NODATA, name="mean_iou"
            )
        ],
    )

    tf.io.gfile.makedirs(join_path(config.output, "checkpoints"))
    checkpoint = join_path(config.output, CHECKPOINT)
    monitor = "val_loss" if selection_batches is not None else "loss"
    callbacks: list[keras.callbacks.Callback] = [LogLearningRate()]
    if ema:
        # The averaged weights are the ones validated and checkpointed (so the best epoch is theirs).
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks.append(
        keras.callbacks.ModelCheckpoint(
            checkpoint, monitor=monitor, save_best_only=True, save_weights_only=True
        )
    )
    if config.schedule == "plateau":
        callbacks += [
            keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience),
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, factor=0.5, patience=max(1, config.patience // 2)
            ),
        ]
    callbacks.append(BestEpoch(monitor, config.epochs))
    if config.max_minutes:
        callbacks.append(TimeLimit(config.max_minutes - (time.monotonic() - started) / 60))
    history = model.fit(
        train_batches,
        validation_data=selection_batches,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself
        verbose=config.verbose,
    )
    losses = history.history[monitor]
    best_epoch = min(range(len(losses)), key=losses.__getitem__)
    if tf.io.gfile.exists(checkpoint):
        model.load_weights(checkpoint)
    fit_seconds = time.monotonic() - started
    fit_cpu_seconds = time.process_time() - cpu_started

    scored = score or selection or _Split(TRAIN_SPLIT, fit.patches, fit.count)
    metrics = summarize(
        confusion_matrix(model, make_batches(scored.patches, batch_size=64), len(classes)), classes
    )
    metrics["split"] = scored.name
    if selection is not None and selection is not scored:
        chosen = summarize(
            confusion_matrix(model, make_batches(selection.patches, batch_size=64), len(classes)), classes
        )
        metrics["selection"] = {
            k: chosen[k]
            for k in ("split", "pixels", "overall_accuracy", "mean_iou", "per_class_iou")
            if k in chosen
        }
        metrics["selection"]["split"] = selection.name
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
        "spectral_indices": {name: [schema.bands[a], schema.bands[b]] for name, (a, b) in indices.items()},
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
            "selection": {"split": selection.name, "patches": selection.count} if selection else None,
            "epochs_run": len(losses),
            "best_epoch": best_epoch + 1,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "schedule": config.schedule,
            "ema": ema,
            "class_weights": dict(zip(classes, weights)),
            "loss": describe_loss(config),
            "seed": config.seed,
            "seconds": round(fit_seconds, 1),
            "cpu_seconds": round(fit_cpu_seconds, 1),
        },
    }
    if "selection" in metrics:
        metadata["metrics"]["selection_mean_iou"] = metrics["selection"]["mean_iou"]
    export_model(model, config.output, metadata)
    log.info(
        "Wrote %s: %s accuracy %s, mean IoU %s (best epoch %d of %d).",
        config.output,
        metrics["split"],
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
    return TrainConfig(**vars(parser.parse_args(argv)))


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
