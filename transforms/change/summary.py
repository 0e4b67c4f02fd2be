"""What changed, in numbers: the transition matrix in pixels and hectares, gross gain / loss / net per
class, the top transitions (the body of `change.json`).

Areas are pixel counts times each row's pixel area (`transforms.assessment.areas`: exact on the
ellipsoid for geographic grids), so a map in degrees reports hectares as well as one in metres. These
are the map's own areas: how sure they are comes from `terrabeam assess` on the transitions map.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from transforms.assessment.areas import M2_PER_HA
from transforms.change.transitions import TransitionScheme, pair_name

TOP_TRANSITIONS = 10


@dataclasses.dataclass
class ChangeTally:
    """Running sums over the windows of two maps: (n, n) pixels and m² per (before, after) pair, the
    same for the changes left uncertain by the confidence floor, and the pixels without data."""

    pixels: np.ndarray
    m2: np.ndarray
    uncertain_pixels: np.ndarray
    uncertain_m2: np.ndarray
    nodata_pixels: int = 0

    @classmethod
    def empty(cls, num_classes: int) -> ChangeTally:
        def zeros(dtype):
            return np.zeros((num_classes, num_classes), dtype)

        return cls(zeros(np.int64), zeros(np.float64), zeros(np.int64), zeros(np.float64))

    def add(
        self,
        before: np.ndarray,
        after: np.ndarray,
        row_m2: np.ndarray,
        uncertain: np.ndarray | None = None,
    ) -> None:
        """Count a window: class indices `before`/`after` (h, w), each row's pixel area `row_m2` (h,),
        and where the change is uncertain (h, w bool)."""
        n = self.pixels.shape[0]
        valid = (before < n) & (after < n)
        self.nodata_pixels += int(valid.size - valid.sum())
        pair = before.astype(np.int64) * n + after
        area = np.broadcast_to(row_m2[:, None], before.shape)
        self.pixels += np.bincount(pair[valid], minlength=n * n).reshape(n, n)
        self.m2 += np.bincount(pair[valid], weights=area[valid], minlength=n * n).reshape(n, n)
        if uncertain is not None:
            unsure = valid & uncertain
            self.uncertain_pixels += np.bincount(pair[unsure], minlength=n * n).reshape(n, n)
            self.uncertain_m2 += np.bincount(pair[unsure], weights=area[unsure], minlength=n * n).reshape(
                n, n
            )


@dataclasses.dataclass(frozen=True)
class ChangeSummary:
    """change.json's numbers."""

    doc: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.doc


def _ha(m2: np.ndarray | float) -> Any:
    return np.round(np.asarray(m2) / M2_PER_HA, 4).tolist()


def summarise(
    scheme: TransitionScheme, tally: ChangeTally, area_method: str, min_confidence: float | None = None
) -> ChangeSummary:
    """The transition matrix (rows: before, columns: after), each class's gain, loss and net change,
    and the largest transitions, from a finished tally."""
    names = scheme.classes.names
    n = len(names)
    off = ~np.eye(n, dtype=bool)
    confirmed_m2 = tally.m2 - tally.uncertain_m2
    confirmed_px = tally.pixels - tally.uncertain_pixels
    total_px = int(tally.pixels.sum())
    changed_px = int(confirmed_px[off].sum())
    per_class = []
    for k, name in enumerate(names):
        gain = confirmed_m2[:, k].sum() - confirmed_m2[k, k]
        loss = confirmed_m2[k, :].sum() - confirmed_m2[k, k]
        per_class.append(
            {
                "class": name,
                "before_ha": _ha(tally.m2[k, :].sum()),
                "after_ha": _ha(tally.m2[:, k].sum()),
                "unchanged_ha": _ha(tally.m2[k, k]),
                "gain_ha": _ha(gain),
                "loss_ha": _ha(loss),
                "net_ha": _ha(gain - loss),
            }
        )
    order = sorted(
        ((i, j) for i in range(n) for j in range(n) if i != j and confirmed_px[i, j] > 0),
        key=lambda ij: (-confirmed_m2[ij], ij),
    )
    changed_m2 = float(confirmed_m2[off].sum())
    top = [
        {
            "transition": pair_name(names[i], names[j]),
            "from": names[i],
            "to": names[j],
            "code": scheme.code(i, j),
            "pixels": int(confirmed_px[i, j]),
            "hectares": _ha(confirmed_m2[i, j]),
            "share_of_change": round(float(confirmed_m2[i, j] / changed_m2), 4) if changed_m2 else 0.0,
        }
        for i, j in order[:TOP_TRANSITIONS]
    ]
    doc: dict[str, Any] = {
        "classes": list(names),
        "pixel_area": area_method,
        "mapped_pixels": total_px,
        "nodata_pixels": tally.nodata_pixels,
        "changed": {
            "pixels": changed_px,
            "hectares": _ha(changed_m2),
            "fraction": round(changed_px / total_px, 6) if total_px else 0.0,
        },
        "matrix": {
            "rows": "before",
            "columns": "after",
            "pixels": tally.pixels.tolist(),
            "hectares": _ha(tally.m2),
        },
        "per_class": per_class,
        "top_transitions": top,
    }
    if min_confidence is not None:
        doc["uncertain"] = {
            "min_confidence": min_confidence,
            "rule": "a pixel whose classes differ is 'uncertain' when its change probability "
            "1 - sum_k p_before(k) p_after(k) is below min_confidence; gains, losses and the top "
            "transitions leave uncertain pixels out, the matrix keeps them",
            "pixels": int(tally.uncertain_pixels[off].sum()),
            "hectares": _ha(tally.uncertain_m2[off].sum()),
            "matrix_pixels": tally.uncertain_pixels.tolist(),
        }
    return ChangeSummary(doc)
