"""A class map as strata: its pixels counted per class, and a stratified random sample drawn from it.

The map is read in strips of whole rows (a few million pixels each), so memory stays bounded whatever
its size; the draw reads it twice: once to count each class's pixels, once to find the pixels whose
rank within their class was drawn. Ranks follow the raster's row-major order and are drawn with a
`numpy.random.Generator` seeded by the caller, so the same map, allocation and seed give the same
points whatever the strip size (and, NumPy promising stable streams only within a release, with the
same NumPy; design.json records the points either way).

A pixel's class comes from the label scheme: its value is looked up among the classes' values (whole
numbers, also when a raster stores them as floats); the
map's nodata (255 in a terrabeam class map: no prediction) and ignored values belong to no stratum,
and values that no class lists are counted apart (and reported).

Pixels of a class that lie in a training patch (`exclude`: the footprints of
`transforms.assessment.exclusion`) are left out of the population: they belong to no stratum, are never
drawn, and are counted apart per class. Each strip marks only the footprints that cross it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window

from transforms.assessment.areas import PixelAreas, pixel_areas
from transforms.assessment.errors import AssessmentError
from transforms.assessment.exclusion import TrainingFootprints
from transforms.contracts.label_scheme import UNKNOWN_INDEX, LabelScheme, scheme_from_raster

# Pixels per strip read from the map (~4 M: 4 MB of uint8 values and a few times that in indices).
STRIP_PIXELS = 1 << 22


@dataclasses.dataclass(frozen=True)
class ClassMap:
    """A categorical raster and the label scheme that names its values."""

    path: str
    band: int
    scheme: LabelScheme
    crs: str  # WKT
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int
    nodata: float | None

    def strips(self) -> Iterator[tuple[int, int]]:
        """(first row, number of rows) of the strips the map is read in."""
        rows = max(1, STRIP_PIXELS // max(self.width, 1))
        for row in range(0, self.height, rows):
            yield row, min(rows, self.height - row)

    def pixel_areas(self) -> PixelAreas:
        return pixel_areas(self.crs, self.transform, self.height)


def open_class_map(path: str, band: int = 1, scheme: LabelScheme | None = None) -> ClassMap:
    """The map at `path` with its label scheme: `scheme` if given, else the one the raster carries
    (a terrabeam class map names its classes and colours in its tags)."""
    try:
        with rasterio.open(path) as src:
            if not 1 <= band <= src.count:
                raise AssessmentError(f"--band {band}: the map {path} has {src.count} band(s).")
            if src.crs is None:
                raise AssessmentError(
                    f"the map {path} has no CRS, so its pixels have no known area; assign one (gdal_edit.py "
                    "-a_srs EPSG:...) first."
                )
            if src.dtypes[band - 1].startswith("complex"):
                raise AssessmentError(
                    f"the map {path} holds {src.dtypes[band - 1]} values; a class map holds class values, e.g. "
                    "the classes.tif of `terrabeam predict`."
                )
            crs, transform = src.crs.to_wkt(), tuple(src.transform)[:6]
            width, height, nodata = src.width, src.height, src.nodata
            scheme_name = src.tags(band).get("label_scheme")  # a terrabeam class map names its scheme
    except rasterio.errors.RasterioIOError as e:
        raise AssessmentError(f"cannot open the map {path}: {e}.") from None
    if scheme is None:
        scheme = scheme_from_raster(path, band)
        if scheme is not None and scheme_name:
            scheme = dataclasses.replace(scheme, name=scheme_name)
    if scheme is None:
        raise AssessmentError(
            f"the map {path} does not name its classes (no 'classes' tag, category names or attribute "
            "table); pass --label-scheme (a preset such as dynamic-world, or a classes file) to say which "
            "values are which classes."
        )
    return ClassMap(path, band, scheme, crs, transform, width, height, nodata)


def _read_classes(
    src: rasterio.DatasetReader,
    class_map: ClassMap,
    row: int,
    rows: int,
    exclude: TrainingFootprints | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(values, class indices, which pixels of a class lie in a training patch, or None for none)."""
    values = src.read(class_map.band, window=Window(0, row, class_map.width, rows))
    classes = class_map.scheme.remap(values, class_map.nodata)
    left_out = exclude.strip_mask(row, rows, class_map.width) if exclude is not None else None
    if left_out is not None:
        left_out &= classes < class_map.scheme.num_classes
    return values, classes, left_out


@dataclasses.dataclass(frozen=True)
class StrataCounts:
    """Pixels and area of each class of a map, and what belongs to no class."""

    pixels: tuple[int, ...]  # per class, in scheme order
    area_m2: tuple[float, ...]  # per class
    nodata_pixels: int  # nodata and ignored values
    unknown_values: dict[int, int]  # value no class lists -> pixels
    area_method: str
    excluded_pixels: tuple[int, ...] = ()  # per class: pixels in training patches, in no stratum
    excluded_area_m2: tuple[float, ...] = ()  # per class


