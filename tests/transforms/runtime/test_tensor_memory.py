"""Arrays lent to TensorFlow without a copy, or copied once when they cannot be; answers read in place."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.runtime.tensor_memory import (
    TENSOR_ALIGNMENT,
    aligned_batch,
    lend_to_tensorflow,
    read_in_place,
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
    assert read_in_place(tensor).ctypes.data == batch.ctypes.data
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
    assert read_in_place(tensor).ctypes.data % TENSOR_ALIGNMENT == 0
    np.testing.assert_array_equal(tensor.numpy(), array)


def test_read_in_place_is_read_only_over_the_tensor_memory():
    batch = aligned_batch(_tiles())
    values = read_in_place(lend_to_tensorflow(batch))
    assert values.ctypes.data == batch.ctypes.data and not values.flags.writeable
    np.testing.assert_array_equal(values, batch)
