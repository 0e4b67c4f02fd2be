"""Two predictions of one grid compared window by window: transitions.tif, changed.tif and, where both
carry probabilities, change_probability.tif, as Cloud-Optimized GeoTIFFs; the tally for change.json.

Reads go through GDAL (a COG or a VRT mosaic of per-tile COGs, local or gs://) in 512-pixel windows, so
memory stays bounded whatever the map's size; each output is written to a tiled GeoTIFF on local disk
first and then copied into a COG with overviews (GDAL streams the copy).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import rasterio
import rasterio.warp
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from transforms.assessment.areas import pixel_areas
from transforms.change.summary import ChangeSummary, ChangeTally, summarise
from transforms.change.transitions import (
    CHANGE_NODATA,
    ChangeError,
    TransitionScheme,
    change_probability,
    transition_codes,
)
from transforms.cog import class_tags, colormap, gdal_path, quicklook_png, vrt_to_cog, write_bytes
from transforms.contracts.label_scheme import LabelScheme, scheme_from_metadata
from transforms.contracts.prediction import (
    CLASSES_NAME,
    POSITIVE_NAME,
    PROBABILITIES_NAME,
    PROBABILITY_NODATA_UINT8,
    PROBABILITY_SCALE,
    SUMMARY_NAME,
)
from transforms.contracts.schema import CLASS_NODATA
from transforms.io.files import join, read_json

WINDOW = 512
TRANSITIONS_NAME = "transitions"
CHANGED_NAME = "changed"
CHANGE_PROBABILITY_NAME = "change_probability"
CHANGE_SUMMARY = "change.json"
TRANSITIONS_QUICKLOOK = "transitions.png"


@dataclasses.dataclass(frozen=True)
class DatedMap:
    """One date's prediction: its label, its folder, the class map and the probabilities it holds."""

    label: str
    folder: str
    classes: str  # path of the class map (COG or VRT)
    probabilities: str | None  # per-class probabilities, or the positive class's of a binary scheme
    encoding: str  # "none", "uint8" or "float32"
    summary: dict[str, Any]

    @property
    def scheme(self) -> LabelScheme:
        return scheme_from_metadata(self.summary)


def open_prediction(label: str, folder: str) -> DatedMap:
    """A prediction folder written by `terrabeam predict` (prediction.json beside the maps)."""
    try:
        summary = read_json(join(folder, SUMMARY_NAME))
    except (OSError, ValueError) as e:
        summary, problem = None, f" ({e})"
    else:
        problem = ""
    if not isinstance(summary, dict):
        raise ChangeError(
            f"date {label}: {folder} holds no readable {SUMMARY_NAME}{problem}; pass the output folder of "
            "`terrabeam predict`."
        )
    files = summary.get("files", {})
    if CLASSES_NAME not in files:
        raise ChangeError(f"date {label}: {join(folder, SUMMARY_NAME)} names no class map.")
    probabilities = files.get(PROBABILITIES_NAME) or files.get(POSITIVE_NAME)
    return DatedMap(
        label=label,
        folder=folder,
        classes=join(folder, files[CLASSES_NAME]),
        probabilities=join(folder, probabilities) if probabilities else None,
        encoding=summary.get("probabilities", "none") if probabilities else "none",
        summary=summary,
    )


def check_comparable(before: DatedMap, after: DatedMap) -> tuple[LabelScheme, str | None]:
    """The two maps' label scheme, and a note when the second date lies on another grid (it is then read
    onto the first date's grid); a ChangeError when the classes differ or the grids do not overlap."""
    scheme = before.scheme
    if after.scheme.names != scheme.names:
        raise ChangeError(
            f"dates {before.label} and {after.label} were predicted with different classes "
            f"({', '.join(scheme.names)} / {', '.join(after.scheme.names)}); predict both with the same model."
        )
    with rasterio.open(gdal_path(before.classes)) as a, rasterio.open(gdal_path(after.classes)) as b:
        grids = [(src.crs, tuple(src.transform)[:6], src.width, src.height) for src in (a, b)]
        if grids[0] == grids[1]:
            return scheme, None
        overlap = rasterio.warp.transform_bounds(b.crs, a.crs, *b.bounds)
        left, bottom, right, top = a.bounds
        if overlap[0] >= right or overlap[2] <= left or overlap[1] >= top or overlap[3] <= bottom:
            raise ChangeError(
                f"dates {before.label} and {after.label} do not overlap ({_grid_text(grids[0])} / "
                f"{_grid_text(grids[1])}): give two dates of the same place."
            )
    return scheme, (
        f"Date {after.label} lies on another grid ({_grid_text(grids[1])}) than date {before.label} "
        f"({_grid_text(grids[0])}): its map is read onto {before.label}'s grid (nearest class, probabilities "
        "resampled bilinearly); pixels it does not cover are left out."
    )


