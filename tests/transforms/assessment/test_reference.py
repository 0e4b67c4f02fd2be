"""Reference labels: a filled-in points file checked against its design, or a reference raster read
at each point. Bad labels files are refused with what to change; unlabelled points are counted."""

from __future__ import annotations

import csv
import io
import json

import pytest
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

from tests.helpers.class_maps import CLASSES, write_class_map, write_map_and_truth
from transforms.assessment.design import make_design, points_csv, points_geojson
from transforms.assessment.errors import AssessmentError
from transforms.assessment.reference import class_of, labels_from_raster, read_labels
from transforms.contracts.label_scheme import PRESETS, LabelClass, LabelScheme


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_map_and_truth(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def design(tiny):
    return make_design(tiny.map, min_per_class=10, total=80, seed=5)


def truth_of(tiny, point) -> str:
    return CLASSES[tiny.truth_pixels[point.row, point.col]]


def labelled_csv(design, label, path, edit=None, delimiter=","):
    """The design's points.csv with `label(point)` in the reference column (and `edit(rows)` applied)."""
    rows = list(csv.DictReader(io.StringIO(points_csv(design.points))))
    for row, point in zip(rows, design.points):
        row["reference"] = label(point)
    if edit:
        rows = edit(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_a_reference_is_a_class_name_or_value_of_the_scheme():
    scheme = PRESETS["worldcover"]
    assert class_of("tree_cover", scheme) == 0
    assert class_of(" Tree_Cover ", scheme) == 0
    assert class_of("20", scheme) == 1  # WorldCover code 20: shrubland
    assert class_of("20.0", scheme) == 1
    for unknown in ("", "  ", "unknown", "?", "NA", "n/a", "None"):
        assert class_of(unknown, scheme) is None
    with pytest.raises(
        AssessmentError, match=r"reference 'forest' is not a class .*tree_cover=10, shrubland=20"
    ):
        class_of("forest", scheme)
    with pytest.raises(AssessmentError, match="reference '0' is not a class"):
        class_of("0", scheme)  # ignored by the scheme: no class


def test_a_filled_in_points_file_gives_the_labels_and_counts_the_rest(tiny, design, tmp_path):
    def label(point):
        if point.id % 10 == 0:
            return ""
        if point.id % 10 == 1:
            return "unknown"
        return truth_of(tiny, point) if point.id % 2 else str(CLASSES.index(truth_of(tiny, point)))

    labels = read_labels(labelled_csv(design, label, tmp_path / "labels.csv"), design)
    ids = [p.id for p in design.points]
    assert labels.missing == tuple(i for i in ids if i % 10 == 0)
    assert labels.unknown == tuple(i for i in ids if i % 10 == 1)
    for point in design.points:
        if point.id in labels.labels:
            assert CLASSES[labels.labels[point.id]] == truth_of(tiny, point)
    counts = labels.counts(design)
    assert counts.sum() == len(labels.labels) == 80 - 8 - 8


def test_a_file_of_some_of_the_points_leaves_the_others_missing(tiny, design, tmp_path):
    path = labelled_csv(
        design, lambda p: truth_of(tiny, p), tmp_path / "part.csv", edit=lambda rows: rows[:30]
    )
    labels = read_labels(path, design)
    assert len(labels.labels) == 30 and len(labels.missing) == 50


def test_a_semicolon_separated_file_from_a_spreadsheet_reads_too(tiny, design, tmp_path):
    path = labelled_csv(design, lambda p: truth_of(tiny, p), tmp_path / "excel.csv", delimiter=";")
    assert len(read_labels(path, design).labels) == 80


def test_a_labelled_geojson_reads_too(tiny, design, tmp_path):
    doc = points_geojson(design.points)
    for feature, point in zip(doc["features"], design.points):
        feature["properties"]["reference"] = truth_of(tiny, point)
    path = tmp_path / "labels.geojson"
    path.write_text(json.dumps(doc))
    assert len(read_labels(str(path), design).labels) == 80


def _set(column, value, index=3):
    def edit(rows):
        rows[index][column] = value
        return rows

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set("id", "999"), r"line 5: point 999 is not in the design \(80 points, ids 1-80\)"),
        (_set("id", "1"), "point 1 is labelled twice"),
        (_set("id", "four"), "id 'four' is not a point id"),
        (
            _set("stratum", "nonsense"),
            "stratum 'nonsense' is not the design's .* does not belong to this design",
        ),
        (_set("map_class", "nonsense"), "map_class 'nonsense' is not the design's"),
        (_set("row", "9999"), "row 9999 is not the design's .* the point moved"),
        (_set("x", "1.5"), "x 1.5 is not the design's"),
        (_set("lat", "0"), "lat 0 is not the design's"),
        (_set("reference", "forest"), r"line 5 \(point \d+\): reference 'forest' is not a class .*\(water=0"),
        (
            lambda rows: [{k: v for k, v in r.items() if k != "reference"} for r in rows],
            "no 'reference' column",
        ),
    ],
)
def test_a_labels_file_that_does_not_match_the_design_is_refused(tiny, design, tmp_path, edit, message):
    path = labelled_csv(design, lambda p: truth_of(tiny, p), tmp_path / "bad.csv", edit=edit)
    with pytest.raises(AssessmentError, match=message):
        read_labels(path, design)


