"""A synthetic map whose true areas are known, sampled thousands of times as `terrabeam assess` samples
a map: the stratified estimates of area are unbiased, their 95 % intervals cover the true area about 95 %
of the time for every class, and the map's own pixel count is biased.

The map has four classes; like many real maps it over-maps a rare class (built-up: 8 % of the map, 55 %
of it right) and under-maps another (crops). Each repetition is an independent stratified random sample
(100-300 points per stratum, drawn without replacement): the counts of each stratum's sample are drawn
from the multivariate hypergeometric distribution of the stratum's pixels by true class, which is exactly
the distribution of a simple random sample of those pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from transforms.assessment.estimators import Z_95, area_proportions, overall_accuracy

CLASSES = ("trees", "crops", "water", "built")
MAP_SHARES = [0.50, 0.30, 0.12, 0.08]
# True class of the pixels of each map class (rows: map class; columns: true class).
TRUTH_GIVEN_MAP = [
    [0.93, 0.06, 0.01, 0.00],
    [0.10, 0.88, 0.01, 0.01],
    [0.02, 0.03, 0.95, 0.00],
    [0.05, 0.35, 0.05, 0.55],
]
SAMPLE = [300, 250, 100, 100]  # points per stratum
REPETITIONS = 4000
SEED = 2014


@pytest.fixture(scope="module")
def simulation():
    rng = np.random.default_rng(SEED)
    mapped = rng.choice(4, size=(1000, 1000), p=MAP_SHARES)
    cumulative = np.cumsum(TRUTH_GIVEN_MAP, axis=1)[mapped]
    truth = (rng.random(mapped.shape)[..., None] > cumulative).sum(axis=-1)
    population = np.bincount(mapped.ravel() * 4 + truth.ravel(), minlength=16).reshape(4, 4)
    # (REPETITIONS, 4, 4): each repetition's sample counts, rows stratum, columns true class.
    counts = np.stack(
        [rng.multivariate_hypergeometric(population[h], SAMPLE[h], size=REPETITIONS) for h in range(4)],
        axis=1,
    )
    pixels = population.sum(axis=1)
    area, variance = area_proportions(counts, pixels)
    return {
        "pixels": pixels,
        "true_area": population.sum(axis=0) / population.sum(),
        "mapped_area": pixels / pixels.sum(),
        "true_overall": np.trace(population) / population.sum(),
        "counts": counts,
        "area": area,
        "se": np.sqrt(variance),
    }


def test_95_percent_intervals_cover_the_true_area_95_percent_of_the_time(simulation):
    covered = np.abs(simulation["area"] - simulation["true_area"]) <= Z_95 * simulation["se"]
    coverage = covered.mean(axis=0)
    # With 4000 repetitions a true 95 % coverage is observed within about ±0.7 % (two Monte Carlo SEs).
    assert np.all((coverage >= 0.93) & (coverage <= 0.97)), dict(zip(CLASSES, coverage.round(4)))


def test_the_area_estimates_are_unbiased_within_sampling_error(simulation):
    area = simulation["area"]
    error_of_mean = area.std(axis=0, ddof=1) / np.sqrt(REPETITIONS)
    z = (area.mean(axis=0) - simulation["true_area"]) / error_of_mean
    assert np.all(np.abs(z) < 3), dict(zip(CLASSES, z.round(2)))
    # The standard error formula estimates the estimates' real spread.
    assert simulation["se"].mean(axis=0) == pytest.approx(area.std(axis=0), rel=0.05)


def test_the_pixel_count_area_is_biased(simulation):
    bias = simulation["mapped_area"] - simulation["true_area"]
    spread = simulation["area"].std(axis=0)
    # Built-up is over-mapped by some 70 % and crops under-mapped: far outside the estimator's spread ...
    assert bias[3] / simulation["true_area"][3] > 0.6
    assert abs(bias[3]) > 5 * spread[3] and abs(bias[1]) > 2 * spread[1]
    # ... so an interval as wide as the estimator's, around the mapped area, would never cover the truth.
    around_mapped = np.abs(simulation["mapped_area"] - simulation["true_area"]) <= Z_95 * simulation["se"]
    assert around_mapped.mean(axis=0)[[1, 3]].max() < 0.01


def test_overall_accuracy_intervals_cover_too(simulation):
    value, variance = overall_accuracy(simulation["counts"], simulation["pixels"])
    coverage = np.mean(np.abs(value - simulation["true_overall"]) <= Z_95 * np.sqrt(variance))
    assert 0.93 <= coverage <= 0.97
