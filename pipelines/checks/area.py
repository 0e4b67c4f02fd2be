"""Where a prediction is, checked before the job starts: its output grid (the model's, on the imagery's
own lattice where they agree) and its area of interest (--aoi: a lon/lat box or GeoJSON polygons,
inside the imagery)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import rasterio.crs
from apache_beam.io.filesystems import FileSystems
from rasterio.features import bounds as geometry_bounds
from rasterio.warp import transform_bounds, transform_geom

from pipelines.shell import UsageError
from transforms.geometry.grid import GridSpec, grid_spec_of
from transforms.geometry.sampling import Region, RegionsError, parse_regions
from transforms.geometry.tiling import RegionMask

Bounds = tuple[float, float, float, float]


def output_grid(opts: Any, info: dict[str, Any], source: Any) -> GridSpec:
    """The model's grid (or --crs/--scale), on the imagery's own lattice when it is the same grid."""
    crs = opts.crs or info["crs"]
    scale = float(opts.scale or info["scale"])
    try:
        wanted = rasterio.crs.CRS.from_user_input(crs)
    except rasterio.errors.CRSError as e:
        raise UsageError(f"Unknown CRS {crs!r}: {e}") from None
    if hasattr(source, "native_grid"):
        native_crs, transform, _, _ = source.native_grid()
        try:
            native = grid_spec_of(native_crs, transform)
        except ValueError:
            native = None
        if (
            native is not None
            and rasterio.crs.CRS.from_user_input(native_crs) == wanted
            and math.isclose(native.scale, scale, rel_tol=1e-9)
        ):
            return GridSpec(crs, scale, native.origin_x, native.origin_y)
    return GridSpec(crs, scale)


def area_to_predict(aoi: str | None, crs: str, source: Any) -> tuple[Bounds, RegionMask | None]:
    """Bounds in `crs` of --aoi (default: the imagery's footprint) and, for polygons, the mask of the
    pixels outside them."""
    bounds, region = _region(aoi, crs) if aoi else (None, None)
    footprint = source.footprint(crs) if hasattr(source, "footprint") else None
    if bounds is None:
        if footprint is None:
            raise UsageError("This source has no footprint to predict by default; pass --aoi.")
        return footprint, None
    if footprint is not None and not _intersects(bounds, footprint):
        raise UsageError(
            f"The region {aoi!r} lies outside the imagery: in {crs} the region spans "
            f"{_fmt(bounds)} and the imagery {_fmt(footprint)}. Check the region's coordinates (lon/lat) "
            "or the input rasters."
        )
    return bounds, region


def aoi_regions(aoi: str) -> list[Region]:
    """--aoi as lon/lat regions: the box W,S,E,N as one polygon, or the GeoJSON file's polygons."""
    box = _bbox(aoi)
    if box is not None:
        west, south, east, north = box
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        return [Region("aoi", {"type": "Polygon", "coordinates": [ring]})]
    try:
        with FileSystems.open(aoi) as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise UsageError(
            f"--aoi {aoi!r} is neither a bounding box W,S,E,N nor a readable GeoJSON file: {e}"
        ) from None
    try:
        return parse_regions(doc, source=aoi)
    except RegionsError as e:
        raise UsageError(str(e)) from None


def _region(aoi: str, crs: str) -> tuple[Bounds, RegionMask | None]:
    """Bounds in `crs` and, for polygons, the mask of pixels outside them."""
    box = _bbox(aoi)
    if box is not None:
        return transform_bounds("EPSG:4326", crs, *box, densify_pts=21), None
    regions = aoi_regions(aoi)
    polygons = []
    for region in regions:
        geometry = transform_geom("EPSG:4326", crs, region.geometry)
        if geometry["type"] == "Polygon":
            polygons.append(geometry["coordinates"])
        else:
            polygons.extend(geometry["coordinates"])
    geometry = {"type": "MultiPolygon", "coordinates": polygons}
    return tuple(geometry_bounds(geometry)), RegionMask(geometry)


def _bbox(aoi: str) -> Bounds | None:
    parts = aoi.split(",")
    if len(parts) != 4:
        return None
    try:
        west, south, east, north = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--aoi {aoi!r}: a bounding box is four numbers W,S,E,N in lon/lat.") from None
    if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
        raise UsageError(
            f"--aoi {aoi!r}: a bounding box is W,S,E,N in degrees with W < E and S < N "
            "(longitudes in [-180, 180], latitudes in [-90, 90])."
        )
    return west, south, east, north


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fmt(bounds: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in bounds) + ")"
