"""What the viewer shows of a change folder: two dates' class maps and the transitions between them.

A change folder (what `terrabeam change` writes, see transforms/change) holds `change.json`,
`transitions.tif` (a class map whose classes are "unchanged", one "FROM_to_TO" per pair of classes and
maybe "uncertain"), `changed.tif`, `change_probability.tif` when both dates had probabilities, and
names each date's prediction folder in `change.json`'s "predictions". Each date is shown as the viewer
shows any prediction (`PredictionMap`: class map, imagery, probabilities); the transitions are drawn in
the colours of their scheme (the colour of the class a pixel turned into); the legend's areas are
`change.json`'s, or the estimates of an assessment of the transitions map written beside it
(`terrabeam assess design <change folder>` puts it in <change folder>/assessment).

Where a date's prediction folder is: the path `change.json` names, as given (absolute, or relative to
the working directory, as the change command was given it); when nothing is there and the path is
relative, the same path under the change folder's parent (a change written next to the two
predictions it compared, viewed from elsewhere); else `dates/<label>` inside the change folder (where
the change command predicts each date, found even after the folder was moved).
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import rowcol
from rasterio.warp import transform as transform_coords
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipelines.view.defaults import MAX_POINTS
from pipelines.view.maps import (
    DEFAULT_STRETCH,
    SUMMARY_NAME,
    PredictionMap,
    ViewError,
    assessed_area,
    assessment_summary,
    class_palette,
    class_tile,
    exists,
    find_assessment,
    gdal_path,
    probability_tile,
    read_json,
    viridis_lut,
)
from transforms.change.compare import CHANGE_PROBABILITY_NAME, CHANGE_SUMMARY, TRANSITIONS_NAME
from transforms.change.transitions import UNCERTAIN, UNCHANGED, TransitionScheme
from transforms.io.files import join

ROLES = ("before", "after")
# Where the change command predicts each date: <change folder>/dates/<label>.
DATES_DIR = "dates"
# Layer ids of the tile URLs (/tiles/<id>/...): each date's own layers are "<role>-<layer>".
TRANSITIONS_LAYER = "transitions"
CHANGE_PROBABILITY_LAYER = "change-probability"


def is_change_folder(location: str) -> bool:
    return exists(join(location.rstrip("/") or location, CHANGE_SUMMARY))


def open_map(
    location: str,
    *,
    manifest: str | None = None,
    rgb: Sequence[str] | None = None,
    stretch: tuple[float, float] = DEFAULT_STRETCH,
    max_points: int = MAX_POINTS,
) -> PredictionMap | ChangeMap:
    """A change folder (change.json) as a ChangeMap, anything else as a PredictionMap; a direct change
    (one prediction of change classes) is that prediction."""
    options: dict[str, Any] = {"manifest": manifest, "rgb": rgb, "stretch": stretch, "max_points": max_points}
    folder = location.rstrip("/") or location
    if location.endswith(".json") and posixpath.basename(location) == CHANGE_SUMMARY:
        folder = posixpath.dirname(location) or "."
    if not is_change_folder(folder):
        return PredictionMap(location, **options)
    doc = _read_change(folder)
    if doc.get("method") == "direct":
        # The change command predicts a direct change into <change folder>/direct.
        label, given = next(iter((doc.get("predictions") or {"direct": ""}).items()))
        return PredictionMap(_date_folder(folder, label, given, inside=label), **options)
    return ChangeMap(folder, doc, **options)


def _read_change(folder: str) -> dict[str, Any]:
    path = join(folder, CHANGE_SUMMARY)
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        raise ViewError(f"Cannot read {path}: {e}") from None


def _date_folder(folder: str, label: str, given: str, inside: str | None = None) -> str:
    """The prediction folder of a date (see the module's docstring for where it is looked for); `inside`:
    where it would be inside the change folder, if not dates/<label>."""
    candidates = [given] if given else []
    if given and "://" not in given and not os.path.isabs(given):
        parent = posixpath.dirname(folder) if "://" in folder else os.path.dirname(folder)
        candidates.append(join(parent or ".", given))
    candidates.append(join(folder, inside) if inside else join(folder, DATES_DIR, label))
    for candidate in candidates:
        if exists(join(candidate, SUMMARY_NAME)):
            return candidate
    raise ViewError(
        f"Date {label!r} of the change {folder!r}: no prediction ({SUMMARY_NAME}) at "
        f"{' or '.join(repr(c) for c in dict.fromkeys(candidates))}; put the date's prediction folder back, "
        f'or fix its path under "predictions" in {join(folder, CHANGE_SUMMARY)}.'
    )


class ChangeMap:
    """A change folder, ready to be cut into map tiles: each date's maps and the transitions."""

    def __init__(
        self,
        folder: str,
        doc: dict[str, Any] | None = None,
        *,
        manifest: str | None = None,
        rgb: Sequence[str] | None = None,
        stretch: tuple[float, float] = DEFAULT_STRETCH,
        max_points: int = MAX_POINTS,
    ) -> None:
        self.folder = folder.rstrip("/") or folder
        self.doc = doc if doc is not None else _read_change(self.folder)
        summary_path = join(self.folder, CHANGE_SUMMARY)
        try:
            self.labels = {role: str(self.doc["dates"][role]) for role in ROLES}
            predictions = self.doc["predictions"]
            files = self.doc["files"]
            self.transitions_path = join(self.folder, files[TRANSITIONS_NAME])
        except (KeyError, TypeError) as e:
            raise ViewError(
                f"{summary_path} lacks {e} (dates, predictions, files): is it a change written by "
                "terrabeam change?"
            ) from None
        self.dates = {
            role: PredictionMap(
                _date_folder(self.folder, self.labels[role], predictions.get(self.labels[role], "")),
                manifest=manifest,
                rgb=rgb,
                stretch=stretch,
                max_points=max_points,
            )
            for role in ROLES
        }
        classes = self.dates["before"].scheme
        if self.dates["after"].scheme.names != classes.names:
            raise ViewError(
                f"The two dates of {self.folder!r} have different classes; is {summary_path} out of date?"
            )
        self.transitions = TransitionScheme(classes, with_uncertain="uncertain" in self.doc)
        self.scheme = self.transitions.label_scheme()
        self._check_transitions()
        probability = files.get(CHANGE_PROBABILITY_NAME)
        self.change_probability_path = join(self.folder, probability) if probability else None
        self.assessment = find_assessment(self.folder, self.scheme.names)
        self._palette = class_palette({c.values[0]: c.color for c in self.scheme.classes})
        self._viridis = viridis_lut()
        with rasterio.open(gdal_path(self.transitions_path)) as src:
            self.crs = src.crs
            self.width, self.height = src.width, src.height
            self.transform = src.transform
            self.bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        from rio_tiler.io import Reader

        with Reader(gdal_path(self.transitions_path)) as reader:
            self.minzoom, self.maxzoom = int(reader.minzoom), int(reader.maxzoom)

    def _check_transitions(self) -> None:
        """transitions.tif names its classes in its tags: they must be the ones change.json counts."""
        try:
            with rasterio.open(gdal_path(self.transitions_path)) as src:
                names = src.tags(1).get("class_names", "")
        except rasterio.errors.RasterioIOError as e:
            raise ViewError(f"Cannot open the transitions map {self.transitions_path!r}: {e}") from None
        if names and names.split(",") != list(self.scheme.names):
            raise ViewError(
                f"{self.transitions_path} holds other transitions than {join(self.folder, CHANGE_SUMMARY)} "
                "counts; write the change again (terrabeam change --overwrite)."
            )

    # --- the training data: the model's, the same for both dates -----------------------------------

    @property
    def manifest_note(self) -> str:
        return self.dates["before"].manifest_note

    def regions(self) -> dict[str, Any] | None:
        return self.dates["before"].regions()

    def points(self) -> dict[str, Any] | None:
        return self.dates["before"].points()

    # --- what the page needs first -------------------------------------------------------------------

    def legend(self) -> list[dict[str, Any]]:
        """The transitions present, with their mapped area (change.json's figures): unchanged first, the
        changes largest first, uncertain last; with an assessment, each one's estimated area too (and the
        transitions it finds that the map has none of)."""
        doc = self.doc
        n = self.transitions.classes.num_classes
        names = self.transitions.classes.names
        pixels = np.asarray(doc["matrix"]["pixels"], np.int64).reshape(n, n)
        hectares = np.asarray(doc["matrix"]["hectares"], np.float64).reshape(n, n)
        uncertain = doc.get("uncertain") or {}
        unsure = np.asarray(uncertain.get("matrix_pixels") or np.zeros((n, n)), np.int64).reshape(n, n)
        top = {t["transition"]: t for t in doc.get("top_transitions") or []}
        total = int(doc.get("mapped_pixels") or pixels.sum())
        per_class = (self.assessment or {}).get("per_class") or []
        entries = []
        for code, cls in enumerate(self.scheme.classes):
            entry: dict[str, Any] = {"code": code, "name": cls.name, "color": cls.color}
            pair = self.transitions.pair(code)
            if cls.name == UNCHANGED:
                entry.update(
                    label=UNCHANGED, pixels=int(np.trace(pixels)), hectares=_round(np.trace(hectares))
                )
            elif cls.name == UNCERTAIN:
                entry.update(label=UNCERTAIN, pixels=int(uncertain["pixels"]), hectares=uncertain["hectares"])
            else:
                i, j = pair
                entry.update({"from": names[i], "to": names[j], "label": f"{names[i]} → {names[j]}"})
                if cls.name in top:  # change.json's own figure
                    entry.update(pixels=int(top[cls.name]["pixels"]), hectares=top[cls.name]["hectares"])
                else:  # beyond the top transitions: the matrix's, less its uncertain pixels
                    sure = int(pixels[i, j] - unsure[i, j])
                    share = sure / pixels[i, j] if pixels[i, j] else 0.0
                    entry.update(pixels=sure, hectares=_round(hectares[i, j] * share))
            entry["share"] = entry["pixels"] / total if total else None
            entry["assessed"] = assessed_area(per_class[code]) if per_class else None
            estimated = (entry["assessed"] or {}).get("estimate_ha") or 0
            if entry["pixels"] > 0 or estimated > 0 or cls.name == UNCHANGED:
                entries.append(entry)
        changes = sorted(
            (e for e in entries if "from" in e), key=lambda e: (-e["hectares"], -e["pixels"], e["code"])
        )
        return (
            [e for e in entries if e["name"] == UNCHANGED]
            + changes
            + [e for e in entries if e["name"] == UNCERTAIN]
        )

    def info(self) -> dict[str, Any]:
        west, south, east, north = self.bounds
        before = self.dates["before"]
        per_class = {row["class"]: row for row in self.doc.get("per_class") or []}
        keys = ("before_ha", "after_ha", "gain_ha", "loss_ha", "net_ha")
        dates = {}
        for role in ROLES:
            prediction = self.dates[role]
            imagery = prediction.imagery
            dates[role] = {
                "label": self.labels[role],
                "folder": prediction.folder,
                "imagery": (
                    {"bands": list(imagery.bands), "true_colour": imagery.true_colour} if imagery else None
                ),
                "imagery_note": prediction.imagery_note,
                "probabilities": prediction.probabilities_path is not None,
                "tiles_failed": int(prediction.summary.get("tiles_failed") or 0),
            }
        return {
            "kind": "change",
            "title": self.folder,
            "method": self.doc.get("method", "post-classification"),
            "dates": dates,
            "bounds": [west, south, east, north],
            "minzoom": self.minzoom,
            "maxzoom": self.maxzoom,
            "crs": str((self.doc.get("grid") or {}).get("crs") or self.crs),
            "size": [self.width, self.height],
            "scheme": self.scheme.name,
            "classes": [
                {
                    "index": i,
                    "name": name,
                    "color": color,
                    **{k: per_class.get(name, {}).get(k) for k in keys},
                }
                for i, (name, color) in enumerate(zip(before.scheme.names, before.scheme.colors))
            ],
            "transitions": self.legend(),
            "changed": self.doc.get("changed"),
            "uncertain": (
                {k: self.doc["uncertain"].get(k) for k in ("min_confidence", "pixels", "hectares")}
                if "uncertain" in self.doc
                else None
            ),
            "assessment": assessment_summary(self.assessment, self.folder) if self.assessment else None,
            "layers": self.layers(),
            "change_probability": self.change_probability_path is not None,
            "training": before.manifest_path is not None,
            "training_note": before.manifest_note,
        }

    def layers(self) -> list[dict[str, Any]]:
        """The tile layers: id (the tile URL's), kind, the date they belong to (None: both) and a title."""
        layers = []
        for role in ROLES:
            label = self.labels[role]
            if self.dates[role].imagery is not None:
                layers.append(
                    {"id": f"{role}-imagery", "kind": "imagery", "date": role, "title": f"Imagery {label}"}
                )
            layers.append(
                {"id": f"{role}-classes", "kind": "classes", "date": role, "title": f"Class map {label}"}
            )
        arrow = f"{self.labels['before']} → {self.labels['after']}"
        layers.append(
            {"id": TRANSITIONS_LAYER, "kind": "transitions", "date": None, "title": f"Transitions {arrow}"}
        )
        if self.change_probability_path is not None:
            layers.append(
                {
                    "id": CHANGE_PROBABILITY_LAYER,
                    "kind": "change_probability",
                    "date": None,
                    "title": f"Change probability {arrow}",
                }
            )
        return layers

    # --- tiles -----------------------------------------------------------------------------------------

    def tile(self, layer: str, z: int, x: int, y: int) -> bytes:
        """A PNG tile: transitions, change-probability, or a date's layer as `<before|after>-<layer>`."""
        if layer == TRANSITIONS_LAYER:
            return class_tile(self.transitions_path, self._palette, z, x, y)
        if layer == CHANGE_PROBABILITY_LAYER:
            if self.change_probability_path is None:
                raise KeyError("this change has no change probability (a date without probabilities)")
            return probability_tile(self.change_probability_path, 1, "float32", self._viridis, z, x, y)
        role, _, rest = layer.partition("-")
        if role in self.dates and rest:
            return self.dates[role].tile(rest, z, x, y)
        raise KeyError(f"no layer {layer!r}")

    # --- a pixel -------------------------------------------------------------------------------------

    def pixel(self, lon: float, lat: float) -> dict[str, Any]:
        """The pixel under (lon, lat): its position, each date's class and probabilities, its transition
        and the probability that it changed."""
        xs, ys = transform_coords("EPSG:4326", self.crs, [lon], [lat])
        x, y = xs[0], ys[0]
        row, col = (int(v) for v in rowcol(self.transform, x, y, op=math.floor))
        inside = 0 <= row < self.height and 0 <= col < self.width
        out: dict[str, Any] = {
            "lon": lon,
            "lat": lat,
            "crs": str(self.crs),
            "x": x,
            "y": y,
            "row": row,
            "col": col,
            "inside": inside,
            "dates": {},
            "transition": None,
            "change_probability": None,
        }
        for role in ROLES:
            at = self.dates[role].pixel(lon, lat)
            out["dates"][role] = {
                "label": self.labels[role],
                "class": at["class"],
                "probabilities": at["probabilities"],
            }
        if not inside:
            return out
        window = Window(col, row, 1, 1)
        with rasterio.open(gdal_path(self.transitions_path)) as src:
            code = int(src.read(1, window=window)[0, 0])
        if code < self.transitions.num_codes:
            cls = self.scheme.classes[code]
            pair = self.transitions.pair(code)
            names = self.transitions.classes.names
            out["transition"] = {
                "code": code,
                "name": cls.name,
                "label": f"{names[pair[0]]} → {names[pair[1]]}" if pair else cls.name,
                "color": cls.color,
            }
        if self.change_probability_path is not None:
            with rasterio.open(gdal_path(self.change_probability_path)) as src:
                value = float(src.read(1, window=window)[0, 0])
            out["change_probability"] = value if math.isfinite(value) else None
        return out


def _round(hectares: float) -> float:
    return round(float(hectares), 4)  # as change.json rounds its hectares
