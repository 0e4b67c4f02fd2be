"""The stages of a training run, in the order `model.train.train` runs them:

    start(config)                          -> Run: random generators seeded, the clocks started
    load_training_data(config)             -> TrainingData: the manifest, which records fit, select and
                                              score the model, the fit records' statistics, class weights
    build_model(config, data)              -> keras.Model: new (normalized with those statistics) or the
                                              --init-model
    fit(config, data, model, run)          -> Fitted: the model at its best epoch, and its history
    score(data, fitted)                    -> Report: metrics of the scored split (and the selection's)
    export(config, data, fitted, report)   -> the model folder; returns its model.json

Each stage takes the configuration and what the stages before it returned, nothing else. See
model/train.py for what selection and scoring mean and why the loss is class-weighted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from model import architecture
from model.callbacks import AveragedWeights, BestWeights, LogLearningRate, TimeLimit
from model.config import TrainConfig
from model.dataset import (
    FIT,
    SELECTION,
    DataStatistics,
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
from model.vocabulary import (
    AUTO_PRECISION,
    CLASSIFICATION,
    DEFAULT_ARCHITECTURE,
    FLOAT32,
    LABEL_MAJORITY,
    MIXED_BFLOAT16,
    XLA_AUTO_STEPS,
)
from transforms.contracts.label_scheme import LabelScheme, scheme_from_metadata
from transforms.contracts.schema import LABEL_NODATA, PatchSchema
from transforms.runtime.cpu import has_native_bfloat16

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
SELECTION_SPLIT = "selection"  # an optional split of the manifest for model selection
CHECKPOINT = "checkpoints/best.weights.h5"
HISTORY = "history.json"
METRICS = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"
# Batches of the scoring passes: no gradients, so larger than training's.
SCORE_BATCH_SIZE = 64
# The most patches the training shuffle holds at once.
MAX_SHUFFLE_BUFFER = 4096

log = logging.getLogger("terrabeam.train")


# --- start ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Run:
    """When the run started, by the wall clock and by this process's CPU time."""

    started: float
    cpu_started: float

    def minutes(self) -> float:
        return (time.monotonic() - self.started) / 60


def start(config: TrainConfig) -> Run:
    """Seed every random generator (and make TensorFlow's ops deterministic if asked); start the clocks."""
    run = Run(time.monotonic(), time.process_time())
    keras.utils.set_random_seed(config.seed)
    _set_op_determinism(config.deterministic)
    return run


def _set_op_determinism(on: bool) -> None:
    """Deterministic ops exactly when asked: TensorFlow has no public switch back off (2.21), so a process
    that trained with --deterministic before (a notebook, a test session) would stay deterministic, and
    Keras would silently refuse XLA for every later run."""
    from tensorflow.python.framework import config as tf_config

    if on:
        tf.config.experimental.enable_op_determinism()
    elif tf_config.is_op_determinism_enabled():
        tf_config.disable_op_determinism()


# --- load_training_data ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Split:
    """One role of the data in a run: its patches (unbatched), how many, and where they come from."""

    name: str
    patches: tf.data.Dataset
    count: int