def _grid_text(grid: tuple) -> str:
    crs, t, width, height = grid
    return f"{crs} {width}x{height} pixels of {t[0]:.12g} at {t[2]:.12g},{t[5]:.12g}"


def _onto(src, like, nodata: float, resampling: Resampling):
    """`src` read on `like`'s grid (a WarpedVRT), or `src` itself when it already is."""
    if (src.crs, src.transform, src.width, src.height) == (like.crs, like.transform, like.width, like.height):
        return src
    return WarpedVRT(
        src,
        crs=like.crs,
        transform=like.transform,
        width=like.width,
        height=like.height,
        resampling=resampling,
        src_nodata=src.nodata if src.nodata is not None else nodata,
        nodata=nodata,
    )


def _windows(width: int, height: int) -> Iterator[Window]:
    for row in range(0, height, WINDOW):
        for col in range(0, width, WINDOW):
            yield Window(col, row, min(WINDOW, width - col), min(WINDOW, height - row))


def _read_probabilities(src, window: Window, encoding: str, num_classes: int) -> np.ndarray:
    """(h, w, classes) float32, NaN where there is no probability."""
    data = src.read(window=window)
    if encoding == "uint8":
        out = data.astype(np.float32) / PROBABILITY_SCALE
        out[data == PROBABILITY_NODATA_UINT8] = np.nan
    else:
        out = data.astype(np.float32)
    if out.shape[0] == 1 and num_classes == 2:  # a binary map stores the positive class alone
        out = np.concatenate([1.0 - out, out])
    return np.moveaxis(out, 0, -1)


def _class_profile(src, scheme: LabelScheme) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": 1,
        "dtype": "uint8",
        "crs": src.crs,
        "transform": src.transform,
        "nodata": CHANGE_NODATA,
        "tiled": True,
        "blockxsize": WINDOW,
        "blockysize": WINDOW,
        "compress": "DEFLATE",
    }


