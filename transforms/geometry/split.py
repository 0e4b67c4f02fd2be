"""Deterministic train/validation split: a hash decides, so a point lands on the same side on every
run and runner. The spatial-block variant hashes the block a point lies in, so neighbouring patches
(which overlap and would leak pixels across the split) always go to the same side."""

from __future__ import annotations

import hashlib
import math

TRAIN = "train"
VALIDATION = "validation"


def unit_hash(key: str) -> float:
    """A stable number in [0, 1) for `key` (SHA-256; Python's hash() differs between processes)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(point_id: str, validation_fraction: float) -> str:
    """TRAIN or VALIDATION for a point, from its id alone."""
    return VALIDATION if unit_hash(point_id) < validation_fraction else TRAIN


def block_split_of(x: float, y: float, block_size: float, validation_fraction: float) -> str:
    """TRAIN or VALIDATION for the `block_size` square block (CRS units) containing (x, y)."""
    key = f"block/{math.floor(x / block_size)}/{math.floor(y / block_size)}"
    return VALIDATION if unit_hash(key) < validation_fraction else TRAIN
