"""Model factories: receptive fields, tile-size invariance, serialization of the custom layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.architecture import (
    CLASSIFICATION,
    SEGMENTATION,
    build_model,
    mode_of,
    receptive_field,
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
    x = np.random.default_rng(1).normal(size=(1, 21, 19, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="Unknown architecture 'resnet'"):
        build_model("resnet", 3, 4)
    with pytest.raises(ValueError, match="2 means and 2 variances for 3 bands"):
        build_model("unet", 3, 4, mean=[0.0, 0.0], variance=[1.0, 1.0])
