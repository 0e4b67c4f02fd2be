"""Test-time augmentation: the 8 symmetries and their inverses, and the averaged prediction's invariance."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.geometry.tta import SYMMETRIES, apply_symmetry, invert_symmetry, predict_with_tta


def test_the_eight_symmetries_are_distinct_and_invertible_on_non_square_tiles():
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(2, 5, 7, 3))
    views = [apply_symmetry(batch, s) for s in SYMMETRIES]
    square = rng.normal(size=(1, 4, 4, 1))
    assert len({apply_symmetry(square, s).tobytes() for s in SYMMETRIES}) == 8
    for symmetry, view in zip(SYMMETRIES, views):
        assert view.shape == ((2, 7, 5, 3) if symmetry[0] else (2, 5, 7, 3))
        assert np.array_equal(invert_symmetry(view, symmetry), batch)


def _position_biased(batch: np.ndarray) -> np.ndarray:
    """A 'model' that is not equivariant: its scores depend on where a pixel sits in the tile."""
    _, h, w, _ = batch.shape
    rows = np.arange(h)[None, :, None, None] / h
    scores = np.concatenate([batch[..., :1] + rows, batch[..., 1:2] * 0.5], axis=-1)
    return np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)


@pytest.mark.parametrize("shape", [(3, 6, 6, 2), (2, 4, 9, 2)])
def test_averaged_prediction_is_equivariant_and_a_distribution(shape):
    rng = np.random.default_rng(1)
    batch = rng.normal(size=shape).astype(np.float32)
    averaged = predict_with_tta(_position_biased, batch)
    assert averaged.shape == shape and averaged.dtype == np.float32
    np.testing.assert_allclose(averaged.sum(-1), 1.0, rtol=1e-6)
    assert not np.allclose(averaged, _position_biased(batch))
    for symmetry in SYMMETRIES:  # predicting a flipped/rotated tile gives the flipped/rotated map
        moved = predict_with_tta(_position_biased, np.ascontiguousarray(apply_symmetry(batch, symmetry)))
        np.testing.assert_allclose(moved, apply_symmetry(averaged, symmetry), rtol=1e-5, atol=1e-6)


def test_an_equivariant_model_is_unchanged_by_tta():
    rng = np.random.default_rng(2)
    batch = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)

    def per_pixel(x: np.ndarray) -> np.ndarray:
        return np.exp(x) / np.exp(x).sum(-1, keepdims=True)

    np.testing.assert_allclose(predict_with_tta(per_pixel, batch), per_pixel(batch), rtol=1e-6)
