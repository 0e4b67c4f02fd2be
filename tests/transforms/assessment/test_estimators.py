"""The stratified estimators reproduce the numerical example published with the method, and make the
undefined cases explicit.

Source: Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. (2014).
Good practices for estimating area and assessing accuracy of land change. Remote Sensing of Environment
148, 42-57, Section 5 ("Example"): Table 8 (sample counts and mapped areas), Table 9 (the error matrix
in area proportions) and the estimates given beside them on p. 54. The inputs are also those of the
example "table 8 in Olofsson et al. (2014)" in the documentation of the R package mapaccuracy
(function `olofsson`), which checks its output against the same page.
"""

from __future__ import annotations

import numpy as np
import pytest

from transforms.assessment.estimators import (
    Z_95,
    Estimate,
    area_proportions,
    overall_accuracy,
    producers_accuracy,
    stratified_estimates,
    users_accuracy,
)

CLASSES = ("deforestation", "forest_gain", "stable_forest", "stable_non_forest")
# Table 8: rows map class (stratum), columns reference class.
COUNTS = [
    [66, 0, 5, 4],
    [0, 55, 8, 12],
    [1, 0, 153, 11],
    [2, 1, 9, 313],
]
# Table 8: mapped area in 30 m Landsat pixels (0.09 ha each): 900,000 ha in all.
PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
HA_PER_PIXEL = 0.09
TOTAL_HA = sum(PIXELS) * HA_PER_PIXEL


def same_digits(value: float | None, printed: float, decimals: int) -> bool:
    """`value` rounds to `printed` at the paper's number of decimals."""
    return value is not None and abs(value - printed) <= 0.5 * 10**-decimals + 1e-12


@pytest.fixture(scope="module")
def example():
    return stratified_estimates(COUNTS, PIXELS, CLASSES)


def test_the_error_matrix_in_area_proportions_is_table_9(example):
    # Table 9, the cells and column totals as printed (4 decimals).
    printed = {(0, 0): 0.0176, (0, 2): 0.0013, (1, 1): 0.0110, (2, 2): 0.2967, (3, 3): 0.6212}
    for (i, j), value in printed.items():
        assert same_digits(example.proportions[i, j], value, 4), (i, j, example.proportions[i, j])
    for j, total in enumerate([0.0235, 0.0130, 0.3175, 0.6460]):
        assert same_digits(example.proportions[:, j].sum(), total, 4), j
    assert example.proportions.sum(axis=1) == pytest.approx([0.020, 0.015, 0.320, 0.645])
    assert example.proportions.sum() == pytest.approx(1.0)


def test_users_and_overall_accuracy_are_the_papers(example):
    # p. 54: user's accuracy 0.88 ± 0.07, 0.73 ± 0.10, 0.93 ± 0.04, 0.96 ± 0.02; overall 0.95 ± 0.02.
    for estimate, (value, half_width) in zip(
        example.users, [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]
    ):
        assert same_digits(estimate.value, value, 2)
        assert same_digits(estimate.half_width, half_width, 2)
    assert same_digits(example.overall.value, 0.95, 2)
    assert same_digits(example.overall.half_width, 0.02, 2)


def test_producers_accuracy_is_the_papers(example):
    # p. 54: producer's accuracy 0.75 ± 0.21, 0.85, 0.93 ± 0.03, 0.96.
    for estimate, value in zip(example.producers, [0.75, 0.85, 0.93, 0.96]):
        assert same_digits(estimate.value, value, 2)
    assert same_digits(example.producers[0].half_width, 0.21, 2)
    assert same_digits(example.producers[2].half_width, 0.03, 2)