def count_strata(class_map: ClassMap, exclude: TrainingFootprints | None = None) -> StrataCounts:
    """Count each class's pixels and sum their ground area (per row in a geographic CRS); pixels in the
    footprints of `exclude` are counted apart, in no stratum."""
    k = class_map.scheme.num_classes
    areas = class_map.pixel_areas()
    pixels = np.zeros(k, np.int64)
    area = np.zeros(k, np.float64)
    excluded = np.zeros(k, np.int64)
    excluded_area = np.zeros(k, np.float64)
    unknown: dict[int, int] = {}
    nodata = 0
    with rasterio.open(class_map.path) as src:
        for row, rows in class_map.strips():
            values, classes, left_out = _read_classes(src, class_map, row, rows, exclude)
            known = classes < k
            nodata += int(np.count_nonzero(classes >= UNKNOWN_INDEX + 1))
            if np.any(classes == UNKNOWN_INDEX):
                found, n = np.unique(values[classes == UNKNOWN_INDEX], return_counts=True)
                for v, c in zip(found.tolist(), n.tolist()):
                    unknown[int(v)] = unknown.get(int(v), 0) + int(c)
            row_area = areas.per_row[row : row + rows]
            if left_out is not None:
                known &= ~left_out
                by_row = _per_row_and_class(classes, left_out, k)
                excluded += by_row.sum(axis=0)
                excluded_area += by_row.T.astype(np.float64) @ row_area
            by_row = _per_row_and_class(classes, known, k)
            pixels += by_row.sum(axis=0)
            area += by_row.T.astype(np.float64) @ row_area
    return StrataCounts(
        tuple(int(v) for v in pixels),
        tuple(float(v) for v in area),
        nodata,
        unknown,
        areas.method,
        tuple(int(v) for v in excluded) if exclude is not None else (),
        tuple(float(v) for v in excluded_area) if exclude is not None else (),
    )


def _per_row_and_class(classes: np.ndarray, where: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) pixels per row and class among `where`, so that each row's pixel area weighs its own."""
    rows = classes.shape[0]
    row_index = np.broadcast_to(np.arange(rows)[:, None], classes.shape)[where]
    return np.bincount(row_index * k + classes[where], minlength=rows * k).reshape(rows, k)


@dataclasses.dataclass(frozen=True)
class SamplePixel:
    row: int
    col: int
    stratum: int  # class index
    value: int  # the map's pixel value


def draw_sample(
    class_map: ClassMap,
    pixels: Sequence[int],
    allocation: Sequence[int],
    seed: int,
    exclude: TrainingFootprints | None = None,
) -> list[SamplePixel]:
    """A stratified random sample without replacement: `allocation[h]` of the `pixels[h]` pixels of
    class h, each equally likely; deterministic for `seed`. Returned in a random order (also from the
    seed), so that labelling them in file order does not go class by class. With `exclude`, `pixels`
    are the counts outside its footprints (`count_strata(class_map, exclude)`), and no point falls
    inside one."""
    k = class_map.scheme.num_classes
    if len(pixels) != k or len(allocation) != k:
        raise ValueError(f"pixels and allocation need one entry per class ({k}).")
    rng = np.random.default_rng(seed)
    ranks = []
    for count, n in zip(pixels, allocation):
        if n > count:
            raise ValueError(f"cannot draw {n} points from a stratum of {count} pixels.")
        ranks.append(np.sort(rng.choice(count, size=n, replace=False)) if n else np.empty(0, np.int64))
    offsets = np.zeros(k, np.int64)  # pixels of each class in the strips read so far
    found: list[SamplePixel] = []
    with rasterio.open(class_map.path) as src:
        for row, rows in class_map.strips():
            if all(offsets[h] > (ranks[h][-1] if len(ranks[h]) else -1) for h in range(k)):
                break  # every drawn rank lies in a strip already read
            values, classes, left_out = _read_classes(src, class_map, row, rows, exclude)
            flat = classes.ravel()
            in_strata = flat < k
            if left_out is not None:
                in_strata &= ~left_out.ravel()
            counts = np.bincount(flat[in_strata], minlength=k)
            for h in range(k):
                low, high = offsets[h], offsets[h] + counts[h]
                wanted = ranks[h][(ranks[h] >= low) & (ranks[h] < high)]
                if len(wanted):
                    members = flat == h if left_out is None else (flat == h) & in_strata
                    for position in np.flatnonzero(members)[wanted - low]:
                        r, c = divmod(int(position), class_map.width)
                        found.append(SamplePixel(row + r, c, h, int(values[r, c])))
            offsets += counts
    if len(found) != sum(allocation):
        raise AssessmentError(
            f"the map {class_map.path} changed while it was read ({len(found)} of {sum(allocation)} points "
            "found); run the design again."
        )
    order = rng.permutation(len(found))
    found.sort(key=lambda p: (p.row, p.col))
    return [found[i] for i in order]
