"""The training patches of an extraction, as rectangles of a class map's pixels to leave out of an
assessment's population.

A model scores well on the pixels it was trained on, so sample points that fall in its training patches
inflate its accuracy. `training_footprints` reads an extraction folder (manifest.json and its TFRecord
shards, with the project's own readers: no TensorFlow), takes the centre (lon/lat metadata) of every
record of the training split, and places its patch_size × patch_size footprint on the map:

- map on the extraction's grid (same CRS, pixels of the manifest's scale, north up): the patch_size ×
  patch_size map pixels around the one holding the centre, cut as extraction cuts a patch
  (`GridSpec.patch_around`) on the map's pixel lattice. This is exact when the map shares the
  extraction's lattice, as a prediction on the extraction's imagery does;
- any other map: the manifest does not record the lattice's origin, so the footprint is the square
  every placement of the patch around its centre lies in (one extraction pixel wider than the patch),
  reprojected to the map's CRS and approximated by its bounding box in map pixels: a little more than
  the patch is left out, never less.

Footprints stay rectangles (row and column ranges); `strip_mask` marks the ones that cross a strip of
rows, so a large map never needs a whole-map mask.
"""

from __future__ import annotations

import dataclasses
import os
import zlib

import numpy as np

from transforms.assessment.errors import AssessmentError

TRAINING_SPLIT = "train"
MANIFEST_NAME = "manifest.json"  # transforms.contracts.manifest.MANIFEST_NAME (imported lazily: Beam)
# Points along each edge of a reprojected footprint: enough for the curvature of any projection change
# over a patch (rasterio's `transform_bounds` default, 21, is for whole rasters).
EDGE_POINTS = 11


@dataclasses.dataclass(frozen=True)
class TrainingFootprints:
    """The training patches of an extraction as rectangles of map pixels."""

    source: str  # the extraction folder
    patches: int  # records in its training split
    patch_size: int
    rects: np.ndarray  # (m, 4) int64 first row, end row, first col, end col; only footprints on the map
    placement: str  # how the footprints were placed on the map, for design.json and the report

    @property
    def on_map(self) -> int:
        """Footprints that cover at least one map pixel."""
        return len(self.rects)

    def strip_mask(self, row: int, rows: int, width: int) -> np.ndarray | None:
        """(rows, width) booleans: which pixels of map rows [row, row + rows) lie in a footprint; None
        when no footprint crosses the strip."""
        r = self.rects
        crossing = r[(r[:, 0] < row + rows) & (r[:, 1] > row)]
        if not len(crossing):
            return None
        mask = np.zeros((rows, width), bool)
        for first_row, end_row, first_col, end_col in crossing.tolist():
            mask[max(first_row - row, 0) : end_row - row, first_col:end_col] = True
        return mask


def training_footprints(
    data_dir: str, crs: str, transform: tuple[float, ...], width: int, height: int
) -> TrainingFootprints:
    """The training patches of the extraction in `data_dir`, placed on a map grid (`crs` as WKT or any
    form rasterio reads, `transform` in GDAL/rasterio order, `width` × `height` pixels)."""
    from transforms.contracts.manifest import ManifestError, read_manifest, schema_of

    source = os.path.abspath(data_dir) if "://" not in data_dir else data_dir
    if "://" not in data_dir and not os.path.exists(os.path.join(data_dir, MANIFEST_NAME)):
        raise AssessmentError(
            f"--exclude-training {data_dir!r}: no {MANIFEST_NAME} there; pass the folder that `terrabeam "
            "extract` wrote the model's training data to (its --output, e.g. out/demo/data)."
        )
    try:
        manifest = read_manifest(data_dir)
        patch_size = schema_of(manifest).patch_size
    except (ManifestError, ValueError, KeyError, TypeError) as e:
        raise AssessmentError(f"--exclude-training {data_dir!r}: {e}") from None
    grid_crs, scale = manifest.get("crs"), manifest.get("scale")
    if not grid_crs or not scale:
        raise AssessmentError(
            f"--exclude-training {data_dir!r}: the manifest names no grid (crs, scale), so its patches "
            "cannot be placed on the map; run the extraction again with this version of terrabeam."
        )
    lons, lats = _centres(data_dir, manifest)
    if _same_grid(crs, transform, grid_crs, float(scale)):
        rects = _rects_on_lattice(lons, lats, crs, transform, patch_size)
        placement = (
            f"{patch_size}x{patch_size} map pixels around the pixel holding each patch's centre (the map "
            "is on the extraction's grid)"
        )
    else:
        rects = _rects_reprojected(lons, lats, grid_crs, float(scale), crs, transform, patch_size)
        placement = (
            f"each {patch_size}x{patch_size}-pixel patch of the extraction's grid ({grid_crs} at {float(scale):g}), "
            "widened by one of its pixels and reprojected, approximated by its bounding box in map pixels"
        )
    rects[:, 0:2] = rects[:, 0:2].clip(0, height)
    rects[:, 2:4] = rects[:, 2:4].clip(0, width)
    on_map = (rects[:, 0] < rects[:, 1]) & (rects[:, 2] < rects[:, 3])
    return TrainingFootprints(source, len(lons), patch_size, rects[on_map], placement)


