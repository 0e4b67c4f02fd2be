"""The assessment of a labelled design: the documented example of the R package mapaccuracy run through
the same path as a labels file (points with a map and a reference class), and the reports."""

from __future__ import annotations

import dataclasses
import html
import json
import re

import pytest

from transforms.assessment.design import Design, DesignOptions, Exclusion, SamplePoint, Stratum
from transforms.assessment.reference import ReferenceLabels
from transforms.assessment.report import area_plot_svg, assess, html_page, markdown, population_line
from transforms.contracts.label_scheme import LabelClass, LabelScheme

# mapaccuracy 0.1.2, `olofsson` help page, "Example of table 8 in Olofsson et al. (2014)": the reference
# (r) and map (m) class of each of the 640 points, and Nh, the mapped area in square metres.
#   r <- c(rep(1,69), rep(2,56), rep(3,175), rep(4,340))
#   m <- c(rep(1,66), 3, rep(4,2), rep(2,55), 4, rep(1,5), rep(2,8),
#          rep(3,153), rep(4,9), rep(1,4), rep(2,12), rep(3,11), rep(4,313))
#   Nh <- c(200000, 150000, 3200000, 6450000) * 30^2   # Landsat pixel area = 30^2
R = [1] * 69 + [2] * 56 + [3] * 175 + [4] * 340
M = (
    [1] * 66 + [3] + [4] * 2 + [2] * 55 + [4] + [1] * 5 + [2] * 8
    + [3] * 153 + [4] * 9 + [1] * 4 + [2] * 12 + [3] * 11 + [4] * 313
)  # fmt: skip
NH_M2 = [n * 30**2 for n in (200_000, 150_000, 3_200_000, 6_450_000)]
CLASSES = ("deforestation", "forest_gain", "stable_forest", "stable_non_forest")
COLORS = ("#d62728", "#2ca02c", "#1a9850", "#d9d9d9")


def example_design() -> Design:
    scheme = LabelScheme(
        "olofsson-2014", tuple(LabelClass(n, (i + 1,), c) for i, (n, c) in enumerate(zip(CLASSES, COLORS)))
    )
    strata = tuple(
        Stratum(name, area // 900, area / 10_000, M.count(i + 1))
        for i, (name, area) in enumerate(zip(CLASSES, NH_M2))
    )
    points = tuple(
        SamplePoint(number, CLASSES[m - 1], m, 0.0, 0.0, 0.0, 0.0, 0, 0, strata[m - 1].inclusion_weight)
        for number, m in enumerate(M, start=1)
    )
    return Design(
        map_path="olofsson-2014-example",
        band=1,
        crs="EPSG:32618",
        transform=(30.0, 0.0, 0.0, 0.0, -30.0, 0.0),
        width=1,
        height=1,
        nodata=None,
        scheme=scheme,
        area_method="Landsat pixels, 0.09 ha each",
        options=DesignOptions(0.01, (0.7, 0.6, 0.9, 0.95), 75, None, 0),
        formula_sample_size=641,
        strata=strata,
        nodata_pixels=0,
        unknown_values={},
        points=points,
    )


@pytest.fixture(scope="module")
def example():
    design = example_design()
    labels = ReferenceLabels(
        {number: r - 1 for number, r in enumerate(R, start=1)}, (), (), "mapaccuracy example"
    )
    return assess(design, labels)[1]


def test_mapaccuracys_documented_example_gives_the_papers_areas_in_hectares(example):
    # The help page compares e$area[j] * sum(Nh) / 10000 (hectares) and its 95 % half-width with the
    # right-hand side of p. 54 of the paper: 21,158 ± 6158, 11,686 ± 3756, 285,770 ± 15,510 and
    # 581,386 ± 16,282 ha.
    printed = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]
    assert example["total_area_ha"] == pytest.approx(900_000)
    for row, (area, half_width) in zip(example["per_class"], printed):
        estimate = row["area_ha"]
        assert round(estimate["estimate"]) == area
        assert round(estimate["ci95"][1] - estimate["estimate"]) == half_width
        assert estimate["ci95"][1] - estimate["estimate"] == pytest.approx(1.96 * estimate["se"])


