"""Pixel grids: where a patch or tile lies, in a CRS at a scale (Earth Engine's `fixInputProj` idea).

A `GridSpec` is an infinite lattice (CRS, pixel size, origin); a `PixelGrid` is a finite window of it
(width × height pixels with an affine transform). Sources read pixels on a `PixelGrid`, so extraction
and prediction ask for exactly the same pixels whatever the source raster's own grid is.
"""

from __future__ import annotations

import dataclasses
import math

from affine import Affine


@dataclasses.dataclass(frozen=True)
class PixelGrid:
    """A north-up raster window: `width` × `height` pixels, `transform` in rasterio/GDAL order."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        a, _, c, _, e, f = self.transform
        right, bottom = c + a * self.width, f + e * self.height
        return (min(c, right), min(f, bottom), max(c, right), max(f, bottom))

    def to_earth_engine(self) -> dict:
        """The `grid` argument of `ee.data.computePixels` (a PixelGrid in the REST API)."""
        a, b, c, d, e, f = self.transform
        return {
            "dimensions": {"width": self.width, "height": self.height},
            "affineTransform": {
                "scaleX": a,
                "shearX": b,
                "translateX": c,
                "shearY": d,
                "scaleY": e,
                "translateY": f,
            },
            "crsCode": self.crs,
        }


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """A lattice of square pixels: `scale` metres (CRS units) per pixel, corners at origin + k·scale."""

    crs: str
    scale: float
    origin_x: float = 0.0
    origin_y: float = 0.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"Grid scale must be a positive pixel size, got {self.scale}.")

    def pixel_of(self, x: float, y: float) -> tuple[int, int]:
        """(column, row) of the pixel containing (x, y); rows grow southwards."""
        col = math.floor((x - self.origin_x) / self.scale)
        row = math.floor((self.origin_y - y) / self.scale)
        return col, row

    def window(self, col_off: int, row_off: int, width: int, height: int) -> PixelGrid:
        """The grid of `width` × `height` pixels whose top-left pixel is (col_off, row_off)."""
        left = self.origin_x + col_off * self.scale
        top = self.origin_y - row_off * self.scale
        return PixelGrid(self.crs, (self.scale, 0.0, left, 0.0, -self.scale, top), width, height)

    def patch_around(self, x: float, y: float, size: int) -> PixelGrid:
        """A size × size grid whose centre pixel (index size // 2) contains (x, y)."""
        col, row = self.pixel_of(x, y)
        return self.window(col - size // 2, row - size // 2, size, size)

    def pixel_centre(self, col: int, row: int) -> tuple[float, float]:
        return (self.origin_x + (col + 0.5) * self.scale, self.origin_y - (row + 0.5) * self.scale)


def grid_spec_of(crs: str, transform: Affine) -> GridSpec:
    """The lattice a north-up raster's pixels lie on."""
    if transform.b != 0 or transform.d != 0 or not math.isclose(transform.a, -transform.e, rel_tol=1e-9):
        raise ValueError(
            f"Only north-up rasters with square pixels define a sampling grid; this one has transform "
            f"{tuple(transform)[:6]}. Pass --crs and --scale to sample on an explicit grid instead."
        )
    return GridSpec(crs, transform.a, transform.c, transform.f)
