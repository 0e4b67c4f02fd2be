"""Model factories: receptive fields, tile-size invariance, serialization of the custom layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.architecture import (
    CLASSIFICATION,
    SEGMENTATION,
    FusedBatchNormalization,
    SpectralIndices,
    build_model,
    mode_of,
    receptive_field,
    resolve_spectral_indices,
    with_precision,
)


@pytest.mark.parametrize(
    ("architecture", "options", "expected"),
    [
        # Two 3x3 convs per level, 2x2 pools: 1 + 2·(2+4) + 1 + 2 + 2·8 + 2·(4+2) = 44 for depth 2.
        ("unet", {"depth": 2}, 44),
        ("unet", {"depth": 3}, 96),
        # 5x5 valid conv, then a 5x5 transposed conv: 1 + 4 + 4.
        ("minimal", {}, 9),
        ("classifier", {}, None),
    ],
)
def test_receptive_field(architecture, options, expected):
    model = build_model(architecture, 3, 4, filters=4, **options)
    assert receptive_field(model) == expected


def test_every_architecture_maps_any_tile_size_to_the_same_size():
    for architecture in ("unet", "minimal"):
        model = build_model(architecture, 3, 5, filters=4)
        assert mode_of(model) == SEGMENTATION
        for height, width in ((16, 16), (37, 53)):
            out = model.predict(np.zeros((2, height, width, 3), np.float32), verbose=0)
            assert out.shape == (2, height, width, 5)
            np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_classifier_gives_one_prediction_per_patch():
    model = build_model("classifier", 3, 5, filters=4)
    assert mode_of(model) == CLASSIFICATION
    assert model.predict(np.zeros((2, 30, 30, 3), np.float32), verbose=0).shape == (2, 1, 1, 5)


def test_unet_predicts_a_large_tile_like_its_parts_away_from_the_edges():
    """A tile cropped out of a larger one (offset on the pooling grid) gets the same predictions at
    pixels farther than half the receptive field from its edges: what tiled prediction relies on."""
    rng = np.random.default_rng(0)
    model = build_model("unet", 3, 4, filters=4, depth=2, mean=[1.0, 2.0, 3.0], variance=[2.0, 2.0, 2.0])
    border = receptive_field(model) // 2
    big = rng.normal(2.0, 1.5, (1, 128, 128, 3)).astype(np.float32)
    offset, size = 32, 64
    part = big[:, offset : offset + size, offset : offset + size]
    big_out = model.predict(big, verbose=0)
    part_out = model.predict(part, verbose=0)
    inner = slice(border, size - border)
    np.testing.assert_allclose(
        part_out[0, inner, inner],
        big_out[0, offset + border : offset + size - border, offset + border : offset + size - border],
        atol=1e-5,
    )


def test_custom_layers_survive_saving(tmp_path):
    model = build_model("unet", 3, 4, filters=4, mean=[1.0, 2.0, 3.0], variance=[4.0, 5.0, 6.0])
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert any(isinstance(layer, FusedBatchNormalization) for layer in loaded.layers)
    x = np.random.default_rng(1).normal(size=(1, 21, 19, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="Unknown architecture 'resnet'"):
        build_model("resnet", 3, 4)
    with pytest.raises(ValueError, match="2 means and 2 variances for 3 bands"):
        build_model("unet", 3, 4, mean=[0.0, 0.0], variance=[1.0, 1.0])


S2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]


def test_spectral_indices_are_found_by_band_name_and_skipped_without_their_bands():
    assert resolve_spectral_indices(S2) == {"ndvi": (7, 3), "ndwi": (2, 7), "mndwi": (2, 11), "ndbi": (11, 7)}
    # The demo scene's bands (with elevation), in another order: indices follow the names.
    demo = ["elevation", "B8", "B4", "B11", "B3", "B2"]
    assert resolve_spectral_indices(demo, ["ndvi", "ndbi"]) == {"ndvi": (1, 2), "ndbi": (3, 1)}
    # No SWIR: MNDWI and NDBI are left out under "auto", refused when asked for by name.
    assert set(resolve_spectral_indices(["red", "nir", "green"])) == {"ndvi", "ndwi"}
    with pytest.raises(ValueError, match="ndbi needs the swir1 band"):
        resolve_spectral_indices(["red", "nir"], ["ndbi"])
    assert resolve_spectral_indices(["b1", "b2"]) == {}
    assert resolve_spectral_indices(S2, "none") == {}
    # Landsat 8 names say nothing by themselves; roles name them.
    landsat = ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6"]
    assert resolve_spectral_indices(landsat) == {}
    roles = {"green": "SR_B3", "red": "SR_B4", "nir": "SR_B5", "swir1": "SR_B6"}
    assert resolve_spectral_indices(landsat, "auto", roles)["ndvi"] == (3, 2)
    with pytest.raises(ValueError, match="not one of the bands"):
        resolve_spectral_indices(landsat, "auto", {"nir": "B8"})
    with pytest.raises(ValueError, match="Unknown spectral index"):
        resolve_spectral_indices(S2, ["evi"])


def test_spectral_index_layer_computes_normalized_differences_and_zero_for_masked_pixels():
    pixels = np.array([[[[1000.0, 3000.0], [0.0, 0.0], [500.0, 0.0]]]], np.float32)  # (1, 1, 3, 2)
    out = SpectralIndices({"ndvi": (1, 0), "rev": (0, 1)})(pixels).numpy()
    np.testing.assert_allclose(out[0, 0, 0], [0.5, -0.5])
    np.testing.assert_allclose(out[0, 0, 1], [0.0, 0.0])  # masked: every band 0
    np.testing.assert_allclose(out[0, 0, 2], [-1.0, 1.0])


def test_models_with_spectral_indices_take_raw_bands_and_survive_saving(tmp_path):
    bands = ["B3", "B4", "B8", "B11"]
    indices = resolve_spectral_indices(bands)
    model = build_model("unet", 4, 3, filters=4, indices=indices)
    assert model.input_shape == (None, None, None, 4)
    assert model.get_layer("bands_and_indices").output.shape[-1] == 4 + 4
    assert receptive_field(model) == 44  # per-pixel indices add no context
    x = np.random.default_rng(0).uniform(100, 4000, (2, 16, 16, 4)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("spectral_indices").indices == {k: list(v) for k, v in indices.items()}
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    for architecture in ("minimal", "classifier"):
        assert build_model(architecture, 4, 3, filters=4, indices=indices).get_layer("spectral_indices")


def test_with_precision_keeps_the_weights_and_the_float32_stem_and_output():
    model = build_model(
        "unet", 4, 3, mean=[1500.0] * 4, variance=[1e6] * 4, filters=4, indices={"ndvi": (2, 1)}
    )
    mixed = with_precision(model, "mixed_bfloat16")
    policies = [layer.dtype_policy.name for layer in mixed.layers]
    first_conv = next(i for i, layer in enumerate(mixed.layers) if layer.trainable_weights)
    assert set(policies[:first_conv]) == {"float32"} and policies[-1] == "float32"
    assert set(policies[first_conv:-1]) == {"mixed_bfloat16"}
    back = with_precision(mixed, "float32")
    assert {layer.dtype_policy.name for layer in back.layers} == {"float32"}
    x = np.random.default_rng(0).uniform(0, 3000, (2, 16, 16, 4)).astype(np.float32)
    np.testing.assert_array_equal(back(x).numpy(), model(x).numpy())
    np.testing.assert_allclose(mixed(x).numpy(), model(x).numpy(), atol=0.05)  # bfloat16 keeps ~3 digits


def _batch_norm_pair(precision: str, channels: int, **options):
    """Keras' BatchNormalization and the fused one, built alike with the same (non-trivial) weights."""
    rng = np.random.default_rng(3)
    pair = (
        keras.layers.BatchNormalization(dtype=precision, momentum=0.9, **options),
        FusedBatchNormalization(dtype=precision, momentum=0.9, **options),
    )
    weights = [
        rng.uniform(0.5, 2.0, channels),  # gamma
        rng.normal(size=channels),  # beta
        rng.normal(size=channels),  # moving mean
        rng.uniform(0.5, 2.0, channels),  # moving variance
    ]
    for layer in pair:
        layer.build((None, 6, 5, channels))
        layer.set_weights([w.astype(np.float32) for w in weights])
    return pair


