"""The tf.data input pipeline: TFRecord patches -> (inputs, labels, weights) batches for Keras.

    read_patches: files -> interleave(TFRecordDataset) -> [keep one side of the selection carve]
                  -> batch -> parse_example (vectorised) -> drop masked patches -> unbatch -> cache
    make_batches: -> shuffle -> batch -> class weights -> random flips/rotations -> [band jitter] -> prefetch

Records follow the shared schema (`transforms.contracts.schema.PatchSchema`), which is also Earth Engine's own
TFRecord patch layout, so Earth Engine exports are read with just a band list and a patch size
(`PatchSchema(bands, patch_size)`). Paths may be local or gs:// (tf.io.gfile / TensorFlow file systems).

Each element is `(inputs, labels, weights)`:
- inputs: float32 (batch, H, W, bands), raw values (the model normalizes);
- labels: int32 (batch, H, W) class indices, LABEL_NODATA where there is no usable label; in
  classification mode (batch, 1, 1), the patch's majority class or its label feature;
- weights: float32, same shape as labels: the class weight of each label, 0 where it is LABEL_NODATA.

A pixel is unusable when its label is LABEL_NODATA or when all its bands are 0, which is how Earth Engine
writes masked pixels; a patch with no usable pixel is dropped (about 3% of Google's land-cover patches).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from model.errors import IncompatibleDataError
from model.vocabulary import CLASSIFICATION, LABEL_FEATURE, LABEL_MAJORITY, LABEL_SOURCES, MODES, SEGMENTATION
from transforms.contracts.label_scheme import scheme_from_metadata
from transforms.contracts.manifest import ManifestError, read_manifest, schema_of
from transforms.contracts.schema import LABEL_NODATA, PatchSchema

AUTOTUNE = tf.data.AUTOTUNE

# Records parsed per parse_example call: vectorised parsing is several times faster than one by one.
PARSE_BATCH = 64
# Files read at once: enough to mix regions, few enough to keep memory bounded.
MAX_INTERLEAVE = 16

# The selection carve: a record goes to the selection subset when the fingerprint of its serialized
# bytes falls in the first `fraction` of this many buckets. Content-based, so the same records land on
# the same side on every run, runner and shard layout, with no id feature needed (Earth Engine exports
# have none).
SELECTION_BUCKETS = 10_000
FIT = "fit"
SELECTION = "selection"
SUBSETS = (FIT, SELECTION)


def list_records(pattern: str | Sequence[str]) -> list[str]:
    """Record files from a folder, a glob pattern or a list of paths (local or gs://), sorted."""
    if not isinstance(pattern, str):
        return sorted(pattern)
    if tf.io.gfile.isdir(pattern):
        found = [p for p in tf.io.gfile.glob(pattern.rstrip("/") + "/*") if ".tfrecord" in p]
    else:
        found = tf.io.gfile.glob(pattern)
    if not found:
        raise IncompatibleDataError(
            f"No TFRecord files at {pattern!r}; pass a folder holding *.tfrecord(.gz) files or a glob."
        )
    return sorted(found)


def compression_of(path: str, default: str = "") -> str:
    """TFRecordDataset compression: GZIP for *.gz, else `default` ('' or 'GZIP')."""
    return "GZIP" if path.endswith(".gz") else default


def load_data_manifest(data: str) -> dict[str, Any]:
    """The manifest of an extraction folder, with every problem raised as IncompatibleDataError."""
    try:
        manifest = read_manifest(data)
        manifest_schema(manifest)
    except ManifestError as e:
        raise IncompatibleDataError(str(e)) from None
    return manifest


def manifest_schema(manifest: Mapping[str, Any]) -> PatchSchema:
    try:
        return schema_of(manifest)
    except ValueError as e:
        raise IncompatibleDataError(f"The manifest describes an unusable record schema: {e}") from None


def manifest_compression(manifest: Mapping[str, Any]) -> str:
    return "GZIP" if str(manifest.get("compression", "")).upper() == "GZIP" else ""


def check_data_matches_model(info: Mapping[str, Any], manifest: Mapping[str, Any]) -> PatchSchema:
    """The manifest's schema, after checking that its bands and classes are the model's (model.json)."""
    schema = manifest_schema(manifest)
    model_bands, data_bands = list(info["bands"]), list(schema.bands)
    if model_bands != data_bands:
        missing = [b for b in model_bands if b not in data_bands]
        extra = [b for b in data_bands if b not in model_bands]
        detail = f"missing {missing}, extra {extra}" if missing or extra else "same bands, other order"
        raise IncompatibleDataError(
            f"The model expects bands {model_bands} (in this order) but the data has {data_bands} "
            f"({detail}). Extract the data with --bands {','.join(model_bands)}, or train a new model."
        )
    if list(info["classes"]) != list(manifest["classes"]):
        raise IncompatibleDataError(
            f"The model predicts classes {list(info['classes'])} but the data is labelled with "
            f"{list(manifest['classes'])}; use data labelled with the model's classes."
        )
    model_scheme, data_scheme = scheme_from_metadata(info), scheme_from_metadata(manifest)
    differ = [
        f"{a.name!r} is values {a.to_json()['values']} for the model, {b.to_json()['values']} in the data"
        for a, b in zip(model_scheme.classes, data_scheme.classes)
        if (a.values, a.rest) != (b.values, b.rest)
    ]
    if differ or model_scheme.ignore != data_scheme.ignore:
        detail = (
            "; ".join(differ) or f"ignored values {list(model_scheme.ignore)} vs {list(data_scheme.ignore)}"
        )
        raise IncompatibleDataError(
            f"The model's label scheme {model_scheme.name!r} and the data's {data_scheme.name!r} name the "
            f"same classes from different label values ({detail}); extract the data with the model's "
            "scheme (its label_scheme in model.json, as a classes file) or train a new model."
        )
    return schema


@dataclasses.dataclass(frozen=True)
class PatchReader:
    """How to turn serialized patches into model inputs and targets.

    `label_source` matters in classification mode: `majority` takes the most frequent usable class of
    the label raster; `feature` reads `schema.label` as one number per patch (a scene label).
    """

    schema: PatchSchema
    num_classes: int
    mode: str = SEGMENTATION
    label_source: str = LABEL_MAJORITY

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}.")
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be {LABEL_MAJORITY!r} or {LABEL_FEATURE!r}.")
        if self.label_source == LABEL_FEATURE and self.mode != CLASSIFICATION:
            raise ValueError("A per-patch label feature only makes sense in classification mode.")

    def feature_spec(self) -> dict:
        spec = self.schema.feature_spec(with_label=True)
        if self.label_source == LABEL_FEATURE:
            spec[self.schema.label] = tf.io.FixedLenFeature((), tf.float32)
        return spec

    def parse(self, serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """A batch of serialized Examples -> inputs (B, H, W, C), labels int32 with unusable = NODATA."""
        features = tf.io.parse_example(serialized, self.feature_spec())
        inputs = tf.stack([features[b] for b in self.schema.bands], axis=-1)
        labels = tf.cast(tf.round(features[self.schema.label]), tf.int32)
        if self.label_source == LABEL_FEATURE:
            return inputs, labels[:, None, None]
        masked = tf.reduce_all(tf.equal(inputs, 0.0), axis=-1)
        labels = tf.where(masked, LABEL_NODATA, labels)
        if self.mode == CLASSIFICATION:
            labels = self._majority(labels)
        return inputs, labels

    def _majority(self, labels: tf.Tensor) -> tf.Tensor:
        usable = tf.logical_and(labels >= 0, labels < self.num_classes)
        one_hot = tf.one_hot(tf.where(usable, labels, -1), self.num_classes)  # -1 -> all zeros
        counts = tf.reduce_sum(one_hot, axis=[1, 2])
        majority = tf.argmax(counts, axis=-1, output_type=tf.int32)
        majority = tf.where(tf.reduce_any(usable, axis=[1, 2]), majority, LABEL_NODATA)
        return majority[:, None, None]


def _drop_unusable(inputs: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    keep = tf.reduce_any(tf.not_equal(labels, LABEL_NODATA), axis=[1, 2])
    return tf.boolean_mask(inputs, keep), tf.boolean_mask(labels, keep)


def augment(
    inputs: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """A random element of the dihedral group (flips and 90° rotations) per patch, same for all three.

    Any of the 8 symmetries of a square is a choice of transpose, up-down flip and left-right flip, so
    three per-patch coin tosses cover them all, vectorised over the batch. Patches must be square.
    """
    batch = tf.shape(inputs)[0]
    coins = tf.random.uniform((3, batch)) < 0.5  # reproducible under keras.utils.set_random_seed

    def apply(x: tf.Tensor) -> tf.Tensor:
        expanded = x if x.shape.rank == 4 else x[..., None]
        for coin, transform in zip(
            tf.unstack(coins),
            (
                lambda t: tf.transpose(t, [0, 2, 1, 3]),
                lambda t: tf.reverse(t, [1]),
                lambda t: tf.reverse(t, [2]),
            ),
        ):
            expanded = tf.where(coin[:, None, None, None], transform(expanded), expanded)
        return expanded if x.shape.rank == 4 else expanded[..., 0]

    return apply(inputs), apply(labels), apply(weights)


def jitter_bands(inputs: tf.Tensor, strength: float, band_std: Sequence[float]) -> tf.Tensor:
    """Radiometric augmentation of raw band values: each patch's bands scaled by a gain of
    1 + strength·N(0, 1) (one draw per patch and band, as calibration, haze and season move whole bands)
    plus per-pixel noise of strength band standard deviations. Labels do not change, and masked pixels
    (every band 0) stay masked."""
    shape = tf.shape(inputs)
    gains = 1.0 + strength * tf.random.normal((shape[0], 1, 1, shape[3]))
    noise = tf.random.normal(shape) * (strength * tf.constant(list(band_std), tf.float32))
    masked = tf.reduce_all(tf.equal(inputs, 0.0), axis=-1, keepdims=True)
    return tf.where(masked, inputs, inputs * gains + noise)


def with_weights(
    inputs: tf.Tensor, labels: tf.Tensor, class_weights: Sequence[float] | None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Adds per-pixel weights: the class weight of each label (1 without class weights), 0 for NODATA."""
    num = len(class_weights) if class_weights is not None else None
    usable = tf.logical_and(labels >= 0, labels < num) if num else tf.not_equal(labels, LABEL_NODATA)
    if class_weights is None:
        weights = tf.cast(usable, tf.float32)
    else:
        table = tf.constant(list(class_weights), tf.float32)
        weights = tf.where(usable, tf.gather(table, tf.where(usable, labels, 0)), 0.0)
    return inputs, labels, weights


def in_selection(serialized: tf.Tensor, fraction: float) -> tf.Tensor:
    """True for the records of the selection subset (about `fraction` of them), by content hash."""
    threshold = int(round(fraction * SELECTION_BUCKETS))
    return tf.strings.to_hash_bucket_fast(serialized, SELECTION_BUCKETS) < threshold


def read_patches(
    files: Sequence[str],
    reader: PatchReader,
    *,
    cache: bool | str = True,
    shuffle_files: bool = False,
    seed: int | None = None,
    compression: str = "",
    subset: str | None = None,
    selection_fraction: float = 0.0,
) -> tf.data.Dataset:
    """The usable patches of `files` as `(inputs, labels)` elements (unbatched), cached.

    `cache` is True (memory), a file prefix (disk, for data larger than memory) or False. Datasets
    derived from the result share its cache, so a statistics pass fills it for training.
    `subset` FIT or SELECTION keeps one side of the selection carve (`in_selection` with
    `selection_fraction`): the records to fit on, or those held out to select the model with.
    """
    if subset is not None and subset not in SUBSETS:
        raise ValueError(f"subset must be one of {list(SUBSETS)} or None, got {subset!r}.")
    if subset is not None and not 0.0 < selection_fraction < 1.0:
        raise ValueError(f"selection_fraction must lie strictly between 0 and 1, got {selection_fraction}.")
    files = list(files)
    if not files:
        raise IncompatibleDataError("No record files to read; the split lists no files.")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression_of(files[0], compression)),
        cycle_length=min(len(files), MAX_INTERLEAVE),
        num_parallel_calls=AUTOTUNE,
        # Parallel, but in a fixed order so that a seeded run is reproducible.
        deterministic=True,
    )
    if subset is not None:
        wanted = subset == SELECTION
        ds = ds.filter(lambda s: tf.equal(in_selection(s, selection_fraction), wanted))
    ds = ds.batch(PARSE_BATCH).map(reader.parse, num_parallel_calls=AUTOTUNE)
    ds = ds.map(_drop_unusable, num_parallel_calls=AUTOTUNE).unbatch()
    if cache:
        ds = ds.cache("" if cache is True else str(cache))
    return ds


def make_batches(
    patches: tf.data.Dataset,
    *,
    batch_size: int,
    class_weights: Sequence[float] | None = None,
    shuffle: bool = False,
    augment_patches: bool = False,
    shuffle_buffer: int = 2048,
    seed: int | None = None,
    drop_remainder: bool = False,
    radiometric: float = 0.0,
    band_std: Sequence[float] | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """`(inputs, labels, weights)` batches of `read_patches` output, reshuffled each epoch; with
    `drop_remainder`, full batches only (one batch shape: one traced or compiled step); with
    `radiometric` > 0, bands jittered by `jitter_bands` (which needs the bands' standard deviations);
    with `repeat`, the epochs one after the other without end (each as without it)."""
    if radiometric and band_std is None:
        raise ValueError("Radiometric augmentation needs the bands' standard deviations (band_std).")
    ds = patches
    if shuffle:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: with_weights(x, y, class_weights), num_parallel_calls=AUTOTUNE)
    if augment_patches:
        ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
    if radiometric:
        ds = ds.map(
            lambda x, y, w: (jitter_bands(x, radiometric, band_std), y, w), num_parallel_calls=AUTOTUNE
        )
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class DataStatistics:
    """What one pass over the training patches tells: band moments and class frequencies."""

    patches: int
    mean: list[float]
    variance: list[float]
    class_counts: list[int]  # usable pixels per class (patches, in classification mode)


def scan_statistics(patches: tf.data.Dataset, num_bands: int, num_classes: int) -> DataStatistics:
    """Per-band mean and variance over usable pixels, and the label histogram, from `read_patches`.

    Accumulated in float64 on the host: sums of squares of reflectances ×10000 overflow float32
    precision. Labels outside 0..num_classes-1 (other than NODATA) are an error: the data has classes
    the manifest does not list.
    """
    total = np.zeros(num_bands)
    squares = np.zeros(num_bands)
    pixels = 0
    num_patches = 0
    counts = np.zeros(num_classes, np.int64)
    for inputs, labels in patches.batch(256).prefetch(AUTOTUNE).as_numpy_iterator():
        num_patches += len(inputs)
        usable = labels != LABEL_NODATA
        if labels.shape[1:] != inputs.shape[1:3]:  # classification: a label per patch
            usable_pixels = np.any(inputs != 0, axis=-1) & usable.reshape(-1, 1, 1)
        else:
            usable_pixels = usable
        values = inputs[usable_pixels].astype(np.float64)
        total += values.sum(axis=0)
        squares += (values**2).sum(axis=0)
        pixels += len(values)
        found = labels[usable]
        bad = found[(found < 0) | (found >= num_classes)]
        if bad.size:
            raise IncompatibleDataError(
                f"The records hold label value {int(bad[0])}, but only {num_classes} classes "
                f"(0..{num_classes - 1}) are declared; list every class in the manifest's 'classes'."
            )
        counts += np.bincount(found, minlength=num_classes)
    if not pixels:
        raise IncompatibleDataError(
            "The training records hold no usable pixel (every patch is masked or unlabelled); "
            "check the label band and the extraction."
        )
    mean = total / pixels
    variance = np.maximum(squares / pixels - mean**2, 0.0)
    # A constant band (e.g. a padded one) would divide by zero in the normalization.
    variance = np.where(variance > 0, variance, 1.0)
    return DataStatistics(num_patches, mean.tolist(), variance.tolist(), counts.tolist())


def class_weights_from_counts(
    counts: Sequence[int], power: float = 0.5, max_weight: float = 10.0
) -> list[float]:
    """Class weights (median frequency / frequency) ** power, capped, with mean weight 1 per pixel.

    power=1 is median-frequency balancing; smaller powers lift rare classes less, without flooding the
    map with them (model.train's default is 0.25, beside a Lovász term that already optimizes each
    class's IoU); power=0 weighs every class alike.
    Classes absent from the data get weight 0 (they have no pixels to weigh).
    """
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        return [0.0] * len(counts)
    freq = counts / counts.sum()
    weights = np.zeros_like(freq)
    weights[present] = (np.median(freq[present]) / freq[present]) ** power
    weights = np.minimum(weights, max_weight * weights[present].min())
    weights /= (weights * freq).sum()
    return [round(float(w), 6) for w in weights]
