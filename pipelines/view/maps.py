"""What the viewer shows, read from a prediction folder: map tiles, a pixel's values, training points.

A prediction folder (local or gs://) is what `python -m pipelines.predict` writes: `prediction.json`
names the class map (`classes.tif`, one COG, or `classes.vrt`, a mosaic of per-tile COGs), the
probabilities when they were written, the input imagery and the model. Tiles are cut on request from
those rasters by rio-tiler, which reads a COG by its overviews and internal tiles (and a VRT through
its sources' overviews), in Web Mercator for the browser: nothing is rendered ahead of time, so a map
of any size opens at once.

Names and colours of the classes come from the prediction's label scheme
(`transforms.contracts.label_scheme.scheme_from_metadata`); the input imagery is drawn in true colour from the
model's red, green and blue bands (B4, B3, B2 for Sentinel-2) with a percentile stretch; the
extraction regions and points come from the training data's manifest, found through the model.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from rasterio.transform import rowcol
from rasterio.warp import transform as transform_coords
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipelines.view.defaults import DEFAULT_PREDICTIONS, MAX_POINTS
from transforms.assessment.report import ASSESSMENT_DIR, ASSESSMENT_JSON
from transforms.contracts.label_scheme import LabelScheme, scheme_from_metadata
from transforms.contracts.schema import LABEL_NODATA, META_ID, META_LAT, META_LON, META_REGION, decode_example
from transforms.io.files import join

SUMMARY_NAME = "prediction.json"
MODEL_NAME = "model.json"
MANIFEST_NAME = "manifest.json"
TILE_SIZE = 256
CLASS_NODATA = 255
PROBABILITY_SCALE = 254  # uint8 probabilities are round(p * 254); 255 is nodata
DEFAULT_STRETCH = (2.0, 98.0)
STRETCH_SAMPLE_SIDE = 1024  # the percentiles are taken on a read of at most this many pixels a side
# Band names tried in turn for a true-colour picture.
RGB_CANDIDATES = (("B4", "B3", "B2"), ("red", "green", "blue"), ("R", "G", "B"))


class ViewError(ValueError):
    """A prediction the viewer cannot show; the message says what to do."""


def read_json(path: str) -> dict[str, Any]:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return json.loads(f.read().decode("utf-8"))


def exists(path: str) -> bool:
    try:
        return FileSystems.exists(path)
    except Exception:  # an unknown scheme, or no credentials for a bucket
        return False


def gdal_path(path: str) -> str:
    for scheme, vsi in (("gs://", "/vsigs/"), ("s3://", "/vsis3/")):
        if path.startswith(scheme):
            return vsi + path[len(scheme) :]
    return path


def hex_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16)


def png(rgba: np.ndarray) -> bytes:
    """An (h, w, 4) uint8 array as PNG bytes."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG", compress_level=3)
    return out.getvalue()


EMPTY_TILE = png(np.zeros((TILE_SIZE, TILE_SIZE, 4), np.uint8))


def viridis_lut() -> np.ndarray:
    """256 RGBA entries of matplotlib's viridis (through rio-tiler), for probabilities 0..1."""
    from rio_tiler.colormap import cmap

    table = cmap.get("viridis")
    return np.array([table[i] for i in range(256)], np.uint8)


