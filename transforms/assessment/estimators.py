"""Stratified estimators of map accuracy and class area (Olofsson et al. 2014).

Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. (2014). Good
practices for estimating area and assessing accuracy of land change. Remote Sensing of Environment 148,
42-57. doi:10.1016/j.rse.2014.02.015

The sample is a stratified random sample whose strata are the map classes: stratum h holds N_h pixels
(weight W_h = N_h / N, or its share of the area), n_h of them are sampled, and n_hj of those have
reference class j. Rows are map classes, columns reference classes, as in the paper's Table 8.

    p_hj      = W_h n_hj / n_h                                    error matrix in area proportions (Eq. 4)
    O         = sum_h p_hh            V(O) = sum_h W_h^2 U_h (1 - U_h) / (n_h - 1)              (Eq. 1, 5)
    U_h       = p_hh / p_h.           V(U_h) = U_h (1 - U_h) / (n_h - 1)                         (Eq. 2, 6)
    P_j       = p_jj / p_.j           V(P_j) per Eq. 7, with N_h replaced by W_h (the N^2 cancels)
    p_.j      = sum_h p_hj            V(p_.j) = sum_h W_h^2 (n_hj/n_h)(1 - n_hj/n_h) / (n_h - 1) (Eq. 9, 10)

A 95 % confidence interval is the estimate ± 1.96 · SE (the paper's Eq. 11 and its example).

The functions below take counts of shape (..., K, K), so a simulation evaluates thousands of samples at
once; `stratified_estimates` is the form a command uses, with the undefined cases made explicit: a
stratum without a labelled point (its class gets no estimates and its area is left out of the
population, with a warning), a stratum with a single point (its variance needs n_h >= 2), a class that
no reference point has (its producer's accuracy is undefined).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

# The normal quantile of a two-sided 95 % interval, as the paper uses it (estimate ± 1.96 · SE).
Z_95 = 1.96


# --- the estimators, vectorised over leading axes --------------------------------------------------


def _per_stratum(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_h, n_hj / n_h): NaN rows for strata without a sample."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / n[..., None]
    return n, shares


def _weights(weights: np.ndarray | Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum(axis=-1, keepdims=True)


def proportion_matrix(counts: np.ndarray, weights: np.ndarray | Sequence[float]) -> np.ndarray:
    """The error matrix in estimated area proportions, p_hj = W_h n_hj / n_h (rows of unsampled or empty
    strata are zero)."""
    w = _weights(weights)
    _, shares = _per_stratum(counts)
    return np.where(w[..., None] > 0, np.nan_to_num(shares) * w[..., None], 0.0)


def _census(census: np.ndarray | Sequence[bool] | None, n: np.ndarray) -> np.ndarray:
    """Strata whose every pixel is labelled: no sampling error, whatever their n_h."""
    return np.zeros(n.shape, bool) if census is None else np.broadcast_to(np.asarray(census, bool), n.shape)


def users_accuracy(
    counts: np.ndarray, census: np.ndarray | Sequence[bool] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(U_h, V(U_h)) per stratum: NaN without a sample, NaN variance with a single one (0 for a census
    stratum, whose every pixel is labelled)."""
    n, shares = _per_stratum(counts)
    whole = _census(census, n)
    u = np.diagonal(shares, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n > 1, u * (1 - u) / (n - 1), np.nan)
    return u, np.where(whole & (n > 0), 0.0, var)