def compare(
    before: DatedMap,
    after: DatedMap,
    output: str,
    min_confidence: float | None = None,
) -> ChangeSummary:
    """Write the change rasters of `before` → `after` into `output`; returns the change summary."""
    scheme, _ = check_comparable(before, after)
    transitions = TransitionScheme(scheme, with_uncertain=min_confidence is not None)
    with_probability = before.probabilities is not None and after.probabilities is not None
    if min_confidence is not None and not with_probability:
        missing = [m.label for m in (before, after) if m.probabilities is None]
        raise ChangeError(
            f"--min-confidence needs both dates' probabilities; date(s) {', '.join(missing)} have none. "
            "Predict with --probabilities uint8 (terrabeam change does so itself)."
        )
    n = scheme.num_classes
    with tempfile.TemporaryDirectory(prefix="terrabeam-change-") as tmp, rasterio.Env():
        a = rasterio.open(gdal_path(before.classes))
        pa = rasterio.open(gdal_path(before.probabilities)) if with_probability else None
        # The second date on the first date's grid: nearest class, bilinear probabilities.
        b_file = rasterio.open(gdal_path(after.classes))
        b = _onto(b_file, a, b_file.nodata if b_file.nodata is not None else CLASS_NODATA, Resampling.nearest)
        pb_file = rasterio.open(gdal_path(after.probabilities)) if with_probability else None
        pb = None
        if pb_file is not None:
            pb = _onto(pb_file, a, pb_file.nodata, Resampling.bilinear)
        try:
            areas = pixel_areas(a.crs.to_wkt(), tuple(a.transform)[:6], a.height)
            profile = _class_profile(a, scheme)
            paths = {name: os.path.join(tmp, f"{name}.tif") for name in (TRANSITIONS_NAME, CHANGED_NAME)}
            out_t = rasterio.open(paths[TRANSITIONS_NAME], "w", **profile)
            out_c = rasterio.open(paths[CHANGED_NAME], "w", **profile)
            out_p = None
            if with_probability:
                paths[CHANGE_PROBABILITY_NAME] = os.path.join(tmp, f"{CHANGE_PROBABILITY_NAME}.tif")
                out_p = rasterio.open(
                    paths[CHANGE_PROBABILITY_NAME],
                    "w",
                    **{**profile, "dtype": "float32", "nodata": float("nan"), "predictor": 3},
                )
            tally = ChangeTally.empty(n)
            for window in _windows(a.width, a.height):
                x = a.read(1, window=window)
                y = b.read(1, window=window)
                probability = None
                if with_probability:
                    probability = change_probability(
                        _read_probabilities(pa, window, before.encoding, n),
                        _read_probabilities(pb, window, after.encoding, n),
                    )
                codes, changed = transition_codes(transitions, x, y, probability, min_confidence or 0.0)
                row0 = int(window.row_off)
                uncertain = codes == transitions.uncertain_code if transitions.with_uncertain else None
                tally.add(x, y, areas.per_row[row0 : row0 + int(window.height)], uncertain)
                out_t.write(codes, 1, window=window)
                out_c.write(changed, 1, window=window)
                if out_p is not None:
                    probability[(x >= n) | (y >= n)] = np.nan
                    out_p.write(probability, 1, window=window)
            _describe(out_t, TRANSITIONS_NAME, transitions.label_scheme())
            _describe(out_c, CHANGED_NAME, transitions.changed_scheme())
            if out_p is not None:
                out_p.set_band_description(1, CHANGE_PROBABILITY_NAME)
                out_p.update_tags(1, meaning="1 - sum_k p_before(k) p_after(k)")
            for dataset in (out_t, out_c, out_p):
                if dataset is not None:
                    dataset.close()
        finally:
            for dataset in (b, pb, a, b_file, pa, pb_file):
                if dataset is not None and not dataset.closed:
                    dataset.close()
        for name, path in paths.items():
            vrt_to_cog(
                path, join(output, f"{name}.tif"), CLASSES_NAME if name != CHANGE_PROBABILITY_NAME else name
            )
        summary = summarise(transitions, tally, areas.method, min_confidence)
        counts = _code_counts(transitions, tally)
        png = quicklook_png(
            join(output, f"{TRANSITIONS_NAME}.tif"),
            transitions.label_scheme(),
            counts,
            title=f"{before.label} -> {after.label}",
            only_present=True,
        )
        write_bytes(join(output, TRANSITIONS_QUICKLOOK), png)
    return summary


def _code_counts(transitions: TransitionScheme, tally: ChangeTally) -> list[int]:
    """Pixels of each transition code, for the quick-look legend."""
    n = transitions.classes.num_classes
    counts = [0] * transitions.num_codes
    confirmed = tally.pixels - tally.uncertain_pixels
    counts[0] = int(np.trace(tally.pixels))
    for i in range(n):
        for j in range(n):
            if i != j:
                counts[transitions.code(i, j)] = int(confirmed[i, j])
    if transitions.with_uncertain:
        counts[transitions.uncertain_code] = int(tally.uncertain_pixels.sum())
    return counts


def _describe(dataset, name: str, scheme: LabelScheme) -> None:
    dataset.write_colormap(1, colormap(scheme))
    dataset.set_band_description(1, name)
    dataset.update_tags(1, **class_tags(scheme))


def write_summary(output: str, doc: dict[str, Any]) -> str:
    path = join(output, CHANGE_SUMMARY)
    write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path
