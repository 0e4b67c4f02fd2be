"""How many reference points, and how many in each stratum (Olofsson et al. 2014, Section 5.1.2).

The total comes from a target standard error of overall accuracy and the user's accuracy anticipated
for each class (the paper's Eq. 13, Cochran 1977 Eq. 5.25 without the finite population correction):

    n = (sum_i W_i S_i / S(O))^2,   S_i = sqrt(U_i (1 - U_i))

rounded up. The paper's example (target 0.01; anticipated accuracies 0.70 and 0.60 for the change
classes, 0.90 and 0.95 for the stable ones) gives n = 641.

Allocation follows the paper's advice for rare classes: each stratum gets at least a minimum (50-100
in the paper; its example gives the two rare change classes 75 each), the rest of the sample is shared
in proportion to the strata's sizes, and no stratum gets more points than it has pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from transforms.assessment.errors import AssessmentError

# The paper's example: a target standard error of overall accuracy of 0.01 ...
DEFAULT_TARGET_SE = 0.01
# ... and 75 points for each rare class (between the 50 and 100 it recommends).
DEFAULT_MIN_PER_CLASS = 75
# The user's accuracy anticipated for every class unless told otherwise: between the paper's 0.60-0.70
# for hard (change) classes and its 0.90-0.95 for easy (stable) ones; a lower guess asks for more points.
DEFAULT_ANTICIPATED_ACCURACY = 0.8


def sample_size(
    weights: Sequence[float], anticipated_users_accuracy: Sequence[float], target_se: float
) -> int:
    """n = ceil((sum W_i sqrt(U_i (1 - U_i)) / target_se)^2) for strata of sizes `weights` (any units)."""
    w = np.asarray(weights, dtype=np.float64)
    u = np.asarray(anticipated_users_accuracy, dtype=np.float64)
    if w.shape != u.shape:
        raise AssessmentError(
            f"{len(u)} anticipated user's accuracies for {len(w)} strata: give one per class."
        )
    if not 0 < target_se < 0.5:
        raise AssessmentError(
            f"--target-se {target_se} must be a standard error of overall accuracy between 0 and 0.5, "
            "e.g. 0.01 (the paper's example)."
        )
    if np.any((u <= 0) | (u >= 1)):
        raise AssessmentError(
            "anticipated user's accuracies must lie strictly between 0 and 1 (e.g. 0.8); got "
            f"{', '.join(f'{v:g}' for v in u)}."
        )
    if np.any(w < 0) or not w.sum() > 0:
        raise AssessmentError("the map has no pixels of any class: nothing to sample.")
    w = w / w.sum()
    n = (np.sum(w * np.sqrt(u * (1 - u))) / target_se) ** 2
    # A hair of tolerance so that an exact integer (after floating-point noise) is not rounded up.
    return max(1, math.ceil(n - 1e-9))


def allocate(total: int, sizes: Sequence[int], minimum: int = DEFAULT_MIN_PER_CLASS) -> list[int]:
    """Points per stratum: at least `minimum` each (never more than a stratum's pixels), the rest in
    proportion to size, rounded so that they add up (largest remainders first).

    When the minimums alone exceed `total`, every stratum gets its minimum and the sample is larger
    than `total`; when the strata hold fewer pixels than `total`, every pixel is taken."""
    pixels = np.asarray(sizes, dtype=np.int64)
    if total < 1:
        raise AssessmentError(f"the sample size must be at least 1 point, got {total}.")
    if minimum < 0:
        raise AssessmentError(f"--min-per-class must be 0 or more, got {minimum}.")
    if np.any(pixels < 0) or pixels.sum() == 0:
        raise AssessmentError("the map has no pixels of any class: nothing to sample.")
    total = min(int(total), int(pixels.sum()))
    floor = np.minimum(pixels, minimum)
    n = floor.copy()
    # Strata that get more than the minimum share what the minimums leave, in proportion to size; a
    # stratum whose share falls under its minimum (or over its pixels) is fixed there, and the rest is
    # shared again among the others.
    fixed = pixels == floor  # already every pixel
    while True:
        free = ~fixed
        budget = total - int(n[fixed].sum())
        if not free.any() or budget <= int(floor[free].sum()):
            n[free] = floor[free]
            break
        share = budget * pixels[free] / pixels[free].sum()
        low = share < floor[free]
        high = share > pixels[free]
        if low.any() or high.any():
            index = np.flatnonzero(free)
            fixed[index[low]] = True
            n[index[low]] = floor[free][low]
            fixed[index[high]] = True
            n[index[high]] = pixels[free][high]
            continue
        n[free] = _round_to_total(share, budget)
        break
    return [int(v) for v in n]


def _round_to_total(values: np.ndarray, total: int) -> np.ndarray:
    """Integers that add up to `total`, each the floor of its value or one more (largest remainders)."""
    base = np.floor(values).astype(np.int64)
    left = total - int(base.sum())
    order = np.argsort(-(values - base), kind="stable")
    base[order[:left]] += 1
    return base
