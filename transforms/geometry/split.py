"""Deterministic train/validation split: the same on every run and runner.

Two rules:
- **per point** (`split_of`): each point's id is hashed on its own. Neighbouring patches overlap, so a
  validation patch can share most of its pixels with training patches: the score leaks.
- **spatial blocks with a guard band** (`guarded_block_split_of`, the default): the plane is cut into
  square blocks and a fraction of them are validation blocks, spread evenly (a Kronecker sequence over
  the block indices, so that every sizeable region gets its share, where independent coin flips would
  leave small scenes without any). Validation keeps every point of its blocks; a training point whose
  patch could touch a validation patch (its patch within half a patch of a validation block) is left out
  (GUARD). No validation pixel is then in any training patch.

Either rule takes a `fold`: fold k holds out the points (or blocks) whose number u in [0, 1) falls in
[1 - (k + 1) f, 1 - k f) shifted round to [0, f) (f the validation fraction), so folds 0 .. n - 1 (n =
`fold_count(f)`) hold out disjoint sets that together cover everything when 1 / f is whole: a
cross-validation by place, one extraction per fold. Fold 0 is the split without folds.

`overlap_fraction` measures what a split leaked: the share of validation patch pixels that some
training patch covers (0 for the guarded rule).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np

TRAIN = "train"
VALIDATION = "validation"
# A point whose patch would straddle blocks of both sides: left out of both.
GUARD = "guard"

# Default block side, in patch extents: the guard band (one patch around each validation block) then
# costs about 1.25 x the validation blocks' points (14 % of the training points at a 0.1 fraction)...
BLOCKS_PER_PATCH_EXTENT = 4
# ... but where the sampled area would hold fewer than MIN_BLOCKS such blocks, smaller blocks (down to
# MIN_BLOCKS_PER_PATCH_EXTENT extents), so that the validation blocks fall in the sampled regions.
MIN_BLOCKS = 64
MIN_BLOCKS_PER_PATCH_EXTENT = 2

RULE_PER_POINT = "per-point"
RULE_BLOCKS = "spatial-blocks-with-guard"


def unit_hash(key: str) -> float:
    """A stable number in [0, 1) for `key` (SHA-256; Python's hash() differs between processes)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def auto_block_size(sampled_area: float | None, patch_extent: float) -> float:
    """The default block side (CRS units) for patches of `patch_extent` over `sampled_area` (CRS units²;
    None when unknown): BLOCKS_PER_PATCH_EXTENT extents, smaller where that gives under MIN_BLOCKS."""
    largest = BLOCKS_PER_PATCH_EXTENT * patch_extent
    if not sampled_area:
        return largest
    return max(MIN_BLOCKS_PER_PATCH_EXTENT * patch_extent, min(largest, math.sqrt(sampled_area / MIN_BLOCKS)))


def fold_count(validation_fraction: float) -> int:
    """How many folds hold out disjoint sets at this fraction (the last one smaller when 1 / f is not
    whole)."""
    if validation_fraction <= 0:
        return 1
    return math.ceil(1 / validation_fraction - 1e-9)


def _held_out(u: float, validation_fraction: float, fold: int) -> bool:
    return (u + fold * validation_fraction) % 1.0 < validation_fraction


def split_of(point_id: str, validation_fraction: float, fold: int = 0) -> str:
    """TRAIN or VALIDATION for a point, from its id alone."""
    return VALIDATION if _held_out(unit_hash(point_id), validation_fraction, fold) else TRAIN


# Kronecker sequence steps (golden ratio and silver ratio conjugates): frac(a*bx + b*by) is spread
# evenly over [0, 1) on any window of blocks, so the validation blocks are too.
_STEP_X = 0.6180339887498949
_STEP_Y = 0.4142135623730951


def _block_side(bx: int, by: int, validation_fraction: float, fold: int = 0) -> str:
    u = (bx * _STEP_X + by * _STEP_Y) % 1.0
    return VALIDATION if _held_out(u, validation_fraction, fold) else TRAIN


def block_split_of(x: float, y: float, block_size: float, validation_fraction: float, fold: int = 0) -> str:
    """TRAIN or VALIDATION for the `block_size` square block (CRS units) containing (x, y)."""
    return _block_side(math.floor(x / block_size), math.floor(y / block_size), validation_fraction, fold)


def _blocks_spanned(low: float, high: float, block_size: float) -> range:
    """Indices of the blocks that the half-open interval [low, high) reaches."""
    return range(math.floor(low / block_size), math.ceil(high / block_size))


def guarded_block_split_of(
    x: float, y: float, block_size: float, half_extent: float, validation_fraction: float, fold: int = 0
) -> str:
    """VALIDATION for a point in a validation block; TRAIN for a point in a training block whose patch
    (`half_extent` around it) stays more than `half_extent` away from every validation block, so that
    it cannot touch a validation patch; else GUARD."""
    if block_size < 2 * half_extent:
        raise ValueError(
            f"split block size {block_size:g} is smaller than a patch ({2 * half_extent:g}): "
            "a patch would always cross blocks. Use a block of at least one patch extent."
        )
    side = block_split_of(x, y, block_size, validation_fraction, fold)
    if side == VALIDATION:
        return side
    reach = 2 * half_extent
    for bx in _blocks_spanned(x - reach, x + reach, block_size):
        for by in _blocks_spanned(y - reach, y + reach, block_size):
            if _block_side(bx, by, validation_fraction, fold) == VALIDATION:
                return GUARD
    return side


def overlap_fraction(
    train: Iterable[tuple[float, float]],
    validation: Iterable[tuple[float, float]],
    patch_pixels: int,
    scale: float,
) -> float:
    """Share of validation patch pixels covered by at least one training patch.

    Patches are `patch_pixels` squares of `scale`-sized pixels centred on the given points (CRS units);
    offsets are rounded to whole pixels, as patches are cut on the pixel grid.
    """
    extent = patch_pixels * scale
    cells: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
    for x, y in train:
        cells[(math.floor(x / extent), math.floor(y / extent))].append((x, y))
    covered = total = 0
    for vx, vy in validation:
        mask = np.zeros((patch_pixels, patch_pixels), dtype=bool)
        for tx, ty in _neighbours(cells, vx, vy, extent):
            dx = round((tx - vx) / scale)
            dy = round((ty - vy) / scale)
            if abs(dx) >= patch_pixels or abs(dy) >= patch_pixels:
                continue
            mask[max(0, dy) : patch_pixels + min(0, dy), max(0, dx) : patch_pixels + min(0, dx)] = True
        covered += int(mask.sum())
        total += mask.size
    return covered / total if total else 0.0


def _neighbours(cells, x: float, y: float, extent: float) -> Iterator[tuple[float, float]]:
    cx, cy = math.floor(x / extent), math.floor(y / extent)
    for i in (cx - 1, cx, cx + 1):
        for j in (cy - 1, cy, cy + 1):
            yield from cells.get((i, j), ())
