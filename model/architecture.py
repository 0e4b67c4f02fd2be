"""Model factories: fully convolutional networks that map (H, W, bands) raw pixels to (H, W, classes).

Every factory returns an uncompiled functional Keras model whose input is `(None, None, bands)`, so a
model trained on 128×128 patches predicts on 512×512 tiles (or on whatever tile Earth Engine sends).
Normalization is the first layer, with the per-band mean and variance of the training data baked in:
callers feed raw values (TOA reflectance ×10000, metres) and nothing outside the model has to know the
statistics. Optionally, normalized-difference spectral indices (NDVI, NDWI, MNDWI, NDBI) are computed
inside the model from the raw values of the bands they need, found by band name
(`resolve_spectral_indices`), and join the normalized bands; an index whose bands are absent is skipped.

- `unet` (default): a U-Net encoder–decoder; it pads its input to a multiple of 2**depth and crops the
  output back, so any tile size works.
- `minimal`: the model of Google's land-cover sample and the Earth Engine talk: normalize → 5×5 conv →
  5×5 transposed conv → per-pixel softmax.
- `classifier`: image classification (BigEarthNet-style): a patch in, a `(1, 1, classes)` softmax out.

`receptive_field(model)` derives the receptive field from the layers, for the tile overlap that avoids
seams between predicted tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import keras
import tensorflow as tf

from model.vocabulary import (
    ALL_INDICES,
    CLASSIFICATION,
    CLASSIFIER,
    FLOAT32,
    MINIMAL,
    SEGMENTATION,
    SPECTRAL_INDICES,
    SPECTRAL_ROLES,
    UNET,
)
from model.vocabulary import MODES as MODES  # re-exported: model.export reads it from here

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
INDICES_LAYER = "spectral_indices"


@keras.saving.register_keras_serializable(package="terrabeam")
class PadToMultiple(keras.layers.Layer):
    """Zero-pads height and width (bottom and right) up to a multiple of `multiple`.

    A U-Net with `depth` poolings needs sides divisible by 2**depth; padding after normalization adds
    pixels at the training mean, and `CropLike` removes them from the output. Padding only the bottom
    and right keeps the pooling grid anchored at the top-left pixel, so predictions do not depend on the
    tile size.
    """

    def __init__(self, multiple: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if multiple < 1:
            raise ValueError(f"multiple must be a positive number of pixels, got {multiple}.")
        self.multiple = int(multiple)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(inputs)
        pad_h = (-shape[1]) % self.multiple
        pad_w = (-shape[2]) % self.multiple
        return tf.pad(inputs, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def padded(n: int | None) -> int | None:
            return None if n is None else -(-n // self.multiple) * self.multiple

        return (input_shape[0], padded(input_shape[1]), padded(input_shape[2]), input_shape[3])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "multiple": self.multiple}


@keras.saving.register_keras_serializable(package="terrabeam")
class CropLike(keras.layers.Layer):
    """Crops `inputs[0]` to the height and width of `inputs[1]` (top-left anchored, as `PadToMultiple`)."""

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        tensor, reference = inputs
        shape = tf.shape(reference)
        return tensor[:, : shape[1], : shape[2], :]

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        tensor, reference = input_shape
        return (tensor[0], reference[1], reference[2], tensor[3])


# Band names that fix a spectral role whatever the sensor: Sentinel-2 names (as Earth Engine and
# terrabeam's demo scene name them) and plain role names. Landsat names are left out on purpose:
# "B4" is NIR on Landsat 7 but red on Landsat 8; name the roles of other sensors with `band_roles`.
BAND_ROLES: dict[str, str] = {
    "b3": "green",
    "b4": "red",
    "b8": "nir",
    "b11": "swir1",
    "green": "green",
    "red": "red",
    "nir": "nir",
    "swir1": "swir1",
}


@keras.saving.register_keras_serializable(package="terrabeam")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, computed by TensorFlow's fused kernel.

    Keras 3 dropped the `fused` option: its layer builds the batch moments and the normalization from
    some twenty small operations, and as many again for their gradients. On a 2-core CPU those ops took
    about a third of a training step of the default U-Net. TensorFlow's FusedBatchNormV3 computes the
    same thing in one operation each way (oneDNN's kernel on x86, which also fuses the ReLU after it),
    in float32 whatever the input's precision. The arithmetic is Keras': normalized by the biased batch
    variance, and the moving averages updated with it. The fused kernel returns the unbiased variance,
    which is rescaled. Inference runs the same kernel on the moving statistics. Any setting that the
    fused kernel does not cover (a mask, renorm, synchronized statistics, another axis or rank, no scale
    or centre) is left to Keras' own code.
    """

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        scale, offset = tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32)
        if not (training and self.trainable):
            # The moving statistics: one op instead of Keras' chain of element-wise ones (the default
            # U-Net predicted a 256² tile in 49 ms instead of 57 on a 2-core CPU).
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                scale,
                offset,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon,
                data_format="NHWC",
                is_training=False,
            )
            return tf.cast(outputs, self.compute_dtype)
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        values = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = unbiased_variance * ((values - 1.0) / values)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs: Any, mask: Any) -> bool:
        return (
            mask is None
            and not self.renorm
            and not self.synchronized
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )


