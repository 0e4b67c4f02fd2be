"""Deterministic train/validation split: a hash decides, so a point lands on the same side on every
run and runner.

Two rules:
- **per point** (`split_of`): each point's id is hashed on its own. Neighbouring patches overlap, so a
  validation patch can share most of its pixels with training patches: the score leaks.
- **spatial blocks with a guard band** (`guarded_block_split_of`, the default): the plane is cut into
  square blocks, each block's coordinates are hashed, and a point whose patch would reach into a block
  of the other side is left out (GUARD). Every validation patch then lies inside validation blocks and
  every training patch inside training blocks, so no validation pixel is in any training patch.

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

# Default block side, in patch extents: large enough that the guard band (half a patch on each side of
# a boundary between sides) leaves out ~9 % of the points at a 0.1 validation fraction
# (0.36 x patch / block), small enough that a scene a few dozen patches wide still has many blocks.
BLOCKS_PER_PATCH_EXTENT = 4

RULE_PER_POINT = "per-point"
RULE_BLOCKS = "spatial-blocks-with-guard"


def unit_hash(key: str) -> float:
    """A stable number in [0, 1) for `key` (SHA-256; Python's hash() differs between processes)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(point_id: str, validation_fraction: float) -> str:
    """TRAIN or VALIDATION for a point, from its id alone."""
    return VALIDATION if unit_hash(point_id) < validation_fraction else TRAIN


def _block_side(bx: int, by: int, validation_fraction: float) -> str:
    return VALIDATION if unit_hash(f"block/{bx}/{by}") < validation_fraction else TRAIN


def block_split_of(x: float, y: float, block_size: float, validation_fraction: float) -> str:
    """TRAIN or VALIDATION for the `block_size` square block (CRS units) containing (x, y)."""
    return _block_side(math.floor(x / block_size), math.floor(y / block_size), validation_fraction)


def _blocks_spanned(low: float, high: float, block_size: float) -> range:
    """Indices of the blocks that the half-open interval [low, high) reaches."""
    return range(math.floor(low / block_size), math.ceil(high / block_size))


def guarded_block_split_of(
    x: float, y: float, block_size: float, half_extent: float, validation_fraction: float
) -> str:
    """TRAIN, VALIDATION, or GUARD when the square of `half_extent` around (x, y) reaches a block of
    the other side (the patch would overlap the other side's patches)."""
    if block_size < 2 * half_extent:
        raise ValueError(
            f"split block size {block_size:g} is smaller than a patch ({2 * half_extent:g}): "
            "a patch would always cross blocks. Use a block of at least one patch extent."
        )
    side = block_split_of(x, y, block_size, validation_fraction)
    for bx in _blocks_spanned(x - half_extent, x + half_extent, block_size):
        for by in _blocks_spanned(y - half_extent, y + half_extent, block_size):
            if _block_side(bx, by, validation_fraction) != side:
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
