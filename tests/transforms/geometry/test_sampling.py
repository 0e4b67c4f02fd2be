"""Stratified sampling: balance, determinism, strata, bad regions."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from transforms.geometry.sampling import Region, RegionsError, choose_per_stratum, load_regions, sample_region


def test_balanced_per_class_and_deterministic(tiny_scene):
    region = load_regions(tiny_scene.regions)[0]  # "north": river (0) and classes 0, 1 in the north half
    points = sample_region(region, tiny_scene.labels, 15, seed=3)
    counts = collections.Counter(p.label for p in points)
    assert counts == {0: 15, 1: 15}
    assert points == sample_region(region, tiny_scene.labels, 15, seed=3)
    assert points != sample_region(region, tiny_scene.labels, 15, seed=4)
    assert len({p.id for p in points}) == len(points)


def test_points_lie_inside_the_region_on_the_labelled_class(tiny_scene):
    region = load_regions(tiny_scene.regions)[1]
    for p in sample_region(region, tiny_scene.labels, 20, seed=0):
        _, row, col = p.id.split("/")
        assert tiny_scene.label_pixels[int(row), int(col)] == p.label
        assert 40 <= int(col) < 160 and 100 <= int(row) < 160


def test_rare_class_gets_what_it_has():
    strata = np.zeros((10, 10), int)
    strata[0, :3] = 7
    chosen = choose_per_stratum(strata, np.ones((10, 10), bool), 5, np.random.default_rng(0))
    assert len(chosen[0]) == 5 and sorted(chosen[7]) == [0, 1, 2]


def test_strata_by_elevation_bins(tiny_scene):
    region = load_regions(tiny_scene.regions)[0]
    points = sample_region(
        region, tiny_scene.labels, 5, seed=0, strata_band=(tiny_scene.image, 3), strata_edges=(150.0, 250.0)
    )
    strata = collections.Counter(p.stratum for p in points)
    assert len(strata) > 2 and set(strata.values()) == {5}
    assert {s // 3 for s in strata} == {0, 1}


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid GeoJSON"),
        (json.dumps({"type": "FeatureCollection", "features": []}), "no polygons"),
        (json.dumps({"type": "Point", "coordinates": [0, 0]}), "Polygon or MultiPolygon"),
        (json.dumps([1, 2]), "not a GeoJSON object"),
    ],
)
def test_bad_regions_files(tmp_path, content, message):
    path = tmp_path / "r.geojson"
    path.write_text(content)
    with pytest.raises(RegionsError, match=message):
        load_regions(str(path))


def test_region_outside_raster_gives_no_points(tiny_scene):
    far = Region("far", {"type": "Polygon", "coordinates": [[[0, 0], [0.1, 0], [0.1, 0.1], [0, 0]]]})
    assert sample_region(far, tiny_scene.labels, 10, seed=0) == []
