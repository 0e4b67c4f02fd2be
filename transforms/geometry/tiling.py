"""Tiling a prediction region: overlapping input tiles on a pixel lattice, and trimming them back.

Tiles follow Earth Engine's `inputTileSize` / `inputOverlapSize` semantics: a tile of `tile_size` pixels
with a total `overlap` of 2N pixels is an N-pixel border around a core of `tile_size - 2N` pixels. The
cores tile the output raster edge to edge, so each output pixel is predicted by exactly one tile, from a
window that reaches N pixels past it on every side. With N at least half the model's receptive field,
every kept pixel saw all of its context and the mosaic has no seams.

Tiles are made row by row (`TilePlan.tiles_in_row`), so a plan of any size is never held in memory. Edge
cores are cut at the output's edge; their input windows keep the full tile size (pixels outside the
imagery are read as the source's fill value), so every tile has the same shape and batches together.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np

from transforms.geometry.grid import GridSpec, PixelGrid
from transforms.runtime import progress

# A region edge within this fraction of a pixel of a lattice line snaps to it (floating-point noise of
# bounds reprojected or computed from a transform), rather than adding a sliver row or column.
SNAP_TOLERANCE = 1e-6
_planned = progress.counter("predict", "tiles_planned")


class TilingError(ValueError):
    """Tile size, overlap or region that cannot be tiled; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class TilingSpec:
    """`tile_size` pixels per tile side, `overlap` pixels shared by neighbouring tiles (2 × the border)."""

    tile_size: int
    overlap: int

    def __post_init__(self) -> None:
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) or self.tile_size < 1:
            raise TilingError(f"--tile-size must be a positive number of pixels, got {self.tile_size!r}.")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or self.overlap < 0:
            raise TilingError(f"--overlap must be a non-negative number of pixels, got {self.overlap!r}.")
        if self.overlap % 2:
            raise TilingError(
                f"--overlap must be even: it is the total of two equal borders ({self.overlap} would "
                f"leave {self.overlap / 2} pixels on each side); use {self.overlap - 1} or {self.overlap + 1}."
            )
        if self.overlap >= self.tile_size:
            raise TilingError(
                f"--overlap ({self.overlap}) must be smaller than --tile-size ({self.tile_size}): each tile "
                "needs a core of at least one pixel; use a larger tile or a smaller overlap."
            )

    @property
    def border(self) -> int:
        """Pixels trimmed from each side of a predicted tile."""
        return self.overlap // 2

    @property
    def step(self) -> int:
        """Side of a tile's core: the distance between neighbouring tiles."""
        return self.tile_size - self.overlap


