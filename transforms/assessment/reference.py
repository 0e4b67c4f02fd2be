"""Reference labels of a design's points: from a filled-in labels file, or read from a reference raster.

A labels file is the design's points.csv (or points.geojson) with the `reference` column filled in:
a class name of the map's label scheme (`water`) or one of its values (`0`). It may hold only some of
the points (those labelled so far). Every row is checked against the design: its id must be one of
the design's points, and its stratum, map class and coordinates (where the file has them) must be the
design's, so that a file of another design or with shifted rows is refused instead of estimated from.

A point without a label (no row, an empty cell, or `unknown`, `?`, `NA`, `none`) is left out of the
estimates and counted; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from transforms.assessment.design import REFERENCE, Design
from transforms.assessment.errors import AssessmentError
from transforms.contracts.label_scheme import LABEL_NODATA, UNKNOWN_INDEX, LabelScheme

# Reference values that mean "could not tell": the point is left out and counted.
UNKNOWN_LABELS = frozenset({"unknown", "?", "na", "n/a", "none", "null", "nodata", "no data"})
# How far a labels file's coordinates may drift from the design's (spreadsheets and GIS round them):
# a thousandth of a pixel in the map's CRS, 1e-6 degrees (about 0.1 m) in lon/lat.
PIXEL_TOLERANCE = 1e-3
DEGREE_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class ReferenceLabels:
    """Class indices of the labelled points, and the points left out."""

    labels: dict[int, int]  # point id -> reference class index
    missing: tuple[int, ...]  # ids with no row or an empty reference
    unknown: tuple[int, ...]  # ids labelled "unknown" (or outside / nodata of a reference raster)
    source: str
    notes: tuple[str, ...] = ()

    def counts(self, design: Design) -> np.ndarray:
        """(K, K) sample counts: rows the points' strata (map classes), columns their reference classes."""
        k = design.scheme.num_classes
        index = {name: i for i, name in enumerate(design.classes)}
        counts = np.zeros((k, k), np.int64)
        for point in design.points:
            if point.id in self.labels:
                counts[index[point.stratum], self.labels[point.id]] += 1
        return counts


def class_of(label: str, scheme: LabelScheme) -> int | None:
    """The class index a reference label names (class name, any case, or a value of the scheme); None
    for an empty or unknown label. Raises AssessmentError for anything else."""
    text = label.strip()
    if not text or text.lower() in UNKNOWN_LABELS:
        return None
    lowered = {name.lower(): i for i, name in enumerate(scheme.names)}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if math.isfinite(number) and number.is_integer():
        index = int(scheme.remap(np.array([int(number)], np.int64))[0])
        if index < scheme.num_classes:
            return index
    values = ", ".join(
        f"{c.name}={'*' if c.rest else '/'.join(str(v) for v in c.values)}" for c in scheme.classes
    )
    raise AssessmentError(
        f"reference {text!r} is not a class of the label scheme {scheme.name!r}; write a class name or value "
        f"({values}), or leave it empty or write 'unknown' to leave the point out."
    )


def read_labels(path: str, design: Design) -> ReferenceLabels:
    """The reference labels in a filled-in points.csv or points.geojson, checked against the design."""
    if not os.path.exists(path):
        raise AssessmentError(
            f"no labels file at {path!r}; fill in the 'reference' column of the design's points.csv."
        )
    rows = _geojson_rows(path) if path.lower().endswith((".geojson", ".json")) else _csv_rows(path)
    points = {p.id: p for p in design.points}
    labels: dict[int, int] = {}
    unknown: list[int] = []
    seen: dict[int, str] = {}
    for where, row in rows:
        if "id" not in row or REFERENCE not in row:
            missing = [c for c in ("id", REFERENCE) if c not in row]
            raise AssessmentError(
                f"{path}: no {' or '.join(repr(c) for c in missing)} column; the labels file is the design's "
                "points.csv (or points.geojson) with its 'reference' column filled in."
            )
        text_id = str(row["id"]).strip()
        try:
            point_id = int(float(text_id))
        except ValueError:
            raise AssessmentError(
                f"{path}, {where}: id {text_id!r} is not a point id (a whole number)."
            ) from None
        if point_id not in points:
            raise AssessmentError(
                f"{path}, {where}: point {point_id} is not in the design ({len(points)} points, ids 1-"
                f"{len(points)}); the labels must be those of this design's points.csv."
            )
        if point_id in seen:
            raise AssessmentError(
                f"{path}, {where}: point {point_id} is labelled twice (also {seen[point_id]})."
            )
        seen[point_id] = where
        _check_row(path, where, row, points[point_id], design)
        try:
            index = class_of(str(row[REFERENCE] if row[REFERENCE] is not None else ""), design.scheme)
        except AssessmentError as e:
            raise AssessmentError(f"{path}, {where} (point {point_id}): {e}") from None
        if index is None:
            if str(row[REFERENCE] or "").strip():
                unknown.append(point_id)
            continue
        labels[point_id] = index
    missing = tuple(sorted(set(points) - set(labels) - set(unknown)))
    return ReferenceLabels(labels, missing, tuple(sorted(unknown)), os.path.abspath(path))