def class_palette(colors: dict[int, str]) -> np.ndarray:
    """A 256-entry RGBA lookup table: each class value in its colour, every other value transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for value, color in colors.items():
        lut[value] = (*hex_rgb(color), 255)
    lut[CLASS_NODATA] = 0
    return lut


def read_tile(path: str, z: int, x: int, y: int, indexes: Sequence[int], resampling: str):
    """A tile of `path` as a masked array (bands, 256, 256), or None outside the raster."""
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    with Reader(gdal_path(path)) as reader:
        if not reader.tile_exists(x, y, z):
            return None
        try:
            image = reader.tile(
                x, y, z, tilesize=TILE_SIZE, indexes=list(indexes), resampling_method=resampling
            )
        except TileOutsideBounds:
            return None
    return image.array


def class_tile(path: str, palette: np.ndarray, z: int, x: int, y: int) -> bytes:
    """A tile of a class map (band 1), each value in its palette colour."""
    data = read_tile(path, z, x, y, [1], "nearest")
    if data is None:
        return EMPTY_TILE
    values = data[0].filled(CLASS_NODATA).astype(np.uint8)
    return png(palette[values])


def probability_tile(path: str, band: int, encoding: str, lut: np.ndarray, z: int, x: int, y: int) -> bytes:
    """A tile of a probability band (1-based `band`; `encoding` "uint8" or float) in the colours of `lut`."""
    data = read_tile(path, z, x, y, [band], "bilinear")
    if data is None:
        return EMPTY_TILE
    raw = data[0]
    mask = np.ma.getmaskarray(raw)
    values = raw.filled(0).astype(np.float32)
    if encoding == "uint8":
        mask |= values >= 255
        values = values / PROBABILITY_SCALE
    mask |= ~np.isfinite(values)
    level = np.clip(np.nan_to_num(values) * 255, 0, 255).astype(np.uint8)
    rgba = lut[level]
    rgba[mask] = 0
    return png(rgba)


# --- an assessment beside a map -----------------------------------------------------------------------


def find_assessment(folder: str, names: Sequence[str]) -> dict[str, Any] | None:
    """The assessment written beside a map (`terrabeam assess` into <folder>/assessment), if it is one of
    a map with these classes: its estimated areas replace the mapped ones in the legend, as the better
    figure."""
    path = join(folder, ASSESSMENT_DIR, ASSESSMENT_JSON)
    if not exists(path):
        return None
    try:
        doc = read_json(path)
    except (OSError, ValueError):
        return None
    if [c.get("class") for c in doc.get("per_class", [])] != list(names):
        return None  # an assessment of another map or scheme: not this legend's
    return doc


def assessed_area(row: dict[str, Any]) -> dict[str, Any]:
    """A class's estimated area, its 95 % interval, its mapped area and reference points (assessment.json)."""
    area = row.get("area_ha") or {}
    return {
        "estimate_ha": area.get("estimate"),
        "ci95_ha": area.get("ci95"),
        "mapped_ha": (row.get("mapped") or {}).get("area_ha"),
        "n": row.get("n"),
    }


def assessment_summary(doc: dict[str, Any], folder: str) -> dict[str, Any]:
    """What the legend's note says of an assessment: accuracy, sample, population."""
    overall = doc.get("overall_accuracy") or {}
    population = doc.get("population")
    return {
        "path": join(folder, ASSESSMENT_DIR, ASSESSMENT_JSON),
        "overall_accuracy": overall.get("estimate"),
        "overall_ci95": overall.get("ci95"),
        "labelled": (doc.get("sample") or {}).get("labelled"),
        "total_area_ha": doc.get("total_area_ha"),
        "population": (
            f"the map outside the {population['patches']} training patches" if population else "the whole map"
        ),
    }


# --- the imagery ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Imagery:
    """Three bands drawn as red, green and blue: (path, 1-based index) each, and their names."""

    bands: tuple[str, str, str]
    refs: tuple[tuple[str, int], ...]
    true_colour: bool

    def by_path(self) -> list[tuple[str, list[int], list[int]]]:
        """[(path, band indexes in it, positions in RGB)], so each file is read once per tile."""
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for position, (path, index) in enumerate(self.refs):
            indexes, positions = groups.setdefault(path, ([], []))
            indexes.append(index)
            positions.append(position)
        return [(path, idx, pos) for path, (idx, pos) in groups.items()]