class Roles(NamedTuple):
    """Which records fit, select and score the model (see `data_roles`)."""

    fit: Split
    statistics: DataStatistics  # of the fit patches
    selection: Split | None
    score: Split | None


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The data of a run: what the manifest describes and the role of each of its records."""

    manifest: dict[str, Any]
    schema: PatchSchema
    scheme: LabelScheme
    mode: str  # the configured mode, or the --init-model's
    fit: Split
    statistics: DataStatistics  # of the fit patches: the normalization and the class weights
    selection: Split | None  # selects the model (checkpoint, early stopping); None: the training loss does
    score: Split | None  # scored once, at the end; None: the selection split is scored
    class_weights: list[float]

    @property
    def classes(self) -> list[str]:
        return list(self.scheme.names)

    @property
    def scored(self) -> Split:
        """The split the metrics are of: validation, else the selection split, else the fit records."""
        return self.score or self.selection or Split(TRAIN_SPLIT, self.fit.patches, self.fit.count)


def load_training_data(config: TrainConfig) -> TrainingData:
    """Read the manifest at --data (checked against the --init-model's bands and classes), pick the
    records that fit, select and score the model, and scan the fit records for their statistics."""
    manifest = load_data_manifest(config.data)
    schema = manifest_schema(manifest)
    scheme = scheme_from_metadata(manifest)
    mode = config.mode
    if config.init_model:
        info = load_model_metadata(config.init_model)
        check_data_matches_model(info, manifest)
        mode = info["mode"]
    if len(scheme.names) < 2:
        raise IncompatibleDataError(
            f"The manifest lists {len(scheme.names)} class(es); a land-cover model needs at least 2."
        )
    # A per-patch label feature only exists for classification; segmentation reads the label raster.
    label_source = config.label_source if mode == CLASSIFICATION else LABEL_MAJORITY
    reader = PatchReader(schema, len(scheme.names), mode, label_source)
    fit, statistics, selection, score = data_roles(config, manifest, reader)
    weights = class_weights_from_counts(statistics.class_counts, config.class_weight_power)
    log.info(
        "Training on %d patches of %s (%d bands, %d classes); selecting on %s; class weights %s",
        statistics.patches,
        config.data,
        len(schema.bands),
        len(scheme.names),
        f"{selection.count} patches ({selection.name})" if selection else "the training loss",
        dict(zip(scheme.names, weights)),
    )
    return TrainingData(manifest, schema, scheme, mode, fit, statistics, selection, score, weights)


def data_roles(config: TrainConfig, manifest: dict[str, Any], reader: PatchReader) -> Roles:
    """Which records fit, select and score the model.

    The manifest's selection split selects when it has one, else --selection-fraction of the training
    records, carved by record hash; the validation split is scored. `selection` is None when there is
    nothing to select on but the training loss, `score` is None when the data has no validation split
    (the selection split is scored then).
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
    fit = Split(
        TRAIN_SPLIT + (f" without the {config.selection_fraction:g} selection carve" if carve else ""),
        fit_patches,
        fit_stats.patches,
    )
    selection = score = None
    if has[SELECTION_SPLIT]:
        patches, stats = _read_split(config, manifest, reader, SELECTION_SPLIT)
        selection = Split(SELECTION_SPLIT, patches, stats.patches)
    elif carve:
        patches, stats = _read_split(config, manifest, reader, TRAIN_SPLIT, SELECTION)
        if not stats.patches:
            raise IncompatibleDataError(
                f"A --selection-fraction of {config.selection_fraction} of the {fit_stats.patches} training "
                "patches holds no usable patch; raise it, or pass 0 to select on the validation split."
            )
        name = f"{config.selection_fraction:g} of {TRAIN_SPLIT} by record hash"
        selection = Split(name, patches, stats.patches)
    if has[VALIDATION_SPLIT]:
        patches, stats = _read_split(config, manifest, reader, VALIDATION_SPLIT)
        score = Split(VALIDATION_SPLIT, patches, stats.patches)
        if selection is None:
            log.warning(
                "Model selection uses the %s split, which is also scored: its metrics are optimistic. "
                "Keep --selection-fraction above 0 for an honest score.",
                VALIDATION_SPLIT,
            )
            selection = score
    if selection is None:
        log.warning("No selection or validation split: early stopping and metrics use the training data.")
    return Roles(fit, fit_stats, selection, score)


def _read_split(
    config: TrainConfig,
    manifest: dict[str, Any],
    reader: PatchReader,
    split: str,
    subset: str | None = None,
    *,
    training: bool = False,
) -> tuple[tf.data.Dataset, DataStatistics]:
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


def _split_files(manifest: dict[str, Any], split: str) -> list[str]:
    files = manifest["splits"].get(split, {}).get("files", [])
    missing = [f for f in files[:50] if not tf.io.gfile.exists(f)]
    if missing:
        raise IncompatibleDataError(
            f"The manifest lists {split} records that do not exist, e.g. {missing[0]!r}; "
            "re-run the extraction or copy the whole data folder."
        )
    return files


def _scan(patches: tf.data.Dataset, num_bands: int, num_classes: int, where: str) -> DataStatistics:
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


# --- build_model ---------------------------------------------------------------------------------------


def build_model(config: TrainConfig, data: TrainingData) -> keras.Model:
    """The model to fit, computing in --precision: the --init-model as it was saved, or a new one of the
    configured architecture whose normalization holds the fit patches' band statistics, with the spectral
    indices the bands allow."""
    model = _new_or_initial_model(config, data)
    precision = resolve_precision(config)
    return model if precision == FLOAT32 else architecture.with_precision(model, precision)


def resolve_precision(config: TrainConfig) -> str:
    """--precision, with auto resolved: mixed_bfloat16 where the CPU has native bfloat16 and the run does
    not ask for deterministic ops (bit-for-bit reruns are a float32 promise), float32 elsewhere."""
    if config.precision != AUTO_PRECISION:
        return config.precision
    return MIXED_BFLOAT16 if has_native_bfloat16() and not config.deterministic else FLOAT32


def _new_or_initial_model(config: TrainConfig, data: TrainingData) -> keras.Model:
    if config.init_model:
        return load_keras_model(config.init_model)
    name = config.architecture or DEFAULT_ARCHITECTURE[data.mode]
    options: dict[str, Any] = {"filters": config.filters}
    if config.depth is not None:
        options["depth"] = config.depth
    if config.dropout is not None:
        options["dropout"] = config.dropout
    try:
        roles = config.roles()
        indices = architecture.resolve_spectral_indices(data.schema.bands, config.index_names(), roles)
        if indices:
            options["indices"] = indices
            _log_indices(indices, data.schema.bands, given=roles)
        return architecture.build_model(
            name,
            len(data.schema.bands),
            len(data.classes),
            mean=data.statistics.mean,
            variance=data.statistics.variance,
            **options,
        )
    except (ValueError, TypeError) as e:
        raise ModelError(f"Cannot build {name!r}: {e}") from None


def _log_indices(indices: dict[str, tuple[int, int]], bands: Sequence[str], given: dict[str, str]) -> None:
    """Say which bands each index reads: names such as B4 and B8 are read as Sentinel-2's, which is
    wrong for Landsat's bands of the same names, and only the log and model.json show it."""
    read = ", ".join(f"{name} = ({bands[a]}, {bands[b]})" for name, (a, b) in indices.items())
    guessed = sorted({bands[i] for pair in indices.values() for i in pair} - set(given.values()))
    log.info(
        "Spectral indices: %s.%s",
        read,
        f" Bands {', '.join(guessed)} were read by name (Sentinel-2's, or the role names); name another "
        "sensor's bands with --band-roles, or turn the indices off with --spectral-indices none."
        if guessed
        else "",
    )


# --- fit -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A fitted model, with the best epoch's weights (the averaged ones under --ema), and how it got there."""

    model: keras.Model
    history: dict[str, list[float]]  # per epoch: losses, selection losses, mean IoU, learning rate
    monitor: str  # what selected the best epoch: "val_loss" (the selection split) or "loss"
    best_epoch: int  # 0-based
    ema: float  # the weight-averaging momentum it ran with (0: none)
    xla: bool  # whether its steps were compiled with XLA
    precision: str  # what it computed in while fitting (--precision resolved); it is exported in float32
    seconds: float  # from the start of the run to the end of fitting
    cpu_seconds: float

    @property
    def epochs_run(self) -> int:
        return len(self.history[self.monitor])

    @property
    def best_loss(self) -> float:
        return self.history[self.monitor][self.best_epoch]


def fit(config: TrainConfig, data: TrainingData, model: keras.Model, run: Run) -> Fitted:
    """Compile and fit the model on the fit records, select its best epoch on the selection records
    (checkpointed in --output), and restore that epoch's weights."""
    # Full batches only, when there is one: a single batch shape, so the step is traced (or compiled)
    # once; each epoch leaves out fewer than a batch of patches, others each epoch as the shuffle moves.
    full_batches = data.statistics.patches >= config.batch_size
    train_batches = make_batches(
        data.fit.patches,
        batch_size=config.batch_size,
        class_weights=data.class_weights,
        shuffle=True,
        augment_patches=True,
        shuffle_buffer=max(1, min(data.statistics.patches, MAX_SHUFFLE_BUFFER)),
        seed=config.seed,
        drop_remainder=full_batches,
        radiometric=config.radiometric_augmentation,
        band_std=[math.sqrt(v) for v in data.statistics.variance],
        # One iterator for the whole fit (Keras keeps it when told the steps of an epoch): a new one each
        # epoch refilled the shuffle buffer before the epoch's first step (~30 ms an epoch on 2 cores);
        # repeated, the prefetch fills it while the last steps of the epoch before run.
        repeat=True,
    )
    selection_batches = None
    if data.selection is not None:
        selection_batches = make_batches(
            data.selection.patches, batch_size=config.batch_size, class_weights=data.class_weights
        )
    steps_per_epoch = data.statistics.patches // config.batch_size if full_batches else 1
    total_steps = config.epochs * steps_per_epoch
    ema = ema_momentum(config.ema, total_steps)
    if ema != config.ema:
        log.info(
            "Weight averaging: momentum %.3g instead of %g for a run of %d steps",
            ema,
            config.ema,
            total_steps,
        )
    xla_asked = use_xla(config.xla, total_steps)
    precision = resolve_precision(config)
    log.info("Training computes in %s (--precision %s).", precision, config.precision)
    model.compile(
        jit_compile=xla_asked,
        optimizer=optimizer(config, model, steps_per_epoch, ema),
        loss=SegmentationLoss(
            len(data.classes),
            label_smoothing=config.label_smoothing,
            bootstrap=config.bootstrap,
            focal_gamma=2.0 if config.loss == "focal" else 0.0,
            region=config.region_loss,
        ),
        metrics=[
            keras.metrics.MeanIoU(
                len(data.classes), sparse_y_pred=False, ignore_class=LABEL_NODATA, name="mean_iou"
            )
        ],
    )
    # Keras (TensorFlow, no distribution strategy) would create the optimizer's slots and averages inside
    # the first traced step, ~30 ms a variable there and a second trace; built here they cost ~3 ms each
    # (with full batches, the fit's fixed part on Google's sample went from ~10.8 to ~3.0 CPU-s).
    model.optimizer.build(model.trainable_variables)
    if xla_asked and not model.jit_compile:  # Keras' refusal is a Python warning
        reason = "--deterministic ops" if config.deterministic else "a layer of the model"
        log.warning("XLA compilation is off for this run: %s does not support it.", reason)
    tf.io.gfile.makedirs(join_path(config.output, "checkpoints"))
    checkpoint = join_path(config.output, CHECKPOINT)
    monitor = "val_loss" if selection_batches is not None else "loss"
    best = BestWeights(monitor, checkpoint, epochs=config.epochs)
    history = model.fit(
        train_batches,
        validation_data=selection_batches,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=_callbacks(config, monitor, best, ema, run),
        shuffle=False,  # the dataset shuffles itself
        verbose=config.verbose,
    )
    if best.best_epoch is None:
        raise ModelError(
            f"Training diverged: no epoch had a finite {monitor} "
            f"({_divergence(best, history.history)}), so there are no weights worth keeping. Lower "
            "--learning-rate, and check the training data for NaN or infinite pixels."
        )
    if best.diverged_epoch is not None:
        log.warning(
            "Training stopped after epoch %d, whose training loss was not finite; the model is epoch %d's.",
            best.diverged_epoch + 1,
            best.best_epoch + 1,
        )
    return Fitted(
        # Scored and exported in float32 whatever it trained in: what prediction and Earth Engine run.
        model=model if precision == FLOAT32 else architecture.with_precision(model, FLOAT32),
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        monitor=monitor,
        best_epoch=best.best_epoch,  # the epoch whose weights BestWeights put back
        ema=ema,
        xla=bool(model.jit_compile),  # what Keras compiled, not what was asked
        precision=precision,
        seconds=time.monotonic() - run.started,
        cpu_seconds=time.process_time() - run.cpu_started,
    )


def optimizer(
    config: TrainConfig, model: keras.Model, steps_per_epoch: int, ema: float
) -> keras.optimizers.Optimizer:
    """Adam, or AdamW under --weight-decay (kernels only: biases and the batch normalization's scales
    and offsets, every weight of rank 1, are not decayed)."""
    rate = learning_rate(config, steps_per_epoch)
    averaging = {"use_ema": bool(ema), "ema_momentum": ema or 0.99}
    if not config.weight_decay:
        return keras.optimizers.Adam(rate, **averaging)
    adamw = keras.optimizers.AdamW(rate, weight_decay=config.weight_decay, **averaging)
    adamw.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) <= 1])
    return adamw


