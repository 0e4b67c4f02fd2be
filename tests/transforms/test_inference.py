"""The model's call: batches lent to TensorFlow in place, answers read in place, the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.models import conv_model, export
from transforms.inference import (
    TENSOR_ALIGNMENT,
    aligned_batch,
    lend_to_tensorflow,
    load_saved_model,
)


def _tiles(count: int = 3, size: int = 16, bands: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.normal(size=(size, size, bands)).astype(np.float32) for _ in range(count)]


def test_aligned_batch_is_the_stack_in_aligned_memory():
    tiles = _tiles()
    batch = aligned_batch(tiles)
    np.testing.assert_array_equal(batch, np.stack(tiles))
    assert batch.dtype == np.float32 and batch.flags.c_contiguous and batch.flags.writeable
    assert batch.ctypes.data % TENSOR_ALIGNMENT == 0


def test_an_aligned_batch_is_lent_without_a_copy():
    batch = aligned_batch(_tiles())
    tensor = lend_to_tensorflow(batch)
    assert np.asarray(memoryview(tensor)).ctypes.data == batch.ctypes.data
    np.testing.assert_array_equal(tensor.numpy(), batch)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda b: np.frombuffer(b"\0" * 4 + b.tobytes(), np.float32)[1:].reshape(b.shape), id="unaligned"
        ),
        pytest.param(lambda b: np.rot90(b, axes=(1, 2)), id="not-contiguous"),
        pytest.param(lambda b: np.frombuffer(b.tobytes(), np.float32).reshape(b.shape), id="read-only"),
    ],
)
def test_other_arrays_are_copied_once_and_keep_their_values(make):
    array = make(np.stack(_tiles()))
    tensor = lend_to_tensorflow(array)
    assert np.asarray(memoryview(tensor)).ctypes.data % TENSOR_ALIGNMENT == 0
    np.testing.assert_array_equal(tensor.numpy(), array)


def test_loaded_model_answers_as_tensorflow_does_read_only(tmp_path):
    tiles = _tiles(count=4, size=32)
    model = load_saved_model(export(conv_model(np.stack(tiles)), tmp_path / "model"))
    for batch in (aligned_batch(tiles), np.stack(tiles), np.stack(tiles)[:, ::-1]):
        expected = model.function(image=tf.constant(batch))["probabilities"].numpy()
        got = model(batch)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert got.shape == (4, 32, 32, 4) and not got.flags.writeable