def choose_rgb(bands: Sequence[str]) -> tuple[tuple[str, str, str], bool]:
    """The bands to draw as red, green and blue, and whether that is true colour: B4,B3,B2 (or red,
    green, blue) when there are, else the first three bands (a false-colour picture)."""
    lower = {b.lower(): b for b in bands}
    for candidate in RGB_CANDIDATES:
        if all(c.lower() in lower for c in candidate):
            return tuple(lower[c.lower()] for c in candidate), True  # type: ignore[return-value]
    first = list(bands[:3])
    while len(first) < 3:  # one or two bands: grey, or the first repeated
        first.append(first[-1])
    return tuple(first), False  # type: ignore[return-value]


def find_imagery(summary: dict[str, Any], requested: Sequence[str] | None) -> tuple[Imagery | None, str]:
    """The input imagery's RGB bands, or None and why (e.g. imagery from Earth Engine)."""
    source = summary.get("source") or {}
    inputs = source.get("inputs")
    if not inputs:
        kind = source.get("kind", "unknown")
        return None, f"the imagery came from {kind!r}, not from files the viewer reads"
    from transforms.io.rasters import LocalRasterSource, SourceError

    try:
        refs = LocalRasterSource(inputs, source.get("band_names")).band_refs
    except SourceError as e:
        return None, f"the input imagery cannot be opened ({e})"
    if requested:
        missing = [b for b in requested if b not in refs]
        if len(requested) != 3 or missing:
            raise ViewError(
                f"--rgb takes three band names of the imagery ({', '.join(refs)}); got {', '.join(requested)}."
            )
        rgb, true_colour = tuple(requested), True
    else:
        model_bands = [b for b in summary.get("bands") or [] if b in refs]
        rgb, true_colour = choose_rgb(model_bands or list(refs))
    return Imagery(rgb, tuple((refs[b].path, refs[b].index) for b in rgb), true_colour), ""


def percentile_stretch(
    imagery: Imagery, percentiles: tuple[float, float] = DEFAULT_STRETCH
) -> list[tuple[float, float]]:
    """Per band, the (low, high) percentiles of its valid pixels, read at reduced resolution."""
    from rasterio.enums import Resampling

    ranges: list[tuple[float, float]] = [(0.0, 1.0)] * 3
    samples: list[np.ndarray | None] = [None] * 3
    for path, indexes, positions in imagery.by_path():
        with rasterio.open(gdal_path(path)) as src:
            factor = max(1.0, max(src.width, src.height) / STRETCH_SAMPLE_SIDE)
            shape = (max(1, round(src.height / factor)), max(1, round(src.width / factor)))
            data = src.read(
                indexes, out_shape=(len(indexes), *shape), resampling=Resampling.nearest, masked=True
            )
        for i, position in enumerate(positions):
            samples[position] = data[i]
    stack = np.ma.stack(samples).astype(np.float64)
    valid = (
        ~np.ma.getmaskarray(stack).any(axis=0)
        & (stack.filled(0) != 0).any(axis=0)
        & np.isfinite(stack.filled(0)).all(axis=0)
    )
    for band in range(3):
        values = stack[band].filled(np.nan)[valid]
        if values.size:
            low, high = np.percentile(values, percentiles)
            ranges[band] = (float(low), float(high) if high > low else float(low) + 1.0)
    return ranges


# --- the map ----------------------------------------------------------------------------------------


