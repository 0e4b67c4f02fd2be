"""Stratified sampling of points inside labelled regions (like `ee.Image.stratifiedSample`).

Within each region, up to N pixels per stratum are drawn without replacement from the label raster,
deterministically for a seed. A stratum is the label class, or optionally class × bin of another band
(e.g. elevation), so rare combinations are not drowned by common ones. A stratum with fewer pixels than
asked contributes what it has.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Sequence

import numpy as np
import rasterio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from rasterio import features
from rasterio.warp import transform as transform_coords
from rasterio.warp import transform_geom
from rasterio.windows import Window, from_bounds

from transforms.contracts.label_scheme import LabelScheme
from transforms.contracts.schema import LABEL_NODATA


class RegionsError(ValueError):
    """The regions file cannot be used (missing, not GeoJSON, empty, outside the rasters)."""


@dataclasses.dataclass(frozen=True)
class Region:
    """A named polygon in lon/lat (GeoJSON geometry, EPSG:4326)."""

    name: str
    geometry: dict


@dataclasses.dataclass(frozen=True)
class Point:
    """A sampled pixel centre: `x`, `y` in `crs`; `label` is its class index in the label scheme,
    `stratum` its class (or class × bin)."""

    id: str
    region: str
    x: float
    y: float
    crs: str
    lon: float
    lat: float
    label: int
    stratum: int


def load_regions(path: str) -> list[Region]:
    """Read a GeoJSON FeatureCollection, Feature or geometry of (multi)polygons in lon/lat (local or gs://)."""
    try:
        if not FileSystems.exists(path):
            raise RegionsError(f"Regions file {path!r} does not exist.")
        # FileSystems reads gs:// too (e.g. on a Flex Template launcher).
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RegionsError(f"Regions file {path!r} is not valid GeoJSON: {e}.") from None
    return parse_regions(doc, source=path)


def parse_regions(doc: object, source: str = "regions") -> list[Region]:
    if not isinstance(doc, dict) or "type" not in doc:
        raise RegionsError(f"{source} is not a GeoJSON object (no 'type' member).")
    if doc["type"] == "FeatureCollection":
        items = doc.get("features") or []
    elif doc["type"] == "Feature":
        items = [doc]
    else:
        items = [{"type": "Feature", "geometry": doc, "properties": {}}]
    regions = []
    for i, feature in enumerate(items):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(geometry, dict) or geometry.get("type") not in ("Polygon", "MultiPolygon"):
            kind = geometry.get("type") if isinstance(geometry, dict) else geometry
            raise RegionsError(f"{source}: feature {i} must be a Polygon or MultiPolygon, got {kind!r}.")
        if not geometry.get("coordinates"):
            raise RegionsError(f"{source}: feature {i} has no coordinates.")
        props = feature.get("properties") or {}
        name = str(props.get("name") or props.get("id") or feature.get("id") or f"region{i}")
        regions.append(Region(name, geometry))
    if not regions:
        raise RegionsError(f"{source} holds no polygons; add at least one region to sample from.")
    if len({r.name for r in regions}) != len(regions):
        raise RegionsError(f"{source}: region names must be unique ({[r.name for r in regions]}).")
    return regions


def regions_area(regions: Sequence[Region], crs: str) -> float:
    """The summed area of the regions' bounding boxes in `crs` (CRS units²): the extent that points are
    sampled over, what the split's default block size is sized from."""
    from rasterio.features import bounds
    from rasterio.warp import transform_bounds

    total = 0.0
    for region in regions:
        left, bottom, right, top = transform_bounds("EPSG:4326", crs, *bounds(region.geometry))
        total += max(0.0, right - left) * max(0.0, top - bottom)
    return total


def whole_raster_region(path: str, name: str = "all") -> Region:
    """The raster's whole extent as one lon/lat region (for sampling without a regions file)."""
    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
        steps = np.linspace(0.0, 1.0, 21)
        xs = np.r_[
            left + (right - left) * steps,
            np.full(21, right),
            right - (right - left) * steps,
            np.full(21, left),
        ]
        ys = np.r_[
            np.full(21, top),
            top - (top - bottom) * steps,
            np.full(21, bottom),
            bottom + (top - bottom) * steps,
        ]
        ring = [[float(x), float(y)] for x, y in zip(xs, ys)] + [[float(xs[0]), float(ys[0])]]
        geometry = transform_geom(src.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    return Region(name, geometry)


def region_windows(path: str, regions: Sequence[Region], margin: int = 0) -> list[Window]:
    """The raster windows holding each region, grown by `margin` pixels (what patches around its
    points may read) and clipped to the raster."""
    windows = []
    with rasterio.open(path) as src:
        for region in regions:
            left, bottom, right, top = features.bounds(transform_geom("EPSG:4326", src.crs, region.geometry))
            window = from_bounds(left, bottom, right, top, src.transform).round_offsets().round_lengths()
            grown = Window(
                window.col_off - margin,
                window.row_off - margin,
                window.width + 2 * margin,
                window.height + 2 * margin,
            )
            if not _overlaps(grown, src):
                continue
            clipped = grown.intersection(Window(0, 0, src.width, src.height))
            if clipped.width > 0 and clipped.height > 0:
                windows.append(clipped)
    return windows


def stratum_of(labels: np.ndarray, bins: np.ndarray | None, num_bins: int) -> np.ndarray:
    """Stratum index per pixel: the class, or class * num_bins + bin when binning by another band."""
    strata = labels.astype(np.int64)
    if bins is not None:
        strata = strata * num_bins + bins
    return strata


def choose_per_stratum(
    strata: np.ndarray, candidates: np.ndarray, num_points: int, rng: np.random.Generator
) -> dict[int, np.ndarray]:
    """Up to `num_points` flat indices per stratum among `candidates`, without replacement, sorted."""
    chosen: dict[int, np.ndarray] = {}
    flat = np.flatnonzero(candidates.ravel())
    values = strata.ravel()[flat]
    order = np.argsort(values, kind="stable")
    flat, values = flat[order], values[order]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else np.array([], int)
    ends = np.r_[starts[1:], len(values)]
    for start, end in zip(starts, ends):
        pool = flat[start:end]
        take = min(num_points, len(pool))
        chosen[int(values[start])] = np.sort(rng.choice(pool, size=take, replace=False))
    return chosen


def sample_region(
    region: Region,
    labels_path: str,
    num_points: int,
    seed: int,
    *,
    classes: Sequence[int] | None = None,
    strata_band: tuple[str, int] | None = None,
    strata_edges: Sequence[float] = (),
    margin: int = 0,
    scheme: LabelScheme | None = None,
    label_band: int = 1,
) -> list[Point]:
    """Stratified sample of one region on the label raster's own pixel grid.

    `scheme` turns the raster's label values into class indices (pixels it ignores, or does not know,
    are never sampled); without one, the values are the class indices already. `classes` are class
    indices to keep. `strata_band` is (path, band index) of a raster on the same grid whose values, binned by
    `strata_edges`, split each class further. `margin` keeps points that many pixels inside the raster
    so patches centred on them fit.
    """
    with rasterio.open(labels_path) as src:
        crs = src.crs.to_string()
        geometry = transform_geom("EPSG:4326", src.crs, region.geometry)
        left, bottom, right, top = features.bounds(geometry)
        window = from_bounds(left, bottom, right, top, src.transform).round_offsets().round_lengths()
        window = window.intersection(Window(0, 0, src.width, src.height)) if _overlaps(window, src) else None
        if window is None or window.width <= 0 or window.height <= 0:
            return []
        raw = src.read(label_band, window=window)
        transform = src.window_transform(window)
        inside = features.geometry_mask([geometry], raw.shape, transform, invert=True, all_touched=False)
        if scheme is not None:
            labels = scheme.remap(raw, nodata=src.nodata)
            inside &= labels < scheme.num_classes
        else:
            labels = raw
            inside &= labels != (src.nodata if src.nodata is not None else LABEL_NODATA)
        if classes is not None:
            inside &= np.isin(labels, np.asarray(classes))
        if margin:
            rows = np.arange(window.row_off, window.row_off + window.height)[:, None]
            cols = np.arange(window.col_off, window.col_off + window.width)[None, :]
            inside &= (rows >= margin) & (rows < src.height - margin)
            inside &= (cols >= margin) & (cols < src.width - margin)
    bins = None
    if strata_band is not None:
        with rasterio.open(strata_band[0]) as aux:
            values = aux.read(strata_band[1], window=window)
        bins = np.digitize(values, np.asarray(strata_edges))
    strata = stratum_of(labels, bins, len(strata_edges) + 1)
    rng = np.random.default_rng([seed, zlib.crc32(region.name.encode("utf-8"))])
    chosen = choose_per_stratum(strata, inside, num_points, rng)
    if not chosen:
        return []
    flat = np.concatenate(list(chosen.values()))
    rows, cols = np.unravel_index(flat, labels.shape)
    xs, ys = transform @ (cols + 0.5, rows + 0.5)
    lons, lats = transform_coords(crs, "EPSG:4326", list(xs), list(ys))
    points = []
    for row, col, x, y, lon, lat in zip(rows, cols, xs, ys, lons, lats):
        grow, gcol = int(row + window.row_off), int(col + window.col_off)
        points.append(
            Point(
                id=f"{region.name}/{grow}/{gcol}",
                region=region.name,
                x=float(x),
                y=float(y),
                crs=crs,
                lon=float(lon),
                lat=float(lat),
                label=int(labels[row, col]),
                stratum=int(strata[row, col]),
            )
        )
    return points


def _overlaps(window: Window, src) -> bool:
    return (
        window.col_off < src.width
        and window.row_off < src.height
        and window.col_off + window.width > 0
        and window.row_off + window.height > 0
    )