def test_mapaccuracys_documented_example_gives_the_papers_accuracies(example):
    # ... and e$UA, e$PA, e$OA with the left-hand side of p. 54: user's 0.88, 0.73, 0.93, 0.96 (± 0.07,
    # 0.10, 0.04, 0.02), producer's 0.75, 0.85, 0.93, 0.96, overall 0.95 ± 0.02.
    users = [round(c["users_accuracy"]["estimate"], 2) for c in example["per_class"]]
    widths = [
        round(c["users_accuracy"]["ci95"][1] - c["users_accuracy"]["estimate"], 2)
        for c in example["per_class"]
    ]
    producers = [round(c["producers_accuracy"]["estimate"], 2) for c in example["per_class"]]
    assert users == [0.88, 0.73, 0.93, 0.96] and widths == [0.07, 0.10, 0.04, 0.02]
    assert producers == [0.75, 0.85, 0.93, 0.96]
    overall = example["overall_accuracy"]
    assert (
        round(overall["estimate"], 2) == 0.95 and round(overall["ci95"][1] - overall["estimate"], 2) == 0.02
    )
    assert example["error_matrix"]["counts"] == [
        [66, 0, 5, 4],
        [0, 55, 8, 12],
        [1, 0, 153, 11],
        [2, 1, 9, 313],
    ]


def test_the_assessment_json_is_plain_json_with_the_method_and_sample(example):
    doc = json.loads(json.dumps(example))
    assert doc["format"] == "terrabeam-assessment/1"
    assert doc["sample"] == {
        "design_points": 640,
        "labelled": 640,
        "missing": 0,
        "unknown": 0,
        "missing_ids": [],
        "unknown_ids": [],
    }
    assert "± 1.96 · SE" in doc["method"]["confidence_interval"]
    assert "Olofsson" in doc["method"]["citation"]
    assert doc["per_class"][0]["mapped"]["area_ha"] == pytest.approx(18_000)
    assert doc["per_class"][0]["n"] == doc["per_class"][0]["n_design"] == 75


def test_the_markdown_report_has_the_tables_and_says_how_it_was_measured(example):
    text = markdown(example)
    assert "**Overall accuracy: 0.947 ± 0.018** (n = 640)" in text
    assert "| deforestation | 75 | 18,000 | 21,158 ± 6,158 |" in text
    assert "640 labelled points of the design's 640" in text
    assert "estimate ± 1.96 · SE" in text and "Olofsson et al. (2014)" in text
    assert "| deforestation | 66 | 0 | 5 | 4 | 75 |" in text  # sample counts
    assert "| deforestation | 0.0176 | 0.0000 | 0.0013 | 0.0011 | 0.0200 |" in text  # Table 9's first row
    assert "| total | 0.0235 | 0.0130 | 0.3175 | 0.6460 | 1.0000 |" in text


def test_the_html_page_holds_the_plot_of_estimated_against_mapped_area(example):
    page = html_page(example)
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "</html>" in page
    svg = area_plot_svg(example)
    assert svg.count("<circle") == 4 + 1  # one estimate per class, and the legend's
    assert "estimated 21,158 ha, 95 % CI 15,000 to 27,315 ha" in svg
    assert "n = 640 labelled points" in svg and "1.96" in svg
    assert svg.count("<title>mapped") == 4  # a bar of mapped area per class
    assert len(re.findall(r"<line [^>]*stroke-width=\"2\"", svg)) == 4  # an interval per class


def test_a_class_without_labels_is_reported_not_estimated():
    design = example_design()
    # Every forest-gain point unlabelled.
    labels = {n: r - 1 for n, (r, m) in enumerate(zip(R, M), start=1) if m != 2}
    missing = tuple(n for n, m in enumerate(M, start=1) if m == 2)
    _, doc = assess(design, ReferenceLabels(labels, missing, (), "partial"))
    gain = doc["per_class"][1]
    assert gain["area_ha"]["estimate"] is None and gain["users_accuracy"]["estimate"] is None
    assert gain["n"] == 0 and gain["n_design"] == 75
    assert doc["sample"]["missing"] == 75
    assert doc["assessed_share"] == pytest.approx(1 - 0.015)
    assert any("'forest_gain' has no labelled sample point" in w for w in doc["warnings"])
    assert "not estimated" in area_plot_svg(doc)
    assert "The estimates describe 98.50 % of the mapped area" in markdown(doc)


def test_a_design_without_the_training_patches_says_which_population_the_estimates_describe(example):
    left_out = Exclusion("/data/demo", 12, 12, "test", (300, 0, 1_000, 700), (270.0, 0.0, 900.0, 630.0))
    design = dataclasses.replace(example_design(), exclusion=left_out)
    labels = ReferenceLabels({number: r - 1 for number, r in enumerate(R, start=1)}, (), (), "example")
    _, doc = assess(design, labels)
    # Same estimates: the strata are the population's; the report says what that population is.
    assert doc["overall_accuracy"] == example["overall_accuracy"]
    assert doc["population"]["patches"] == 12 and doc["population"]["area_ha"] == pytest.approx(1_800)
    line = (
        "Population: the map outside the 12 training patches: 900,000 ha of 901,800 ha (0.2 % of the "
        "mapped area left out; training data /data/demo)."
    )
    assert population_line(doc) == line
    assert f"- {line}" in markdown(doc) and html.escape(line) in html_page(doc)
    assert population_line(example) is None and "Population:" not in markdown(example)
