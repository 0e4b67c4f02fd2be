"""Damaged copies of rasters: truncated files and corrupted blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio


def cut(path: Path, fraction: float, to: Path) -> Path:
    data = path.read_bytes()
    to.write_bytes(data[: int(len(data) * fraction)])
    return to


def damage_block(path: Path, to: Path, x: int, y: int) -> Path:
    """A copy of `path` whose block (x, y) holds random bytes (a compressed block no longer decodes)."""
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=1))
    data = bytearray(path.read_bytes())
    data[offset : offset + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    to.write_bytes(bytes(data))
    return to