def resolve_spectral_indices(
    bands: Sequence[str],
    indices: str | Sequence[str] = ALL_INDICES,
    band_roles: Mapping[str, str] | None = None,
) -> dict[str, tuple[int, int]]:
    """The indices that can be computed from `bands`: name -> (index of band a, index of band b).

    `indices` is "auto" (every index of SPECTRAL_INDICES whose bands are present), "none", or names.
    `band_roles` maps roles (green, red, nir, swir1) to band names and overrides the name table.
    An index named explicitly whose bands are absent is an error; with "auto" it is skipped.
    """
    auto = indices == ALL_INDICES
    if isinstance(indices, str):
        indices = [] if indices == "none" else list(SPECTRAL_INDICES) if auto else indices.split(",")
    unknown = [name for name in indices if name not in SPECTRAL_INDICES]
    if unknown:
        raise ValueError(f"Unknown spectral index {unknown}; choose from {sorted(SPECTRAL_INDICES)}.")
    position: dict[str, int] = {}
    for i, band in enumerate(bands):
        role = BAND_ROLES.get(band.lower())
        if role and role not in position:
            position[role] = i
    for role, band in (band_roles or {}).items():
        if role not in SPECTRAL_ROLES:
            raise ValueError(f"Unknown band role {role!r}; roles are {', '.join(SPECTRAL_ROLES)}.")
        if band not in bands:
            raise ValueError(f"Band {band!r} (given for {role}) is not one of the bands {list(bands)}.")
        position[role] = list(bands).index(band)
    found: dict[str, tuple[int, int]] = {}
    for name in indices:
        a, b = SPECTRAL_INDICES[name]
        if a in position and b in position:
            found[name] = (position[a], position[b])
        elif not auto:
            missing = [r for r in (a, b) if r not in position]
            raise ValueError(
                f"{name} needs the {' and '.join(missing)} band(s), which none of {list(bands)} is; "
                "name them with band roles (e.g. nir=SR_B5) or leave the index out."
            )
    return found