def test_producers_accuracy_variance_is_equation_7_written_out():
    """Eq. 7 by hand for forest gain (j = 2), with the pixel counts N_i. as the paper writes it:

    V(P_j) = 1/N_.j^2 [N_j.^2 (1-P_j)^2 U_j (1-U_j) / (n_j.-1)
                       + P_j^2 sum_{i != j} N_i.^2 n_ij/n_i. (1 - n_ij/n_i.) / (n_i.-1)]
    """
    n_column = [0, 55, 0, 1]  # n_i2 in each stratum
    n_rows = [75, 75, 165, 325]
    n_dot_j = sum(N * n / m for N, n, m in zip(PIXELS, n_column, n_rows))  # estimated pixels of class 2
    p = 150_000 * 55 / 75 / n_dot_j
    u = 55 / 75
    own = 150_000**2 * (1 - p) ** 2 * u * (1 - u) / 74
    others = 6_450_000**2 * (1 / 325) * (1 - 1 / 325) / 324  # the one other stratum with class-2 points
    expected = (own + p**2 * others) / n_dot_j**2
    value, variance = producers_accuracy(np.array(COUNTS), PIXELS)
    assert value[1] == pytest.approx(p, rel=1e-12)
    assert variance[1] == pytest.approx(expected, rel=1e-12)
    # Its 95 % half-width is 0.254, and stable non-forest's 0.018; as far as could be checked, the
    # paper's page prints 0.23 and 0.01 for these two, which the paper's own Eq. 7 does not give (its
    # other two intervals, 0.21 and 0.03, it does).
    assert Z_95 * np.sqrt(variance[1]) == pytest.approx(0.2544, abs=1e-4)
    assert Z_95 * np.sqrt(variance[3]) == pytest.approx(0.0184, abs=1e-4)


def test_the_area_estimates_are_the_papers(example):
    # p. 54: 21,158 ± 6158 ha; 11,686 ± 3756 ha; 285,770 ± 15,510 ha; 581,386 ± 16,282 ha (each to the hectare).
    printed = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]
    for estimate, (area, half_width) in zip(example.area_proportion, printed):
        in_ha = estimate.scaled(TOTAL_HA)
        assert same_digits(in_ha.value, area, 0)
        assert same_digits(in_ha.half_width, half_width, 0)
    # The paper's point: the map shows 18,000 ha of deforestation, the sample says some 3,000 ha more.
    assert PIXELS[0] * HA_PER_PIXEL == 18_000
    mapped, low = 18_000, example.area_proportion[0].scaled(TOTAL_HA).ci95[0]
    assert low < mapped  # ... though the mapped area is still inside the interval


def test_class_order_does_not_change_any_estimate(example):
    """mapaccuracy's example ends by reordering the classes (Nh[c(4,2,1,3)]): the estimates follow."""
    order = [3, 1, 0, 2]
    counts = np.array(COUNTS)[np.ix_(order, order)]
    reordered = stratified_estimates(counts, [PIXELS[i] for i in order], [CLASSES[i] for i in order])
    for new, old in enumerate(order):
        assert reordered.users[new] == pytest.approx(example.users[old])
        assert reordered.producers[new].value == pytest.approx(example.producers[old].value)
        assert reordered.producers[new].se == pytest.approx(example.producers[old].se)
        assert reordered.area_proportion[new].value == pytest.approx(example.area_proportion[old].value)
        assert reordered.area_proportion[new].se == pytest.approx(example.area_proportion[old].se)
    assert reordered.overall.value == pytest.approx(example.overall.value)
    assert reordered.overall.se == pytest.approx(example.overall.se)


def test_units_of_the_strata_sizes_do_not_matter(example):
    """Pixels, square metres (mapaccuracy's Nh * 30^2) or proportions: only the shares count."""
    for sizes in ([n * 900 for n in PIXELS], [0.020, 0.015, 0.320, 0.645]):
        other = stratified_estimates(COUNTS, sizes, CLASSES)
        assert other.overall.value == pytest.approx(example.overall.value)
        assert [a.se for a in other.area_proportion] == pytest.approx([a.se for a in example.area_proportion])


def test_the_estimators_run_on_a_stack_of_samples(example):
    """A leading axis of samples (the simulation's form) gives each sample's own estimates."""
    stack = np.stack([np.array(COUNTS), np.array(COUNTS) * 2])
    value, variance = overall_accuracy(stack, PIXELS)
    assert value == pytest.approx([example.overall.value] * 2)
    assert variance[1] < variance[0]  # twice the sample, less variance
    areas, _ = area_proportions(stack, PIXELS)
    assert areas.shape == (2, 4) and areas.sum(axis=-1) == pytest.approx([1.0, 1.0])
    u, _ = users_accuracy(stack)
    assert u.shape == (2, 4)