def overall_accuracy(
    counts: np.ndarray,
    weights: np.ndarray | Sequence[float],
    census: np.ndarray | Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(O, V(O)); strata of weight 0 do not count, a sampled stratum with n_h = 1 makes V(O) NaN."""
    w = _weights(weights)
    u, var_u = users_accuracy(counts, census)
    present = w > 0
    value = np.sum(np.where(present, w * np.nan_to_num(u), 0.0), axis=-1)
    value = np.where(np.any(present & np.isnan(u), axis=-1), np.nan, value)
    var = np.sum(np.where(present, w**2 * var_u, 0.0), axis=-1)
    return value, var


def area_proportions(
    counts: np.ndarray,
    weights: np.ndarray | Sequence[float],
    census: np.ndarray | Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(p_.j, V(p_.j)) per reference class j."""
    w = _weights(weights)
    n, shares = _per_stratum(counts)
    whole = _census(census, n)[..., None]
    present = (w > 0)[..., None]
    value = np.sum(np.where(present, w[..., None] * np.nan_to_num(shares), 0.0), axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = w[..., None] ** 2 * shares * (1 - shares) / (n[..., None] - 1)
    terms = np.where(present, np.where(n[..., None] > 1, terms, np.where(whole, 0.0, np.nan)), 0.0)
    terms = np.where(whole & present, 0.0, terms)
    return value, terms.sum(axis=-2)


def producers_accuracy(
    counts: np.ndarray,
    weights: np.ndarray | Sequence[float],
    census: np.ndarray | Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(P_j, V(P_j)) per class j, Eq. 7 of the paper: NaN where no reference point is of class j."""
    w = _weights(weights)
    n, shares = _per_stratum(counts)
    whole = _census(census, n)
    p = proportion_matrix(counts, w)
    column = p.sum(axis=-2)
    diagonal = np.diagonal(p, axis1=-2, axis2=-1)
    u, _ = users_accuracy(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(column > 0, diagonal / column, np.nan)
        # The stratum of class j itself: its map pixels of another reference class are omitted area.
        own = np.where(w > 0, w**2 * (1 - value) ** 2 * u * (1 - u) / (n - 1), 0.0)
        own = np.where((w > 0) & ~(n > 1), np.nan, own)
        own = np.where(whole, 0.0, own)
        # Every other stratum i: its pixels of reference class j (omission of j into i).
        cell = w[..., None] ** 2 * shares * (1 - shares) / (n[..., None] - 1)
        cell = np.where((w > 0)[..., None], np.where(n[..., None] > 1, cell, np.nan), 0.0)
        cell = np.where(whole[..., None], 0.0, cell)
        k = cell.shape[-1]
        others = np.sum(np.where(np.eye(k, dtype=bool), 0.0, cell), axis=-2)
        var = (own + value**2 * others) / column**2
    var = np.where(column > 0, var, np.nan)
    return value, var


# --- the form a command uses --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Estimate:
    """An estimate with its standard error; None where it is undefined."""

    value: float | None
    se: float | None

    @property
    def ci95(self) -> tuple[float, float] | None:
        """estimate ± 1.96 · SE."""
        if self.value is None or self.se is None:
            return None
        return (self.value - Z_95 * self.se, self.value + Z_95 * self.se)

    @property
    def half_width(self) -> float | None:
        return None if self.se is None else Z_95 * self.se

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (a proportion times the total area, say)."""
        return Estimate(
            None if self.value is None else self.value * factor,
            None if self.se is None else self.se * factor,
        )

    def to_json(self) -> dict[str, Any]:
        ci = self.ci95
        return {"estimate": self.value, "se": self.se, "ci95": None if ci is None else list(ci)}


def _estimate(value: float, var: float) -> Estimate:
    if not np.isfinite(value):
        return Estimate(None, None)
    se = float(np.sqrt(var)) if np.isfinite(var) else None
    return Estimate(float(value), se)


@dataclasses.dataclass(frozen=True)
class StratifiedEstimates:
    """Accuracy and area estimates of a stratified sample whose strata are the map classes."""

    classes: tuple[str, ...]
    counts: np.ndarray  # (K, K) sample counts, rows map class (stratum), columns reference class
    weights: np.ndarray  # (K,) stratum weights over the assessed part of the map
    proportions: np.ndarray  # (K, K) error matrix in estimated area proportions
    overall: Estimate
    users: tuple[Estimate, ...]
    producers: tuple[Estimate, ...]
    area_proportion: tuple[Estimate, ...]
    assessed: tuple[bool, ...]  # per class: its stratum was sampled (or is empty)
    assessed_share: float  # the share of the map (by weight) that the estimates describe
    warnings: tuple[str, ...]

    @property
    def sample_sizes(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.counts.sum(axis=1))


def stratified_estimates(
    counts: np.ndarray | Sequence[Sequence[int]],
    stratum_sizes: np.ndarray | Sequence[float],
    classes: Sequence[str] | None = None,
    census: Sequence[bool] | None = None,
) -> StratifiedEstimates:
    """Estimates from a (K, K) table of sample counts (rows: map class = stratum, columns: reference
    class) and the strata's sizes (pixels, or areas: only their shares matter).

    A stratum that holds pixels but has no labelled point cannot be estimated: its class gets no
    estimates (None) and its pixels are left out of the population, so overall accuracy and areas
    describe the rest of the map; the warnings say so. `census`: strata whose every pixel has a labelled
    point (a class of a few pixels), which have no sampling error at any n_h."""
    counts = np.asarray(counts, dtype=np.int64)
    sizes = np.asarray(stratum_sizes, dtype=np.float64)
    k = len(sizes)
    if counts.shape != (k, k):
        raise ValueError(
            f"counts must be a {k}x{k} table (one row and column per stratum), got {counts.shape}."
        )
    if np.any(sizes < 0) or not sizes.sum() > 0:
        raise ValueError("stratum sizes must be non-negative and not all zero.")
    if np.any(counts < 0):
        raise ValueError("sample counts must be non-negative.")
    names = tuple(classes) if classes is not None else tuple(str(i) for i in range(k))
    n = counts.sum(axis=1)
    if np.any((sizes == 0) & (n > 0)):
        empty = [names[i] for i in np.flatnonzero((sizes == 0) & (n > 0))]
        raise ValueError(f"stratum {empty[0]!r} holds no pixels but has sample points.")
    warnings = []
    unsampled = (sizes > 0) & (n == 0)
    share = float(sizes[~unsampled].sum() / sizes.sum())
    if not np.any((sizes > 0) & (n > 0)):
        raise ValueError("no stratum has a labelled point: nothing to estimate.")
    for i in np.flatnonzero(unsampled):
        warnings.append(
            f"class {names[i]!r} has no labelled sample point: its accuracy and area are not estimated "
            f"(null), and its {100 * sizes[i] / sizes.sum():.2f} % of the map is left out of every other "
            "estimate."
        )
    whole = np.zeros(k, bool) if census is None else np.asarray(census, bool)
    for i in np.flatnonzero((sizes > 0) & (n == 1) & ~whole):
        warnings.append(
            f"class {names[i]!r} has a single labelled point: standard errors that depend on it are "
            "undefined (null); a stratum needs at least 2."
        )
    weights = np.where(unsampled, 0.0, sizes)
    weights = weights / weights.sum()
    p = proportion_matrix(counts, weights)
    overall = _estimate(*overall_accuracy(counts, weights, whole))
    ua, ua_var = users_accuracy(counts, whole)
    pa, pa_var = producers_accuracy(counts, weights, whole)
    area, area_var = area_proportions(counts, weights, whole)
    assessed = tuple(bool(v) for v in ~unsampled)
    users = tuple(
        _estimate(ua[i], ua_var[i]) if assessed[i] and sizes[i] > 0 else Estimate(None, None)
        for i in range(k)
    )
    producers = tuple(_estimate(pa[j], pa_var[j]) if assessed[j] else Estimate(None, None) for j in range(k))
    areas = tuple(_estimate(area[j], area_var[j]) if assessed[j] else Estimate(None, None) for j in range(k))
    unfound = [names[j] for j in range(k) if assessed[j] and sizes[j] > 0 and producers[j].value is None]
    if len(unfound) == 1:
        warnings.append(
            f"no labelled point has reference class {unfound[0]!r}: its producer's accuracy is undefined "
            "(null) and its estimated area is 0."
        )
    elif unfound:
        # One line for many (a transitions map has dozens of rare pairs).
        warnings.append(
            f"no labelled point has reference class {', '.join(map(repr, unfound))} ({len(unfound)} "
            "classes): their producer's accuracies are undefined (null) and their estimated areas are 0."
        )
    return StratifiedEstimates(
        classes=names,
        counts=counts,
        weights=weights,
        proportions=p,
        overall=overall,
        users=users,
        producers=producers,
        area_proportion=areas,
        assessed=assessed,
        assessed_share=share,
        warnings=tuple(warnings),
    )
