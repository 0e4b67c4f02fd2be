"""The design: strata counted on the class map, the sample drawn from it (stratified, without
replacement, deterministic for the seed), and the files it is written to."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from rasterio.transform import from_origin

from tests.helpers.class_maps import CLASSES, write_class_map, write_map_and_truth
from transforms.assessment import sampling
from transforms.assessment.design import make_design, points_csv, read_design, write_design
from transforms.assessment.errors import AssessmentError
from transforms.assessment.sampling import count_strata, draw_sample, open_class_map
from transforms.contracts.label_scheme import PRESETS


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_map_and_truth(tmp_path_factory.mktemp("class-map"))


def test_the_strata_are_the_map_classes_named_in_its_tags(tiny):
    class_map = open_class_map(tiny.map)
    assert class_map.scheme.names == CLASSES
    assert class_map.scheme.name == "tiny-landcover"  # the scheme the map's tags name
    assert class_map.scheme.colors[0] == "#419bdf"
    counts = count_strata(class_map)
    expected = [int(np.count_nonzero(tiny.map_pixels == k)) for k in range(4)]
    assert list(counts.pixels) == expected
    assert counts.area_m2 == pytest.approx([100.0 * n for n in expected])  # 10 m pixels
    assert counts.nodata_pixels == 64 and counts.unknown_values == {}


def test_counting_in_strips_gives_the_same_counts(tiny, monkeypatch):
    whole = count_strata(open_class_map(tiny.map))
    monkeypatch.setattr(sampling, "STRIP_PIXELS", 7 * 100)  # 7 rows at a time
    assert count_strata(open_class_map(tiny.map)) == whole


def test_the_draw_is_stratified_without_replacement_and_deterministic(tiny, monkeypatch):
    class_map = open_class_map(tiny.map)
    pixels = count_strata(class_map).pixels
    allocation = [30, 40, 50, 20]
    drawn = draw_sample(class_map, pixels, allocation, seed=7)
    assert len({(p.row, p.col) for p in drawn}) == sum(allocation)  # no pixel twice
    for p in drawn:
        assert tiny.map_pixels[p.row, p.col] == p.stratum == p.value
    assert [sum(p.stratum == h for p in drawn) for h in range(4)] == allocation
    assert drawn == draw_sample(class_map, pixels, allocation, seed=7)
    assert drawn != draw_sample(class_map, pixels, allocation, seed=8)
    # The block layout of the reads does not change the draw.
    monkeypatch.setattr(sampling, "STRIP_PIXELS", 3 * 100)
    assert draw_sample(class_map, pixels, allocation, seed=7) == drawn
    # Points are not listed class by class (a labeller working down the file is not led by the map).
    strata = [p.stratum for p in drawn]
    assert strata != sorted(strata)


def test_every_pixel_of_a_stratum_is_equally_likely(tmp_path):
    """400 draws of 5 of a stratum's 40 pixels: each pixel is drawn 50 times on average."""
    pixels = np.zeros((10, 10), np.uint8)
    pixels[2:6, :] = 1  # 40 pixels of class 1 (rows 2-5), 60 of class 0
    path = write_class_map(tmp_path / "map.tif", pixels, CLASSES[:2], ("#000000", "#ffffff"))
    class_map = open_class_map(path)
    hits = np.zeros((10, 10))
    for seed in range(400):
        for p in draw_sample(class_map, [60, 40], [0, 5], seed):
            hits[p.row, p.col] += 1
    assert hits[pixels == 0].sum() == 0
    counts = hits[pixels == 1]
    # Binomial(400, 1/8): mean 50, SD 6.6; all 40 within 4 SD.
    assert np.all(np.abs(counts - 50) < 26.5), counts


