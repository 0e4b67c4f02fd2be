"""Sample size from a target standard error of overall accuracy, and its allocation to the strata."""

from __future__ import annotations

import pytest

from transforms.assessment.errors import AssessmentError
from transforms.assessment.sample_size import allocate, sample_size

# Olofsson et al. (2014), Section 5.1.2: mapped proportions 0.020, 0.015, 0.320, 0.645 (deforestation,
# forest gain, stable forest, stable non-forest), anticipated user's accuracies 0.70, 0.60, 0.90, 0.95
# and a target standard error of overall accuracy of 0.01 give n = 641.
PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
ANTICIPATED = [0.70, 0.60, 0.90, 0.95]


def test_the_papers_sample_size():
    assert sample_size(PIXELS, ANTICIPATED, 0.01) == 641
    # (sum W_i S_i / S)^2 = 640.54 before rounding up; half the standard error, four times that (2562.1).
    assert sample_size(PIXELS, ANTICIPATED, 0.005) == 2563
    assert sample_size([0.020, 0.015, 0.320, 0.645], ANTICIPATED, 0.01) == 641  # units do not matter


def test_the_papers_minimum_for_rare_classes_and_the_rest_in_proportion():
    # The paper's example gives the two rare classes 75 points each and shares the rest of its 641 points
    # between the stable classes (its Table 8 rows hold 75, 75, 165 and 325); shared in exact proportion,
    # the 491 left are 163 and 328.
    assert allocate(641, PIXELS, minimum=75) == [75, 75, 163, 328]
    assert sum(allocate(641, PIXELS, minimum=75)) == 641
    assert allocate(641, PIXELS, minimum=0) == [13, 10, 205, 413]  # proportional alone starves the rare


def test_no_stratum_gets_more_points_than_it_has_pixels():
    assert allocate(100, [5, 1000, 3000], minimum=50) == [5, 50, 50]  # a stratum of 5 pixels: all 5
    assert allocate(10_000, [5, 20, 30], minimum=3) == [5, 20, 30]  # more points asked than pixels
    n = allocate(300, [40, 10_000, 90], minimum=75)
    assert n[0] == 40 and n[2] == 75 and sum(n) == 300


def test_minimums_beyond_the_total_win():
    # The minimums are the point of the design: they stand even when they exceed the formula's n.
    assert allocate(100, [1000, 1000, 1000], minimum=50) == [50, 50, 50]


def test_a_stratum_pushed_under_its_minimum_by_proportion_is_raised_to_it():
    # 280 points left for the two large strata: 46.7 and 233.3 in proportion, so the first is raised
    # to its minimum and the last takes the rest.
    assert allocate(400, [100_000, 2_000, 2_000, 500_000], minimum=60) == [60, 60, 60, 220]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sample_size(PIXELS, ANTICIPATED, 0.0), "between 0 and 0.5"),
        (lambda: sample_size(PIXELS, [0.7, 1.0, 0.9, 0.95], 0.01), "strictly between 0 and 1"),
        (lambda: sample_size(PIXELS, [0.7], 0.01), "one per class"),
        (lambda: sample_size([0, 0], [0.8, 0.8], 0.01), "no pixels"),
        (lambda: allocate(0, PIXELS), "at least 1 point"),
        (lambda: allocate(10, PIXELS, minimum=-1), "0 or more"),
    ],
)
def test_bad_input_is_refused_with_what_to_change(call, message):
    with pytest.raises(AssessmentError, match=message):
        call()
