"""A change map scored against known truth (the demo scene's two dates of truth labels): change /
no-change precision, recall and F1 over every pixel, and each transition's mapped area against its true
area. Only a scene with complete truth can be scored this way; real maps are assessed by sampling
(`terrabeam assess` on the transitions map).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from transforms.assessment.areas import M2_PER_HA, pixel_areas
from transforms.change.transitions import (
    CHANGE_NODATA,
    ChangeError,
    TransitionScheme,
    pair_name,
    transition_codes,
)
from transforms.cog import class_tags, colormap
from transforms.contracts.label_scheme import LabelScheme

WINDOW = 1024


def score_change(
    before_map: str, after_map: str, before_truth: str, after_truth: str, class_names: tuple[str, ...]
) -> dict[str, Any]:
    """Scores of the maps' change against the truth's; all four rasters on one grid, class indices."""
    n = len(class_names)
    sources = [rasterio.open(p) for p in (before_map, after_map, before_truth, after_truth)]
    try:
        grids = {(s.crs, tuple(s.transform)[:6], s.width, s.height) for s in sources}
        if len(grids) != 1:
            raise ChangeError("the maps and the truth are on different grids; score on the truth's grid.")
        first = sources[0]
        areas = pixel_areas(first.crs.to_wkt(), tuple(first.transform)[:6], first.height)
        counts = np.zeros(4, np.int64)  # true positive, false positive, false negative, true negative
        mapped = np.zeros((n, n))
        true = np.zeros((n, n))
        for row in range(0, first.height, WINDOW):
            height = min(WINDOW, first.height - row)
            window = Window(0, row, first.width, height)
            a, b, ta, tb = (s.read(1, window=window) for s in sources)
            valid = (a < n) & (b < n) & (ta < n) & (tb < n)
            m2 = np.broadcast_to(areas.per_row[row : row + height, None], a.shape)[valid]
            found, real = (a != b)[valid], (ta != tb)[valid]
            counts += [
                np.sum(found & real),
                np.sum(found & ~real),
                np.sum(~found & real),
                np.sum(~found & ~real),
            ]
            for x, y, matrix in ((a, b, mapped), (ta, tb, true)):
                pair = x[valid].astype(np.int64) * n + y[valid]
                matrix += np.bincount(pair, weights=m2, minlength=n * n).reshape(n, n)
    finally:
        for s in sources:
            s.close()
    tp, fp, fn, tn = (int(c) for c in counts)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    transitions = []
    for i in range(n):
        for j in range(n):
            if i != j and (true[i, j] > 0 or mapped[i, j] > 0):
                transitions.append(
                    {
                        "transition": pair_name(class_names[i], class_names[j]),
                        "true_ha": round(true[i, j] / M2_PER_HA, 2),
                        "mapped_ha": round(mapped[i, j] / M2_PER_HA, 2),
                        "error_ha": round((mapped[i, j] - true[i, j]) / M2_PER_HA, 2),
                        "relative_error": round((mapped[i, j] - true[i, j]) / true[i, j], 4)
                        if true[i, j] > 0
                        else None,
                    }
                )
    transitions.sort(key=lambda t: -max(t["true_ha"], t["mapped_ha"]))
    return {
        "measured": "every pixel of the scene against its known truth of both dates",
        "change_pixels": {
            "true_positive": tp,
            "false_positive": fp,
            "false_negative": fn,
            "true_negative": tn,
        },
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "true_changed_ha": round(float(true[~np.eye(n, dtype=bool)].sum()) / M2_PER_HA, 2),
        "mapped_changed_ha": round(float(mapped[~np.eye(n, dtype=bool)].sum()) / M2_PER_HA, 2),
        "transitions": transitions,
    }


def write_true_transitions(before_truth: str, after_truth: str, scheme: LabelScheme, path: str) -> str:
    """The truth's transitions as a class map (codes and names as `transitions.tif`'s), for the
    assessment's reference: the truth rasters hold label values of `scheme`, on one grid."""
    transitions = TransitionScheme(scheme)
    with rasterio.open(before_truth) as a, rasterio.open(after_truth) as b:
        if (a.crs, a.transform, a.shape) != (b.crs, b.transform, b.shape):
            raise ChangeError(f"the truth rasters {before_truth} and {after_truth} are on different grids.")
        profile = {
            "driver": "GTiff",
            "width": a.width,
            "height": a.height,
            "count": 1,
            "dtype": "uint8",
            "crs": a.crs,
            "transform": a.transform,
            "nodata": CHANGE_NODATA,
            "tiled": True,
            "compress": "deflate",
        }
        with rasterio.open(path, "w", **profile) as out:
            for row in range(0, a.height, WINDOW):
                window = Window(0, row, a.width, min(WINDOW, a.height - row))
                before = scheme.remap(a.read(1, window=window), a.nodata)
                after = scheme.remap(b.read(1, window=window), b.nodata)
                codes, _ = transition_codes(transitions, before, after)
                out.write(codes, 1, window=window)
            out.write_colormap(1, colormap(transitions.label_scheme()))
            out.update_tags(1, **class_tags(transitions.label_scheme()))
    return path