@keras.saving.register_keras_serializable(package="terrabeam")
class SpectralIndices(keras.layers.Layer):
    """Normalized differences (a - b) / (a + b) of raw band values, one output channel per index.

    Values lie in [-1, 1] for non-negative inputs (reflectances), so they need no normalization; a
    pixel with a + b = 0 (a masked pixel: every band 0) gets 0, and the result is clipped to [-1, 1].
    """

    def __init__(self, indices: Mapping[str, Sequence[int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not indices:
            raise ValueError("SpectralIndices needs at least one index.")
        self.indices = {str(name): [int(a), int(b)] for name, (a, b) in indices.items()}

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        pairs = list(self.indices.values())
        a = tf.gather(inputs, [p[0] for p in pairs], axis=-1)
        b = tf.gather(inputs, [p[1] for p in pairs], axis=-1)
        total = a + b
        nonzero = tf.abs(total) > 1e-6
        ratio = (a - b) / tf.where(nonzero, total, tf.ones_like(total))
        return tf.clip_by_value(tf.where(nonzero, ratio, tf.zeros_like(ratio)), -1.0, 1.0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], len(self.indices))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "indices": self.indices}


def spectral_indices_of(model: keras.Model) -> dict[str, tuple[int, int]]:
    """The indices a model computes: name -> (index of band a, index of band b); empty for none."""
    layer = next((layer for layer in model.layers if layer.name == INDICES_LAYER), None)
    return {name: (a, b) for name, (a, b) in layer.indices.items()} if layer is not None else {}


def _stem(
    inputs: Any,
    num_bands: int,
    mean: Sequence[float] | None,
    variance: Sequence[float] | None,
    indices: Mapping[str, Sequence[int]] | None,
) -> Any:
    """Normalized bands, with the spectral indices (from the raw values) appended as channels."""
    x = normalization(num_bands, mean, variance)(inputs)
    if indices:
        extra = SpectralIndices(indices, name=INDICES_LAYER)(inputs)
        x = keras.layers.Concatenate(name="bands_and_indices")([x, extra])
    return x


def normalization(num_bands: int, mean: Sequence[float] | None, variance: Sequence[float] | None):
    """A Normalization layer holding the training statistics (identity until they are known)."""
    if (mean is None) != (variance is None):
        raise ValueError("Pass both mean and variance of the training bands, or neither.")
    mean = [0.0] * num_bands if mean is None else [float(m) for m in mean]
    variance = [1.0] * num_bands if variance is None else [float(v) for v in variance]
    if len(mean) != num_bands or len(variance) != num_bands:
        raise ValueError(
            f"Normalization statistics have {len(mean)} means and {len(variance)} variances "
            f"for {num_bands} bands."
        )
    return keras.layers.Normalization(axis=-1, mean=mean, variance=variance, name="normalization")


def _conv_block(x, filters: int, name: str):
    for i in (1, 2):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
        x = FusedBatchNormalization(name=f"{name}_bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(
    num_bands: int,
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    variance: Sequence[float] | None = None,
    indices: Mapping[str, Sequence[int]] | None = None,
    filters: int = 32,
    depth: int = 2,
    dropout: float = 0.1,
) -> keras.Model:
    """A U-Net: `depth` levels of (conv-BN-ReLU)×2 + 2×2 max-pool, mirrored with transposed convs.

    Filters double per level. Depth 2 sees 44 pixels, enough context for 10 m land cover while keeping
    the overlap between predicted tiles small.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}.")
    inputs = keras.Input((None, None, num_bands), name=INPUT_NAME)
    x = _stem(inputs, num_bands, mean, variance, indices)
    x = PadToMultiple(2**depth, name="pad")(x)
    skips = []
    for level in range(depth):
        x = _conv_block(x, filters * 2**level, name=f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, filters * 2**depth, name="bottom")
    if dropout:
        x = keras.layers.SpatialDropout2D(dropout, name="dropout")(x)
    for level in reversed(range(depth)):
        x = keras.layers.Conv2DTranspose(filters * 2**level, 2, strides=2, name=f"up{level}")(x)
        x = keras.layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = _conv_block(x, filters * 2**level, name=f"dec{level}")
    x = keras.layers.Conv2D(num_classes, 1, name="logits")(x)
    x = CropLike(name="crop")([x, inputs])
    outputs = keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=f"unet_d{depth}_f{filters}")


def build_minimal(
    num_bands: int,
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    variance: Sequence[float] | None = None,
    indices: Mapping[str, Sequence[int]] | None = None,
    filters: int = 32,
    kernel_size: int = 5,
) -> keras.Model:
    """The talk's model: normalize → conv (valid) → transposed conv (restores the size) → softmax."""
    inputs = keras.Input((None, None, num_bands), name=INPUT_NAME)
    x = _stem(inputs, num_bands, mean, variance, indices)
    x = keras.layers.Conv2D(filters, kernel_size, activation="relu", name="conv")(x)
    x = keras.layers.Conv2DTranspose(filters // 2, kernel_size, activation="relu", name="deconv")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=f"minimal_k{kernel_size}_f{filters}")


def build_classifier(
    num_bands: int,
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    variance: Sequence[float] | None = None,
    indices: Mapping[str, Sequence[int]] | None = None,
    filters: int = 32,
    depth: int = 3,
    dropout: float = 0.2,
) -> keras.Model:
    """Image classification: conv blocks + pooling, global average, softmax shaped (1, 1, classes).

    The (1, 1, classes) output keeps the model fully convolutional in form, so the same export,
    SavedModel signature and Earth Engine wrapper serve both modes.
    """
    inputs = keras.Input((None, None, num_bands), name=INPUT_NAME)
    x = _stem(inputs, num_bands, mean, variance, indices)
    for level in range(depth):
        x = _conv_block(x, filters * 2**level, name=f"down{level}")
        if level < depth - 1:
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{level}")(x)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="global_pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=f"classifier_d{depth}_f{filters}")


# The factories of model.vocabulary.ARCHITECTURE_NAMES (a test keeps the two equal).
ARCHITECTURES: dict[str, Callable[..., keras.Model]] = {
    UNET: build_unet,
    MINIMAL: build_minimal,
    CLASSIFIER: build_classifier,
}


def build_model(
    architecture: str,
    num_bands: int,
    num_classes: int,
    *,
    mean: Sequence[float] | None = None,
    variance: Sequence[float] | None = None,
    **options: Any,
) -> keras.Model:
    """Build one of `ARCHITECTURES` by name (options are the factory's keyword arguments)."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(
            f"Unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}."
        ) from None
    if num_bands < 1 or num_classes < 2:
        raise ValueError(f"A model needs at least 1 band and 2 classes, got {num_bands} and {num_classes}.")
    return factory(num_bands, num_classes, mean=mean, variance=variance, **options)


def mode_of(model: keras.Model) -> str:
    """`classification` when the model reduces the patch to one prediction, else `segmentation`."""
    pooled = any(isinstance(layer, _GLOBAL_POOLING) for layer in model.layers)
    return CLASSIFICATION if pooled else SEGMENTATION


_GLOBAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """A copy of `model`, with its weights, whose layers compute in `precision` (model.vocabulary.PRECISIONS).

    Under mixed_bfloat16 the layers before the first one that learns (normalization, spectral indices,
    padding: raw band values and their ratios need float32's digits) and the output layer (probabilities
    that losses and users read) stay in float32; the variables are float32 either way, so a model trained
    in mixed precision is exported as `with_precision(model, FLOAT32)`.
    """
    layers = model.layers
    first_learning = next((i for i, layer in enumerate(layers) if layer.trainable_weights), len(layers))
    float32_layers = {id(layer) for layer in layers[:first_learning]} | {id(layers[-1])}

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        config["dtype"] = FLOAT32 if id(layer) in float32_layers else precision
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


def receptive_field(model: keras.Model) -> int | None:
    """The receptive field in input pixels, derived layer by layer; None when it is the whole input.

    Each tensor carries (rf, jump): the side of the input window one of its pixels sees, and the input
    distance between neighbouring pixels. A k×k conv with dilation d adds (k-1)·d·jump; a stride or a
    pooling multiplies the jump; a transposed conv with stride s divides it (each output pixel sees
    ceil(k/s) inputs). Merges (concatenate, add) take the widest branch.
    """
    fields: dict[int, tuple[Fraction, Fraction]] = {}

    def of(tensor: Any) -> tuple[Fraction, Fraction]:
        return fields.get(id(tensor), (Fraction(1), Fraction(1)))

    for layer in model.layers:
        inputs = layer.input if isinstance(layer.input, list | tuple) else [layer.input]
        if isinstance(layer, CropLike):
            inputs = inputs[:1]
        if isinstance(layer, _GLOBAL_POOLING):
            return None
        rf = max((of(t)[0] for t in inputs), default=Fraction(1))
        jump = min((of(t)[1] for t in inputs), default=Fraction(1))
        if isinstance(layer, keras.layers.Conv2DTranspose):
            k, s = layer.kernel_size[0], layer.strides[0]
            rf += (math.ceil(k / s) - 1) * jump
            jump /= s
        elif isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            k, s, d = layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
            rf += (k - 1) * d * jump
            jump *= s
        elif isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
            rf += (layer.pool_size[0] - 1) * jump
            jump *= layer.strides[0]
        elif isinstance(layer, keras.layers.UpSampling2D):
            if layer.interpolation != "nearest":
                rf += jump
            jump /= layer.size[0]
        outputs = layer.output if isinstance(layer.output, list | tuple) else [layer.output]
        for t in outputs:
            fields[id(t)] = (rf, jump)
    outputs = model.outputs
    return int(math.ceil(max(of(t)[0] for t in outputs)))