def test_a_class_without_a_sample_gets_null_estimates_and_a_warning():
    counts = [[30, 2, 0], [3, 40, 0], [0, 0, 0]]
    estimates = stratified_estimates(counts, [500, 400, 100], ["a", "b", "c"])
    assert estimates.users[2] == Estimate(None, None)
    assert estimates.producers[2] == Estimate(None, None)
    assert estimates.area_proportion[2] == Estimate(None, None)
    assert estimates.assessed == (True, True, False)
    assert estimates.assessed_share == pytest.approx(0.9)
    (warning,) = estimates.warnings
    assert "class 'c' has no labelled sample point" in warning and "10.00 % of the map" in warning
    # The other classes' areas cover the assessed 90 % of the map.
    assert sum(a.value for a in estimates.area_proportion[:2]) == pytest.approx(1.0)
    assert estimates.overall.value == pytest.approx((500 * 30 / 32 + 400 * 40 / 43) / 900)


def test_a_stratum_of_one_point_has_no_variance():
    estimates = stratified_estimates([[1, 0], [2, 20]], [100, 900], ["a", "b"])
    assert estimates.users[0].value == 1.0 and estimates.users[0].se is None
    assert estimates.overall.value is not None and estimates.overall.se is None
    assert estimates.overall.ci95 is None
    assert any("single labelled point" in w for w in estimates.warnings)


def test_a_stratum_sampled_whole_has_no_sampling_error():
    """A class of one pixel, its one pixel labelled: a census, not a sample, so the standard errors that
    depend on it are 0 where a one-point sample's would be undefined."""
    counts = [[18, 2], [0, 1]]
    sampled = stratified_estimates(counts, [999, 1], ["a", "b"])
    whole = stratified_estimates(counts, [999, 1], ["a", "b"], census=[False, True])
    assert sampled.overall.se is None and any("single labelled point" in w for w in sampled.warnings)
    assert whole.overall.value == sampled.overall.value and whole.overall.se is not None
    assert whole.users[1].se == 0.0 and not any("single labelled point" in w for w in whole.warnings)
    # The census stratum adds nothing: the same as stratum a's term alone, W_a^2 U(1 - U) / (n_a - 1).
    w_a, u = 999 / 1000, 18 / 20
    assert whole.overall.se == pytest.approx(np.sqrt(w_a**2 * u * (1 - u) / 19))


def test_a_mapped_class_that_no_reference_point_has_has_no_producers_accuracy():
    none_found = stratified_estimates([[20, 0], [10, 0]], [300, 700], ["a", "b"])
    assert none_found.producers[1].value is None
    assert none_found.area_proportion[1].value == 0.0
    assert any("no labelled point has reference class 'b'" in w for w in none_found.warnings)
    many = stratified_estimates([[20, 0, 0], [10, 0, 0], [5, 0, 0]], [300, 600, 100], ["a", "b", "c"])
    assert [w for w in many.warnings if "no labelled point" in w] == [
        "no labelled point has reference class 'b', 'c' (2 classes): their producer's accuracies are "
        "undefined (null) and their estimated areas are 0."
    ]


def test_a_class_absent_from_the_map_can_still_have_area():
    """A reference class the map never shows: user's accuracy undefined, producer's 0, area estimated."""
    estimates = stratified_estimates([[18, 2, 0], [0, 20, 0], [0, 0, 0]], [500, 500, 0], ["a", "b", "c"])
    assert estimates.warnings == ()
    assert estimates.users[2].value is None
    estimates = stratified_estimates([[18, 0, 2], [0, 20, 0], [0, 0, 0]], [500, 500, 0], ["a", "b", "c"])
    assert estimates.producers[2].value == 0.0
    assert estimates.area_proportion[2].value == pytest.approx(0.05)


@pytest.mark.parametrize(
    "counts, sizes, message",
    [
        ([[1, 0], [0, 1]], [1, 2, 3], "2x2|3x3"),
        ([[1, 0], [0, 1]], [0, 0], "not all zero"),
        ([[1, 0], [0, 1]], [0, 5], "holds no pixels but has sample points"),
        ([[0, 0], [0, 0]], [5, 5], "no stratum has a labelled point"),
    ],
)
def test_impossible_inputs_are_refused(counts, sizes, message):
    with pytest.raises(ValueError, match=message):
        stratified_estimates(counts, sizes)