def test_a_design_records_the_options_strata_and_points(tiny, tmp_path):
    design = make_design(
        tiny.map, users_accuracy={"built": 0.6}, default_users_accuracy=0.9, min_per_class=40, seed=3
    )
    assert design.options.anticipated_users_accuracy == (0.9, 0.9, 0.9, 0.6)
    assert [s.n for s in design.strata] == [sum(p.stratum == c for p in design.points) for c in CLASSES]
    assert min(s.n for s in design.strata) >= 40
    assert sum(s.n for s in design.strata) == max(design.formula_sample_size, 160)
    for point in design.points:
        stratum = next(s for s in design.strata if s.name == point.stratum)
        assert point.weight == pytest.approx(stratum.pixels / stratum.n)
        # The pixel centre, in the map's CRS.
        assert point.x == pytest.approx(600_000 + 10 * point.col + 5)
        assert point.y == pytest.approx(5_120_000 - 10 * point.row - 5)
        assert 10.2 < point.lon < 10.4 and 46.2 < point.lat < 46.3
    assert design.total_area_ha == pytest.approx(sum(s.pixels for s in design.strata) * 0.01)

    paths = write_design(design, str(tmp_path / "design"))
    assert read_design(str(tmp_path / "design")) == design
    with open(paths["points.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [
        "id", "stratum", "map_class", "map_value", "lon", "lat", "x", "y", "row", "col", "weight", "reference",
    ]  # fmt: skip
    assert [int(r["id"]) for r in rows] == list(range(1, len(design.points) + 1))
    assert all(r["reference"] == "" and r["map_class"] == r["stratum"] for r in rows)
    geojson = json.loads(open(paths["points.geojson"]).read())
    feature = geojson["features"][0]
    assert feature["geometry"]["coordinates"] == pytest.approx([design.points[0].lon, design.points[0].lat])
    assert feature["properties"]["map_class"] == design.points[0].stratum
    doc = json.loads(open(paths["design.json"]).read())
    assert doc["options"]["seed"] == 3 and doc["label_scheme"]["classes"][3]["name"] == "built"
    assert doc["strata"][0]["area_ha"] == pytest.approx(design.strata[0].area_ha)
    assert doc["strata"][0]["inclusion_weight"] == pytest.approx(design.strata[0].pixels / design.strata[0].n)


def test_the_same_seed_gives_the_same_files(tiny, tmp_path):
    first = make_design(tiny.map, min_per_class=20, seed=11)
    again = make_design(tiny.map, min_per_class=20, seed=11)
    assert points_csv(first.points) == points_csv(again.points)
    assert first.to_json() == again.to_json()
    assert points_csv(make_design(tiny.map, min_per_class=20, seed=12).points) != points_csv(first.points)


def test_a_map_in_geographic_coordinates_has_its_area_per_row(tmp_path):
    pixels = np.zeros((50, 40), np.uint8)
    pixels[25:] = 1
    transform = from_origin(10.0, 60.0, 0.001, 0.001)  # about 56 m x 111 m at 60° N
    path = write_class_map(
        tmp_path / "ll.tif", pixels, CLASSES[:2], ("#000000", "#ffffff"), "EPSG:4326", transform
    )
    counts = count_strata(open_class_map(path))
    assert counts.pixels == (1000, 1000)
    # The northern half (class 0) lies at higher latitude: less area per pixel.
    assert counts.area_m2[0] < counts.area_m2[1]
    assert sum(counts.area_m2) == pytest.approx(40 * 0.001 * 50 * 0.001 * 6.18e9, rel=0.01)
    assert "ellipsoid" in counts.area_method


def test_a_map_without_class_names_needs_a_label_scheme(tmp_path):
    import rasterio

    pixels = np.array([[0, 1], [2, 3]], np.uint8)
    path = tmp_path / "plain.tif"
    profile = dict(driver="GTiff", width=2, height=2, count=1, dtype="uint8", crs="EPSG:32632")
    with rasterio.open(path, "w", transform=from_origin(0, 0, 10, 10), **profile) as dst:
        dst.write(pixels, 1)
    with pytest.raises(AssessmentError, match="does not name its classes.*--label-scheme"):
        open_class_map(str(path))
    assert open_class_map(str(path), scheme=PRESETS["dynamic-world"]).scheme.num_classes == 9
    counts = count_strata(open_class_map(str(path), scheme=PRESETS["worldcover"]))
    # WorldCover's codes are 10, 20, ...: 1, 2 and 3 are values no class lists (0 is ignored).
    assert (
        counts.pixels == (0,) * 11
        and counts.unknown_values == {1: 1, 2: 1, 3: 1}
        and counts.nodata_pixels == 1
    )
    with pytest.raises(AssessmentError, match="no pixel of any class"):
        make_design(str(path), scheme=PRESETS["worldcover"])


def test_bad_maps_and_options_are_refused(tiny, tmp_path):
    with pytest.raises(AssessmentError, match="--band 2: the map .* has 1 band"):
        open_class_map(tiny.map, band=2)
    with pytest.raises(AssessmentError, match="cannot open the map"):
        open_class_map(str(tmp_path / "missing.tif"))
    with pytest.raises(AssessmentError, match="--users-accuracy names 'forest'.*water, trees, grass, built"):
        make_design(tiny.map, users_accuracy={"forest": 0.7})