def _centres(data_dir: str, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat of every record of the training split."""
    from transforms.contracts.schema import META_LAT, META_LON, decode_example
    from transforms.io.tfrecords import read_records

    split = manifest["splits"].get(TRAINING_SPLIT) or {}
    compression = "gzip" if str(manifest.get("compression", "GZIP")).upper() == "GZIP" else "none"
    lons: list[float] = []
    lats: list[float] = []
    for path in split.get("files", []):
        try:
            for number, record in enumerate(read_records(path, compression), start=1):
                meta = decode_example(record, (META_LON, META_LAT))
                if len(meta.get(META_LON, ())) != 1 or len(meta.get(META_LAT, ())) != 1:
                    raise AssessmentError(
                        f"--exclude-training {data_dir!r}: record {number} of {path} has no {META_LON}/"
                        f"{META_LAT} of its centre, so its patch cannot be placed on the map; pass the "
                        "folder that `terrabeam extract` wrote (its records carry them)."
                    )
                lons.append(float(meta[META_LON][0]))
                lats.append(float(meta[META_LAT][0]))
        except AssessmentError:
            raise
        except (OSError, ValueError, zlib.error) as e:
            raise AssessmentError(
                f"--exclude-training {data_dir!r}: cannot read {path} ({e}); run the extraction again."
            ) from None
    return np.asarray(lons, np.float64), np.asarray(lats, np.float64)


def _same_grid(crs: str, transform: tuple[float, ...], grid_crs: str, scale: float) -> bool:
    """Whether the map's pixels are the extraction grid's: same CRS, north up, square pixels of its scale."""
    import math

    import rasterio.crs
    from rasterio.errors import CRSError

    a, b, _, d, e, _ = transform[:6]
    if (
        b != 0
        or d != 0
        or not math.isclose(a, scale, rel_tol=1e-9)
        or not math.isclose(-e, scale, rel_tol=1e-9)
    ):
        return False
    try:
        return rasterio.crs.CRS.from_user_input(crs) == rasterio.crs.CRS.from_user_input(grid_crs)
    except CRSError:
        return False


def _rects_on_lattice(
    lons: np.ndarray, lats: np.ndarray, crs: str, transform: tuple[float, ...], size: int
) -> np.ndarray:
    from pyproj import Transformer

    from transforms.geometry.grid import GridSpec

    scale, _, left, _, _, top = transform[:6]
    lattice = GridSpec(crs, scale, left, top)
    xs, ys = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lons, lats)
    rects = np.empty((len(lons), 4), np.int64)
    for i, (x, y) in enumerate(zip(np.atleast_1d(xs).tolist(), np.atleast_1d(ys).tolist())):
        if not (np.isfinite(x) and np.isfinite(y)):
            rects[i] = (0, 0, 0, 0)  # not on the map
            continue
        col, row = lattice.pixel_of(x, y)
        # As GridSpec.patch_around: the centre pixel is the patch's pixel size // 2.
        rects[i] = (row - size // 2, row - size // 2 + size, col - size // 2, col - size // 2 + size)
    return rects


def _rects_reprojected(
    lons: np.ndarray,
    lats: np.ndarray,
    grid_crs: str,
    scale: float,
    crs: str,
    transform: tuple[float, ...],
    size: int,
) -> np.ndarray:
    from affine import Affine
    from pyproj import Transformer

    if not len(lons):
        return np.empty((0, 4), np.int64)
    xs, ys = Transformer.from_crs("EPSG:4326", grid_crs, always_xy=True).transform(lons, lats)
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    # The patch's centre pixel holds (x, y) wherever the lattice lies: its left edge is within one pixel
    # left of x - (size // 2) · scale, so every placement lies in this square (rows grow southwards).
    half = size // 2
    left, right = xs - (half + 1) * scale, xs + (size - half) * scale
    bottom, top = ys - (size - half) * scale, ys + (half + 1) * scale
    # Points along the box's four edges, clockwise from the top left corner.
    t = np.linspace(0.0, 1.0, EDGE_POINTS)[None, :]
    across, down = left[:, None] + (right - left)[:, None] * t, top[:, None] - (top - bottom)[:, None] * t

    def at(edge: np.ndarray) -> np.ndarray:
        return np.repeat(edge[:, None], EDGE_POINTS, axis=1)

    edge_x = np.concatenate([across, at(right), across[:, ::-1], at(left)], axis=1)
    edge_y = np.concatenate([at(top), down, at(bottom), down[:, ::-1]], axis=1)
    mx, my = Transformer.from_crs(grid_crs, crs, always_xy=True).transform(edge_x, edge_y)
    inverse = ~Affine(*transform[:6])
    cols = inverse.a * mx + inverse.b * my + inverse.c
    rows = inverse.d * mx + inverse.e * my + inverse.f
    rects = np.zeros((len(lons), 4), np.int64)
    placed = np.isfinite(cols).all(axis=1) & np.isfinite(rows).all(axis=1)
    # Every map pixel the box touches: floor of the smallest pixel coordinate, ceiling of the largest
    # (bounded first, so that a box far off the map does not overflow the integers).
    rows, cols = rows[placed].clip(-1, 1 << 40), cols[placed].clip(-1, 1 << 40)
    rects[placed] = np.stack(
        [np.floor(rows.min(1)), np.ceil(rows.max(1)), np.floor(cols.min(1)), np.ceil(cols.max(1))], axis=1
    )
    return rects