def test_rounded_coordinates_are_still_the_design_s(tiny, design, tmp_path):
    def round_them(rows):
        for row in rows:
            row["lon"] = f"{float(row['lon']):.7f}"
            row["x"] = f"{float(row['x']) + 0.001:.3f}"
        return rows

    path = labelled_csv(design, lambda p: truth_of(tiny, p), tmp_path / "rounded.csv", edit=round_them)
    assert len(read_labels(path, design).labels) == 80


def test_labels_read_from_a_reference_raster_are_its_classes_at_the_points(tiny, design):
    labels = labels_from_raster(tiny.truth, design)
    assert labels.missing == () and labels.unknown == () and labels.notes == ()
    assert {i: CLASSES[c] for i, c in labels.labels.items()} == {
        p.id: truth_of(tiny, p) for p in design.points
    }


def test_a_reference_raster_in_another_crs_is_read_where_the_points_are(tiny, design, tmp_path):
    path = tmp_path / "truth-3857.tif"
    with rasterio.open(tiny.truth) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:3857", src.width, src.height, *src.bounds, resolution=2.0
        )
        profile = {
            **src.profile,
            "crs": "EPSG:3857",
            "transform": transform,
            "width": width,
            "height": height,
        }
        with rasterio.open(path, "w", **profile) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1), resampling=Resampling.nearest)
            dst.update_tags(1, **src.tags(1))
    labels = labels_from_raster(str(path), design)
    agree = sum(
        CLASSES[labels.labels[p.id]] == truth_of(tiny, p) for p in design.points if p.id in labels.labels
    )
    assert agree >= 0.95 * len(design.points)


def test_a_reference_raster_with_other_classes_needs_a_reference_scheme(tiny, design, tmp_path):
    names = ("tree_cover", "shrubland", "grassland", "built_up")
    other = write_class_map(tmp_path / "other.tif", tiny.truth_pixels, names)
    with pytest.raises(
        AssessmentError, match="class\\(es\\) 'tree_cover', .* label scheme .* --reference-scheme"
    ):
        labels_from_raster(other, design)
    # A scheme that names its values with the map's classes reads it.
    recode = LabelScheme("recode", tuple(LabelClass(n, (i,), "#000000") for i, n in enumerate(CLASSES)))
    labels = labels_from_raster(other, design, scheme=recode)
    assert {i: CLASSES[c] for i, c in labels.labels.items()} == {
        p.id: truth_of(tiny, p) for p in design.points
    }


def test_points_off_the_reference_raster_or_on_its_nodata_are_counted(tiny, design, tmp_path):
    part = tiny.truth_pixels[:60].copy()  # the northern half only
    part[:, :20] = 255  # and nodata in the west
    path = write_class_map(tmp_path / "half.tif", part)
    labels = labels_from_raster(path, design)
    north = [p for p in design.points if p.row < 60]
    assert len(labels.labels) == sum(p.col >= 20 for p in north)
    assert len(labels.unknown) == 80 - len(labels.labels)
    assert any("outside the reference raster" in n for n in labels.notes)
    assert any("nodata" in n for n in labels.notes)


def test_a_missing_labels_file_says_what_to_do(design, tmp_path):
    with pytest.raises(AssessmentError, match="no labels file .* fill in the 'reference' column"):
        read_labels(str(tmp_path / "nothing.csv"), design)
