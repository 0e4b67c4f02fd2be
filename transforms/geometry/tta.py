"""Test-time augmentation: a prediction averaged over the 8 symmetries of the square.

Land cover has no preferred orientation, and training already shows the model every flip and rotation
of each patch (model/dataset.py `augment`). At prediction, running the model on the 8 transformed
copies of a tile and mapping each output back before averaging the probabilities smooths out what the
model learnt for one orientation only. It costs 8 model calls per tile.

Works on numpy batches (batch, H, W, channels) and any callable that maps such a batch to
(batch, H', W', classes) probabilities with H' = H and W' = W (segmentation) or 1×1 (classification);
tiles need not be square (a transposed tile is W×H, and the model is fully convolutional).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

# A symmetry of the square: (transpose, flip rows, flip columns), applied in that order.
Symmetry = tuple[bool, bool, bool]
SYMMETRIES: tuple[Symmetry, ...] = tuple(
    (transpose, flip_rows, flip_cols)
    for transpose in (False, True)
    for flip_rows in (False, True)
    for flip_cols in (False, True)
)


def apply_symmetry(batch: np.ndarray, symmetry: Symmetry) -> np.ndarray:
    """The batch (batch, H, W, ...) transposed and/or flipped along its rows and columns."""
    transpose, flip_rows, flip_cols = symmetry
    if transpose:
        batch = np.swapaxes(batch, 1, 2)
    if flip_rows:
        batch = batch[:, ::-1]
    if flip_cols:
        batch = batch[:, :, ::-1]
    return batch


def invert_symmetry(batch: np.ndarray, symmetry: Symmetry) -> np.ndarray:
    """The inverse of `apply_symmetry`: the flips undone, then the transpose."""
    transpose, flip_rows, flip_cols = symmetry
    if flip_cols:
        batch = batch[:, :, ::-1]
    if flip_rows:
        batch = batch[:, ::-1]
    if transpose:
        batch = np.swapaxes(batch, 1, 2)
    return batch


def symmetric_views(batch: np.ndarray) -> Iterator[tuple[Symmetry, np.ndarray]]:
    """Each symmetry with the batch it makes (contiguous, as a model call wants it)."""
    for symmetry in SYMMETRIES:
        yield symmetry, np.ascontiguousarray(apply_symmetry(batch, symmetry))


def predict_with_tta(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    """The mean of `predict` over the 8 symmetric views of `batch`, each mapped back (float32)."""
    total = None
    for symmetry, view in symmetric_views(batch):
        out = invert_symmetry(np.asarray(predict(view), dtype=np.float32), symmetry)
        total = out.copy() if total is None else total + out
    return total / len(SYMMETRIES)