class PredictionMap:
    """A prediction folder, ready to be cut into map tiles."""

    def __init__(
        self,
        predictions: str = DEFAULT_PREDICTIONS,
        *,
        manifest: str | None = None,
        rgb: Sequence[str] | None = None,
        stretch: tuple[float, float] = DEFAULT_STRETCH,
        max_points: int = MAX_POINTS,
    ) -> None:
        location = predictions.rstrip("/")
        if location.endswith(".json"):
            location = location.rsplit("/", 1)[0] if "/" in location else "."
        self.folder = location
        summary_path = join(location, SUMMARY_NAME)
        if not exists(summary_path):
            if location == DEFAULT_PREDICTIONS:
                raise ViewError(
                    f"No demo prediction at {DEFAULT_PREDICTIONS!r}: run `make demo` first (or "
                    "`python -m pipelines.predict`), or pass the folder of a prediction."
                )
            raise ViewError(
                f"No prediction at {location!r} ({SUMMARY_NAME} missing): pass a folder written by "
                "`python -m pipelines.predict`, or a change folder (change.json)."
            )
        try:
            self.summary = read_json(summary_path)
        except (OSError, ValueError) as e:
            raise ViewError(f"Cannot read {summary_path}: {e}") from None
        files = self.summary.get("files") or {}
        if not files.get("classes"):
            raise ViewError(
                f"{summary_path} names no class map (the prediction wrote no tile, see its errors folder)."
            )
        self.scheme: LabelScheme = scheme_from_metadata(self.summary)
        self.classes_path = join(location, files["classes"])
        self.probabilities_path = (
            join(location, files["probabilities"]) if files.get("probabilities") else None
        )
        self.probability_encoding = self.summary.get("probabilities", "none")
        self._check_raster(self.classes_path)
        self.imagery, self.imagery_note = find_imagery(self.summary, rgb)
        self.stretch_percentiles = stretch
        self._stretch: list[tuple[float, float]] | None = None
        self.manifest_path, self.manifest_note = self._find_manifest(manifest)
        self.assessment = find_assessment(location, self.scheme.names)
        self.max_points = max_points
        # Separate locks: reading thousands of points must not hold up the imagery tiles.
        self._stretch_lock = threading.Lock()
        self._points_lock = threading.Lock()
        self._points: dict[str, Any] | None = None
        self._palette = class_palette(dict(enumerate(self.scheme.colors)))
        self._viridis = viridis_lut()
        with rasterio.open(gdal_path(self.classes_path)) as src:
            self.crs = src.crs
            self.width, self.height = src.width, src.height
            self.transform = src.transform
            self.bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        from rio_tiler.io import Reader

        with Reader(gdal_path(self.classes_path)) as reader:
            self.minzoom, self.maxzoom = int(reader.minzoom), int(reader.maxzoom)

    # --- setup -------------------------------------------------------------------------------------

    @staticmethod
    def _check_raster(path: str) -> None:
        try:
            with rasterio.open(gdal_path(path)):
                pass
        except rasterio.errors.RasterioIOError as e:
            raise ViewError(f"Cannot open the class map {path!r}: {e}") from None

    def _find_manifest(self, manifest: str | None) -> tuple[str | None, str]:
        """The training data's manifest: given, or the model's `training.data` (from prediction.json)."""
        if manifest:
            path = manifest if manifest.endswith(".json") else join(manifest, MANIFEST_NAME)
            if not exists(path):
                raise ViewError(f"--manifest {manifest!r}: no {MANIFEST_NAME} there.")
            return path, ""
        model = self.summary.get("model")
        if not model or not exists(join(model, MODEL_NAME)):
            return (
                None,
                f"the model folder {model!r} is not at hand; pass --manifest to show the training data",
            )
        try:
            data = (read_json(join(model, MODEL_NAME)).get("training") or {}).get("data")
        except (OSError, ValueError):
            data = None
        if not data or not exists(join(data, MANIFEST_NAME)):
            return None, f"the training data {data!r} is not at hand; pass --manifest to show it"
        return join(data, MANIFEST_NAME), ""

    def _assessed_area(self, index: int) -> dict[str, Any] | None:
        return assessed_area(self.assessment["per_class"][index]) if self.assessment else None

    def _assessment_summary(self) -> dict[str, Any] | None:
        return assessment_summary(self.assessment, self.folder) if self.assessment else None

    # --- what the page needs first ---------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        counts = self.summary.get("class_counts") or {}
        total = sum(int(v) for v in counts.values()) or 0
        classes = []
        for i, (name, color) in enumerate(zip(self.scheme.names, self.scheme.colors)):
            pixels = int(counts.get(name, 0))
            classes.append(
                {
                    "index": i,
                    "name": name,
                    "color": color,
                    "pixels": pixels,
                    "share": pixels / total if total else None,
                    "assessed": self._assessed_area(i),
                }
            )
        west, south, east, north = self.bounds
        grid = self.summary.get("grid") or {}
        return {
            "kind": "prediction",
            "title": self.folder,
            "bounds": [west, south, east, north],
            "minzoom": self.minzoom,
            "maxzoom": self.maxzoom,
            "crs": str(grid.get("crs") or self.crs),
            "size": [self.width, self.height],
            "scheme": self.scheme.name,
            "classes": classes,
            "assessment": self._assessment_summary(),
            "imagery": (
                {"bands": list(self.imagery.bands), "true_colour": self.imagery.true_colour}
                if self.imagery
                else None
            ),
            "imagery_note": self.imagery_note,
            "probabilities": self.probabilities_path is not None,
            "training": self.manifest_path is not None,
            "training_note": self.manifest_note,
            "tiles_failed": int(self.summary.get("tiles_failed") or 0),
        }

    # --- tiles -------------------------------------------------------------------------------------

    def tile(self, layer: str, z: int, x: int, y: int) -> bytes:
        """The PNG tile of a layer: classes, imagery or probability-<class index>; KeyError (its message
        for the page) when there is no such layer."""
        if layer == "classes":
            return self.class_tile(z, x, y)
        if layer == "imagery":
            return self.imagery_tile(z, x, y)
        prefix = "probability-"
        if layer.startswith(prefix) and layer[len(prefix) :].isdigit():
            return self.probability_tile(int(layer[len(prefix) :]), z, x, y)
        raise KeyError(f"no layer {layer!r}")

    def class_tile(self, z: int, x: int, y: int) -> bytes:
        return class_tile(self.classes_path, self._palette, z, x, y)

    def probability_tile(self, index: int, z: int, x: int, y: int) -> bytes:
        if self.probabilities_path is None:
            raise KeyError("this prediction has no probabilities")
        if not 0 <= index < self.scheme.num_classes:
            raise KeyError(f"no class {index}")
        return probability_tile(
            self.probabilities_path, index + 1, self.probability_encoding, self._viridis, z, x, y
        )

    def stretch(self) -> list[tuple[float, float]]:
        with self._stretch_lock:
            if self._stretch is None and self.imagery is not None:
                self._stretch = percentile_stretch(self.imagery, self.stretch_percentiles)
        return self._stretch or []

    def imagery_tile(self, z: int, x: int, y: int) -> bytes:
        if self.imagery is None:
            raise KeyError(self.imagery_note)
        ranges = self.stretch()
        channels: list[np.ma.MaskedArray | None] = [None] * 3
        for path, indexes, positions in self.imagery.by_path():
            data = read_tile(path, z, x, y, indexes, "bilinear")
            if data is None:
                return EMPTY_TILE
            for i, position in enumerate(positions):
                channels[position] = data[i]
        stack = np.ma.stack(channels).astype(np.float32)
        raw = stack.filled(0)
        # No data: masked in any band, or 0 in every band (the fill of Earth Engine and of this project).
        mask = np.ma.getmaskarray(stack).any(axis=0) | (raw == 0).all(axis=0) | ~np.isfinite(raw).all(axis=0)
        rgba = np.zeros((TILE_SIZE, TILE_SIZE, 4), np.uint8)
        for band, (low, high) in enumerate(ranges):
            scaled = (np.nan_to_num(raw[band]) - low) / (high - low)
            rgba[..., band] = np.clip(scaled * 255, 0, 255).astype(np.uint8)
        rgba[..., 3] = np.where(mask, 0, 255)
        return png(rgba)

    # --- a pixel -----------------------------------------------------------------------------------

    def pixel(self, lon: float, lat: float) -> dict[str, Any]:
        """The pixel under (lon, lat): its grid position, class and probabilities."""
        xs, ys = transform_coords("EPSG:4326", self.crs, [lon], [lat])
        x, y = xs[0], ys[0]
        row, col = (int(v) for v in rowcol(self.transform, x, y, op=math.floor))
        out: dict[str, Any] = {
            "lon": lon,
            "lat": lat,
            "crs": str(self.crs),
            "x": x,
            "y": y,
            "row": row,
            "col": col,
            "inside": 0 <= row < self.height and 0 <= col < self.width,
            "class": None,
            "probabilities": None,
        }
        if not out["inside"]:
            return out
        window = Window(col, row, 1, 1)
        with rasterio.open(gdal_path(self.classes_path)) as src:
            value = int(src.read(1, window=window)[0, 0])
        if value < self.scheme.num_classes:
            out["class"] = {
                "index": value,
                "name": self.scheme.names[value],
                "color": self.scheme.colors[value],
            }
        if self.probabilities_path is not None:
            with rasterio.open(gdal_path(self.probabilities_path)) as src:
                values = src.read(window=window)[:, 0, 0].astype(np.float64)
            if self.probability_encoding == "uint8":
                probabilities = [None if v >= 255 else v / PROBABILITY_SCALE for v in values]
            else:
                probabilities = [None if not np.isfinite(v) else float(v) for v in values]
            if any(p is not None for p in probabilities):
                out["probabilities"] = [
                    {"name": name, "color": color, "p": p}
                    for name, color, p in zip(self.scheme.names, self.scheme.colors, probabilities)
                ]
        return out

    # --- the training data ---------------------------------------------------------------------------

    def regions(self) -> dict[str, Any] | None:
        """The extraction's regions (GeoJSON, lon/lat), or None when they are not at hand."""
        if self.manifest_path is None:
            return None
        source = read_json(self.manifest_path).get("source") or {}
        path = source.get("regions")
        if not path or not exists(path):
            return {
                "type": "FeatureCollection",
                "features": [],
                "note": f"the regions file {path!r} is not at hand",
            }
        return read_json(path)

    def points(self) -> dict[str, Any] | None:
        """The extraction's points (GeoJSON, at most `max_points`), read from the records' metadata."""
        if self.manifest_path is None:
            return None
        with self._points_lock:
            if self._points is None:
                self._points = self._read_points()
        return self._points

    def _read_points(self) -> dict[str, Any]:
        from transforms.contracts.manifest import read_manifest
        from transforms.io.tfrecords import read_records

        manifest = read_manifest(self.manifest_path)
        label = manifest.get("label", "landcover")
        size = int(manifest["patch_size"])
        centre = (size // 2) * size + size // 2
        scheme = scheme_from_metadata(manifest)
        compression = "gzip" if manifest.get("compression", "GZIP").upper() == "GZIP" else "none"
        names = {META_ID, META_LON, META_LAT, META_REGION, label}
        records = (
            (split, record)
            for split, info in manifest["splits"].items()
            for path in info.get("files", [])
            for record in read_records(path, compression)
        )
        features: list[dict[str, Any]] = []
        complete = True
        for split, record in records:
            if len(features) >= self.max_points:
                complete = False
                break
            meta = decode_example(record, names)
            labels = meta.get(label)
            value = int(labels[centre]) if labels is not None and len(labels) > centre else LABEL_NODATA
            name = scheme.names[value] if value < scheme.num_classes else None
            features.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Point",
                        "coordinates": [float(meta[META_LON][0]), float(meta[META_LAT][0])],
                    },
                    "properties": {
                        "id": _text(meta.get(META_ID)),
                        "region": _text(meta.get(META_REGION)),
                        "split": split,
                        "class": name,
                        "color": scheme.colors[value] if name else "#000000",
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features, "complete": complete}


def _text(values: Any) -> str:
    return values[0].decode("utf-8", "replace") if values else ""