@dataclasses.dataclass(frozen=True)
class Tile:
    """One tile: its place in the plan, its core in output pixels and the input window to read."""

    row: int
    col: int
    col_off: int  # core's first column in the output raster
    row_off: int  # core's first row in the output raster
    width: int  # core width (the step, or less at the right edge)
    height: int  # core height (the step, or less at the bottom edge)
    grid: PixelGrid  # the tile_size × tile_size input window, core plus border
    core: PixelGrid  # the output pixels this tile writes

    @property
    def id(self) -> str:
        return f"r{self.row:05d}_c{self.col:05d}"

    def to_json(self) -> dict:
        """What a dead letter needs to retry the tile."""
        return {
            "id": self.id,
            "row": self.row,
            "col": self.col,
            "window": [self.col_off, self.row_off, self.width, self.height],
            "grid": dataclasses.asdict(self.grid),
        }


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """The tiles covering `output` (a window of `lattice` at `col0`, `row0`)."""

    lattice: GridSpec
    col0: int
    row0: int
    width: int
    height: int
    spec: TilingSpec

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise TilingError(f"The region is empty on the output grid ({self.width}×{self.height} pixels).")

    @property
    def output(self) -> PixelGrid:
        """The output raster's grid: exactly the region's pixels on the lattice."""
        return self.lattice.window(self.col0, self.row0, self.width, self.height)

    @property
    def rows(self) -> int:
        return -(-self.height // self.spec.step)

    @property
    def cols(self) -> int:
        return -(-self.width // self.spec.step)

    def __len__(self) -> int:
        return self.rows * self.cols

    def tile(self, row: int, col: int) -> Tile:
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise IndexError(f"tile ({row}, {col}) is outside the {self.rows}×{self.cols} plan")
        step, border, size = self.spec.step, self.spec.border, self.spec.tile_size
        col_off, row_off = col * step, row * step
        width, height = min(step, self.width - col_off), min(step, self.height - row_off)
        first_col, first_row = self.col0 + col_off, self.row0 + row_off
        grid = self.lattice.window(first_col - border, first_row - border, size, size)
        core = self.lattice.window(first_col, first_row, width, height)
        return Tile(row, col, col_off, row_off, width, height, grid, core)

    def tiles_in_row(self, row: int) -> Iterator[Tile]:
        for col in range(self.cols):
            yield self.tile(row, col)

    def __iter__(self) -> Iterator[Tile]:
        for row in range(self.rows):
            yield from self.tiles_in_row(row)


def plan_for_bounds(
    lattice: GridSpec, bounds: tuple[float, float, float, float], spec: TilingSpec
) -> TilePlan:
    """The plan whose output covers `bounds` (left, bottom, right, top, in the lattice's CRS).

    The output is every lattice pixel that the bounds touch, so a region whose edges lie on lattice lines
    (a raster's own footprint) gives exactly that raster's grid.
    """
    left, bottom, right, top = bounds
    if not (right > left and top > bottom):
        raise TilingError(f"The region's bounds {bounds} are empty.")
    s = lattice.scale
    col0 = _snap_floor((left - lattice.origin_x) / s)
    col1 = _snap_ceil((right - lattice.origin_x) / s)
    row0 = _snap_floor((lattice.origin_y - top) / s)
    row1 = _snap_ceil((lattice.origin_y - bottom) / s)
    return TilePlan(lattice, col0, row0, max(col1 - col0, 1), max(row1 - row0, 1), spec)


def _snap_floor(value: float) -> int:
    nearest = round(value)
    return int(nearest) if abs(value - nearest) < SNAP_TOLERANCE else math.floor(value)


def _snap_ceil(value: float) -> int:
    nearest = round(value)
    return int(nearest) if abs(value - nearest) < SNAP_TOLERANCE else math.ceil(value)


def trim(prediction: np.ndarray, tile: Tile, spec: TilingSpec) -> np.ndarray:
    """The core of a predicted tile: `prediction` is (tile_size, tile_size, ...), the result (h, w, ...).

    A classification model's (1, 1, classes) output is one prediction for the whole tile; it is
    broadcast over the core.
    """
    if prediction.shape[:2] == (1, 1) and spec.tile_size != 1:
        return np.broadcast_to(prediction, (tile.height, tile.width, *prediction.shape[2:]))
    if prediction.shape[:2] != (spec.tile_size, spec.tile_size):
        raise ValueError(
            f"The model returned a {prediction.shape[0]}×{prediction.shape[1]} prediction for a "
            f"{spec.tile_size}×{spec.tile_size} tile; a segmentation model must keep the input size."
        )
    b = spec.border
    return prediction[b : b + tile.height, b : b + tile.width]


class RegionMask:
    """Which pixels of a tile's core lie outside a (multi)polygon given in the lattice's CRS.

    A pixel is inside when its centre is (GDAL's rasterization rule). Callable on a tile: (h, w) bool,
    True outside. Picklable: it holds only the GeoJSON geometry.
    """

    def __init__(self, geometry: dict) -> None:
        self.geometry = geometry

    def __call__(self, tile: Tile) -> np.ndarray:
        from rasterio.features import geometry_mask

        return geometry_mask(
            [self.geometry], out_shape=(tile.height, tile.width), transform=tile.core.affine, invert=False
        )

    def touches(self, tile: Tile) -> bool:
        """True when at least one pixel of the tile's core lies inside the region."""
        return not bool(self(tile).all())


def tiles_of_row(row: int, plan: TilePlan, region: RegionMask | None = None) -> Iterator[Tile]:
    """The tiles of one plan row, without those wholly outside `region` (counted: the job's total)."""
    for tile in plan.tiles_in_row(row):
        if region is None or region.touches(tile):
            _planned.inc()
            yield tile
