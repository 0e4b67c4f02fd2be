"""The model's call: batches lent to TensorFlow in place, answers read in place, the same numbers."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tests.helpers.models import conv_model, export
from transforms.inference import load_saved_model
from transforms.runtime.tensor_memory import aligned_batch


def _tiles(count: int, size: int, bands: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(size, size, bands)).astype(np.float32) for _ in range(count)]


def test_loaded_model_answers_as_tensorflow_does_read_only(tmp_path):
    tiles = _tiles(count=4, size=32)
    model = load_saved_model(export(conv_model(np.stack(tiles)), tmp_path / "model"))
    for batch in (aligned_batch(tiles), np.stack(tiles), np.stack(tiles)[:, ::-1]):
        expected = model.function(image=tf.constant(batch))["probabilities"].numpy()
        got = model(batch)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert got.shape == (4, 32, 32, 4) and not got.flags.writeable