@pytest.mark.parametrize(("precision", "tolerance"), [("float32", 1e-5), ("mixed_bfloat16", 3e-2)])
def test_fused_batch_normalization_trains_as_keras_batch_normalization_does(precision, tolerance):
    import tensorflow as tf

    keras_layer, fused_layer = _batch_norm_pair(precision, 3)
    x = tf.constant(np.random.default_rng(4).normal(2.0, 3.0, (4, 6, 5, 3)).astype(np.float32))
    # A loss that weighs channels and pixels unequally, so every gradient term counts.
    weights = tf.constant(np.random.default_rng(5).normal(size=(4, 6, 5, 3)).astype(np.float32))
    results = []
    for layer in (keras_layer, fused_layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
        gradients = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append((y, gradients, [v.numpy() for v in (layer.moving_mean, layer.moving_variance)]))
    (y_keras, g_keras, moving_keras), (y_fused, g_fused, moving_fused) = results
    assert y_fused.dtype == y_keras.dtype == keras_layer.compute_dtype
    np.testing.assert_allclose(np.float32(y_fused), np.float32(y_keras), atol=tolerance, rtol=tolerance)
    for fused, plain in zip(g_fused, g_keras):
        scale = float(np.abs(np.float32(plain)).max())
        np.testing.assert_allclose(np.float32(fused), np.float32(plain), atol=tolerance * scale)
    # The moving statistics: the biased batch variance, as Keras keeps it, not the kernel's unbiased one.
    np.testing.assert_allclose(moving_fused, moving_keras, rtol=1e-5 if precision == "float32" else 1e-2)
    # Inference uses the moving statistics, through Keras' own code.
    np.testing.assert_allclose(
        np.float32(fused_layer(x, training=False)), np.float32(keras_layer(x, training=False)), atol=tolerance
    )


def test_fused_batch_normalization_leaves_what_the_kernel_does_not_cover_to_keras():
    import tensorflow as tf

    keras_layer, fused_layer = _batch_norm_pair("float32", 6, axis=1)  # channels first: not fusable
    x = tf.constant(np.random.default_rng(6).normal(size=(2, 6, 5, 4)).astype(np.float32))
    np.testing.assert_allclose(fused_layer(x, training=True), keras_layer(x, training=True), atol=1e-6)