def _callbacks(
    config: TrainConfig, monitor: str, best: BestWeights, ema: float, run: Run
) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = [LogLearningRate()]
    if ema:
        # The averaged weights are the ones validated and kept (so the best epoch is theirs).
        callbacks.append(AveragedWeights())
    # Reports the best epoch after each, puts its weights back in the model when the fit ends, and
    # writes the checkpoint.
    callbacks.append(best)
    if config.schedule == "plateau":
        callbacks += [
            keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience),
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, factor=0.5, patience=max(1, config.patience // 2)
            ),
        ]
    if config.max_minutes:
        callbacks.append(TimeLimit(config.max_minutes - run.minutes()))
    return callbacks


def _divergence(best: BestWeights, history: dict[str, list[float]]) -> str:
    """Where the losses stopped being finite, for the error of a run with no usable epoch."""
    if best.diverged_epoch is not None:
        return f"the training loss was {history['loss'][best.diverged_epoch]} after epoch {best.diverged_epoch + 1}"
    return f"{best.monitor} was never finite in {len(history.get(best.monitor, []))} epoch(s)"


def learning_rate(
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


def use_xla(setting: str, total_steps: int) -> bool:
    """Whether the steps are compiled with XLA: --xla on/off, or auto by the run's length."""
    if setting == "auto":
        return total_steps >= XLA_AUTO_STEPS
    return setting == "on"


def ema_momentum(momentum: float, total_steps: int) -> float:
    """The weight-averaging momentum for a run of `total_steps`: `momentum`, lowered so that the average's
    window (about 1 / (1 - momentum) steps) is at most a tenth of the run. Keras' average starts from the
    initial weights, so a short run (a test, the demo) would otherwise export weights it barely trained."""
    if not momentum:
        return 0.0
    return min(momentum, max(0.0, 1.0 - 10.0 / max(1, total_steps)))


# --- score -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Report:
    """What the fitted model scores: metrics.json."""

    # The scored split's confusion matrix, accuracy and IoU, its name under "split", and under
    # "selection" a summary of the selection split when that is another split.
    metrics: dict[str, Any]


def score(data: TrainingData, fitted: Fitted) -> Report:
    """Score the fitted model once on the scored split, and summarize it on the selection split."""
    scored = data.scored
    metrics = _metrics(fitted.model, scored, data.classes)
    metrics["split"] = scored.name
    if data.selection is not None and data.selection is not scored:
        chosen = _metrics(fitted.model, data.selection, data.classes)
        metrics["selection"] = {
            k: chosen[k]
            for k in ("split", "pixels", "overall_accuracy", "mean_iou", "per_class_iou")
            if k in chosen
        }
        metrics["selection"]["split"] = data.selection.name
    return Report(metrics)


def _metrics(model: keras.Model, split: Split, classes: list[str]) -> dict[str, Any]:
    batches = make_batches(split.patches, batch_size=SCORE_BATCH_SIZE)
    return summarize(confusion_matrix(model, batches, len(classes)), classes)


# --- export ----------------------------------------------------------------------------------------------


def export(config: TrainConfig, data: TrainingData, fitted: Fitted, report: Report) -> dict[str, Any]:
    """Write the model folder at --output: metrics.json, the confusion matrix, history.json and the model
    (model/export.py); returns its model.json."""
    metrics = report.metrics
    write_json(join_path(config.output, METRICS), metrics)
    plot_confusion_matrix(
        metrics["confusion_matrix"],
        data.scheme,
        join_path(config.output, CONFUSION_PNG),
        title=f"Confusion matrix, {metrics['split']} pixels ({metrics['pixels']})",
    )
    write_json(join_path(config.output, HISTORY), fitted.history)
    export_model(fitted.model, config.output, model_metadata(config, data, fitted, report))
    log.info(
        "Wrote %s: %s accuracy %s, mean IoU %s (best epoch %d of %d).",
        config.output,
        metrics["split"],
        metrics["overall_accuracy"],
        metrics["mean_iou"],
        fitted.best_epoch + 1,
        fitted.epochs_run,
    )
    return load_model_metadata(config.output)


def model_metadata(config: TrainConfig, data: TrainingData, fitted: Fitted, report: Report) -> dict[str, Any]:
    """model.json's fields that training knows (model/export.py adds the rest)."""
    metrics, bands = report.metrics, data.schema.bands
    indices = architecture.spectral_indices_of(fitted.model)
    metadata = {
        "mode": data.mode,
        "bands": list(bands),
        "classes": data.classes,
        "label_scheme": data.scheme.to_json(),
        "patch_size": data.schema.patch_size,
        "crs": data.manifest.get("crs") or "",
        "scale": float(data.manifest.get("scale") or 0.0),
        "architecture": fitted.model.name,
        "spectral_indices": {name: [bands[a], bands[b]] for name, (a, b) in indices.items()},
        "metrics": {
            "split": metrics["split"],
            "overall_accuracy": metrics["overall_accuracy"],
            "mean_iou": metrics["mean_iou"],
            "per_class_iou": metrics["per_class_iou"],
            f"best_{fitted.monitor}": round(fitted.best_loss, 6),
        },
        "training": {
            "data": config.data,
            "patches": data.statistics.patches,
            "selection": {"split": data.selection.name, "patches": data.selection.count}
            if data.selection
            else None,
            "epochs_run": fitted.epochs_run,
            "best_epoch": fitted.best_epoch + 1,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "schedule": config.schedule,
            "ema": fitted.ema,
            "xla": fitted.xla,
            "precision": fitted.precision,
            "radiometric_augmentation": config.radiometric_augmentation,
            "weight_decay": config.weight_decay,
            "class_weights": dict(zip(data.classes, data.class_weights)),
            "loss": describe_loss(config),
            "seed": config.seed,
            "seconds": round(fitted.seconds, 1),
            "cpu_seconds": round(fitted.cpu_seconds, 1),
        },
    }
    if "selection" in metrics:
        metadata["metrics"]["selection_mean_iou"] = metrics["selection"]["mean_iou"]
    return metadata


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
