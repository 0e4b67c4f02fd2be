"""The ground area of a raster's pixels, on its own grid.

- Projected CRS: every pixel has the area of the parallelogram its transform spans, |a·e − b·d| in the
  CRS's linear unit squared (|a·e| for a north-up grid), converted to m² with the unit's factor (US
  survey feet, say).
- Geographic CRS: a pixel is a cell between two parallels and two meridians; its area depends on its
  latitude only, so it is computed once per row, exactly, on the CRS's ellipsoid: the area of the zone
  between latitudes φ1 and φ2 over Δλ radians of longitude is

      Δλ · (b² / 2) · [q(φ2) − q(φ1)],   q(φ) = sin φ / (1 − e² sin² φ) + atanh(e sin φ) / e

  (b the semi-minor axis, e the eccentricity; Snyder 1987, "Map projections: a working manual", the
  authalic latitude, Eq. 3-12). On a sphere (e = 0) q(φ) = 2 sin φ.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from pyproj import CRS

from transforms.assessment.errors import AssessmentError

M2_PER_HA = 10_000.0


@dataclasses.dataclass(frozen=True)
class PixelAreas:
    """Pixel areas of a grid in m²: one value for a projected CRS, one per row for a geographic one."""

    per_row: np.ndarray  # (height,) m² of a pixel in each row
    method: str  # how they were measured, for the report

    @property
    def uniform(self) -> bool:
        return bool(np.all(self.per_row == self.per_row[0]))


def pixel_areas(crs: str | CRS, transform: tuple[float, ...], height: int) -> PixelAreas:
    """The area of a pixel in each row of a grid (`transform` in GDAL/rasterio order a, b, c, d, e, f)."""
    try:
        crs = CRS.from_user_input(crs)
    except Exception as e:
        raise AssessmentError(f"the map's CRS {str(crs)[:80]!r} is not one pyproj knows: {e}.") from None
    a, b, c, d, e, f = (float(v) for v in transform[:6])
    if crs.is_geographic:
        return _geographic(crs, (a, b, c, d, e, f), height)
    if not crs.is_projected:
        raise AssessmentError(
            f"the map's CRS ({crs.name}) is neither projected nor geographic: its pixel areas are unknown. "
            "Reproject the map to a projected or a geographic CRS."
        )
    unit = crs.axis_info[0]
    factor = float(unit.unit_conversion_factor)  # metres per unit of the CRS's axes
    area = abs(a * e - b * d) * factor**2
    size = abs(a * e - b * d)
    in_unit = "" if factor == 1 else f" {unit.unit_name}² = {area:g}"
    method = f"projected CRS {crs.name}: every pixel |a·e − b·d| = {size:g}{in_unit} m²"
    return PixelAreas(np.full(height, area), method)


def _geographic(crs: CRS, transform: tuple[float, ...], height: int) -> PixelAreas:
    a, b, c, d, e, f = transform
    if b != 0 or d != 0:
        raise AssessmentError(
            f"the map's grid is rotated in a geographic CRS ({crs.name}); its cells are not bounded by "
            "parallels and meridians. Warp the map to a north-up grid (gdalwarp) first."
        )
    ellipsoid = crs.ellipsoid
    radians_per_unit = float(crs.axis_info[0].unit_conversion_factor)  # degrees: pi / 180
    edges = np.clip((f + e * np.arange(height + 1)) * radians_per_unit, -math.pi / 2, math.pi / 2)
    q = _authalic_q(edges, ellipsoid.semi_major_metre, ellipsoid.semi_minor_metre)
    semi_minor = ellipsoid.semi_minor_metre
    per_row = np.abs(a * radians_per_unit) * semi_minor**2 / 2 * np.abs(np.diff(q))
    method = (
        f"geographic CRS {crs.name}: each row's cell area on the {ellipsoid.name} ellipsoid "
        "(exact zone area between the row's parallels)"
    )
    return PixelAreas(per_row, method)


def _authalic_q(latitudes: np.ndarray, semi_major: float, semi_minor: float) -> np.ndarray:
    e2 = 1.0 - (semi_minor / semi_major) ** 2
    sin = np.sin(latitudes)
    if e2 <= 0:
        return 2.0 * sin
    e = math.sqrt(e2)
    return sin / (1 - e2 * sin**2) + np.arctanh(e * sin) / e