def _csv_rows(path: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise AssessmentError(f"cannot read the labels file {path}: {e}.") from None
    try:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    rows = []
    for number, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # a blank line
        rows.append((f"line {number}", {(k or "").strip().lower(): v for k, v in row.items()}))
    return rows


def _geojson_rows(path: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        features = doc["features"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise AssessmentError(
            f"{path} is not a GeoJSON FeatureCollection of the design's points: {e}."
        ) from None
    rows = []
    for number, feature in enumerate(features, start=1):
        properties = {str(k).lower(): v for k, v in (feature.get("properties") or {}).items()}
        coordinates = (feature.get("geometry") or {}).get("coordinates") or []
        if len(coordinates) >= 2:
            properties.setdefault("lon", coordinates[0])
            properties.setdefault("lat", coordinates[1])
        rows.append((f"feature {number}", properties))
    return rows


def _check_row(path: str, where: str, row: Mapping[str, Any], point: Any, design: Design) -> None:
    """Refuse a row whose stratum, map class or coordinates are not the design's point's."""
    prefix = f"{path}, {where} (point {point.id})"
    for column in ("stratum", "map_class"):
        value = str(row.get(column) or "").strip()
        if value and value != point.stratum:
            raise AssessmentError(
                f"{prefix}: {column} {value!r} is not the design's {point.stratum!r}; this labels file does not "
                "belong to this design, or its rows were edited. Label the design's own points.csv."
            )
    checks = (
        ("row", point.row, 0.0),
        ("col", point.col, 0.0),
        ("x", point.x, PIXEL_TOLERANCE * design.pixel_size),
        ("y", point.y, PIXEL_TOLERANCE * design.pixel_size),
        ("lon", point.lon, DEGREE_TOLERANCE),
        ("lat", point.lat, DEGREE_TOLERANCE),
    )
    for column, expected, tolerance in checks:
        raw = row.get(column)
        if raw is None or str(raw).strip() == "":
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise AssessmentError(f"{prefix}: {column} {raw!r} is not a number.") from None
        if not abs(value - expected) <= tolerance:
            raise AssessmentError(
                f"{prefix}: {column} {raw} is not the design's {expected!r}; the point moved, so its label "
                "does not describe the sampled pixel. Label the design's own points.csv, keeping its "
                "coordinates."
            )


def labels_from_raster(
    path: str, design: Design, band: int = 1, scheme: LabelScheme | None = None
) -> ReferenceLabels:
    """Reference labels read from a raster at each point (the point's x, y reprojected into the
    raster's CRS), e.g. the demo's truth, a rasterised field survey or another agency's map.

    Its values become classes of the map by name: through `scheme` if given (e.g. the preset
    dynamic-world-from-worldcover for an ESA WorldCover raster), else through the class names the
    raster carries, else as values of the map's own scheme. Points outside it, on its nodata or on a
    value no class lists are left out and counted."""
    import rasterio
    from pyproj import Transformer

    from transforms.contracts.label_scheme import scheme_from_raster

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise AssessmentError(f"cannot open the reference raster {path}: {e}.") from None
    with src:
        if not 1 <= band <= src.count:
            raise AssessmentError(
                f"--reference-band {band}: the reference raster {path} has {src.count} band(s)."
            )
        if src.crs is None:
            raise AssessmentError(
                f"the reference raster {path} has no CRS; assign one before reading labels from it."
            )
        own = scheme if scheme is not None else scheme_from_raster(path, band)
        to_map = _class_lookup(own, design.scheme, path) if own is not None else None
        values_scheme = own if own is not None else design.scheme
        transformer = Transformer.from_crs(design.crs, src.crs.to_wkt(), always_xy=True)
        xs, ys = transformer.transform([p.x for p in design.points], [p.y for p in design.points])
        rows, cols = rasterio.transform.rowcol(src.transform, xs, ys)
        inside = [0 <= r < src.height and 0 <= c < src.width for r, c in zip(rows, cols)]
        coordinates = [(x, y) for x, y, ok in zip(xs, ys, inside) if ok]
        sampled = iter(list(src.sample(coordinates, indexes=band, masked=True)) if coordinates else [])
        labels: dict[int, int] = {}
        unknown: list[int] = []
        outside = nodata = 0
        unlisted: dict[int, int] = {}
        for point, ok in zip(design.points, inside):
            if not ok:
                outside += 1
                unknown.append(point.id)
                continue
            value = next(sampled)[0]
            if np.ma.is_masked(value):
                nodata += 1
                unknown.append(point.id)
                continue
            index = int(values_scheme.remap(np.array([value]), src.nodata)[0])
            if index == LABEL_NODATA:
                nodata += 1
                unknown.append(point.id)
                continue
            if index == UNKNOWN_INDEX:
                unlisted[int(value)] = unlisted.get(int(value), 0) + 1
                unknown.append(point.id)
                continue
            labels[point.id] = to_map[index] if to_map is not None else index
    notes = []
    if outside:
        notes.append(f"{outside} point(s) lie outside the reference raster")
    if nodata:
        notes.append(f"{nodata} point(s) fall on its nodata or ignored values")
    if unlisted:
        listed = ", ".join(f"{v} ({n})" for v, n in sorted(unlisted.items()))
        notes.append(f"{sum(unlisted.values())} point(s) fall on values no class lists: {listed}")
    return ReferenceLabels(labels, (), tuple(sorted(unknown)), os.path.abspath(path), tuple(notes))


def _class_lookup(own: LabelScheme, target: LabelScheme, path: str) -> dict[int, int]:
    """Reference class index -> map class index, by class name."""
    index = {name.lower(): i for i, name in enumerate(target.names)}
    strangers = [name for name in own.names if name.lower() not in index]
    if strangers:
        raise AssessmentError(
            f"the reference raster {path} has class(es) {', '.join(repr(n) for n in strangers)} that the map's "
            f"label scheme {target.name!r} lacks ({', '.join(target.names)}); pass --reference-scheme with a "
            "scheme that turns its values into the map's classes (e.g. dynamic-world-from-worldcover for ESA "
            "WorldCover)."
        )
    return {i: index[name.lower()] for i, name in enumerate(own.names)}
