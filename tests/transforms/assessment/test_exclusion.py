"""Training patches left out of the population: a tiny map and a tiny extraction whose training patches
cover known rectangles; no point falls inside them, each stratum loses exactly its covered pixels, and
design.json records what was left out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyproj import Transformer

from tests.helpers.class_maps import CRS, ORIGIN, SCALE, write_map_and_truth
from tests.helpers.extractions import lonlat_of_pixel, write_extraction
from transforms.assessment import sampling
from transforms.assessment.design import make_design, read_design, write_design
from transforms.assessment.errors import AssessmentError
from transforms.assessment.exclusion import TrainingFootprints, training_footprints
from transforms.assessment.sampling import count_strata, open_class_map

PATCH = 8
# Centres (row, col) of the training patches: two that overlap, one in the no-prediction corner.
TRAIN = [(30, 20), (33, 24), (2, 2)]
VALIDATION = [(80, 60)]  # a validation patch is no training pixel: it stays in the population


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_map_and_truth(tmp_path_factory.mktemp("class-map"))


def centres(pixels):
    return [lonlat_of_pixel(row, col, CRS, ORIGIN, SCALE) for row, col in pixels]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    far_away = (100.0, 10.0)  # a training patch off the map: counted, but it leaves nothing out
    train = [*centres(TRAIN), far_away]
    return write_extraction(
        tmp_path_factory.mktemp("data"), {"train": train, "validation": centres(VALIDATION)}, patch_size=PATCH
    )


def covered(shape) -> np.ndarray:
    """The training patches' pixels: PATCH x PATCH around each centre, the centre at index PATCH // 2."""
    mask = np.zeros(shape, bool)
    for row, col in TRAIN:
        top, left = row - PATCH // 2, col - PATCH // 2
        mask[max(top, 0) : top + PATCH, max(left, 0) : left + PATCH] = True
    return mask


def test_the_training_patches_leave_the_population_and_no_point_falls_in_them(tiny, data):
    whole = count_strata(open_class_map(tiny.map))
    # Every pixel of the population drawn: the points are exactly the class pixels outside the patches.
    design = make_design(tiny.map, exclude_training=data, total=tiny.map_pixels.size, min_per_class=0)
    inside = covered(tiny.map_pixels.shape)
    classified = tiny.map_pixels < 4
    expected = {(int(r), int(c)) for r, c in zip(*np.nonzero(classified & ~inside))}
    assert {(p.row, p.col) for p in design.points} == expected
    # N_h drops by exactly the covered pixels of each class, and their area.
    left_out = [int(np.count_nonzero(inside & (tiny.map_pixels == k))) for k in range(4)]
    assert sum(left_out) > 0 and all(n > 0 for n in left_out[1:3])
    assert [s.pixels for s in design.strata] == [n - m for n, m in zip(whole.pixels, left_out)]
    exclusion = design.exclusion
    assert exclusion.pixels == tuple(left_out)
    assert exclusion.area_ha == pytest.approx([n * 0.01 for n in left_out])  # 10 m pixels
    assert exclusion.patches == 4 and exclusion.patches_on_map == 3
    assert [s.area_ha for s in design.strata] == pytest.approx(
        [(n - m) * 0.01 for n, m in zip(whole.pixels, left_out)]
    )
    # The no-prediction corner stays nodata: a patch over it leaves no mapped pixel out.
    assert design.nodata_pixels == whole.nodata_pixels


def test_a_sample_never_falls_in_a_training_patch_whatever_the_strips(tiny, data, monkeypatch):
    inside = covered(tiny.map_pixels.shape)
    design = make_design(tiny.map, exclude_training=data, total=3000, min_per_class=40, seed=5)
    assert len(design.points) == 3000
    assert not any(inside[p.row, p.col] for p in design.points)
    monkeypatch.setattr(sampling, "STRIP_PIXELS", 7 * 100)  # 7 rows at a time: patches cross strips
    assert make_design(tiny.map, exclude_training=data, total=3000, min_per_class=40, seed=5) == design


def test_design_json_records_what_was_left_out(tiny, data, tmp_path):
    design = make_design(tiny.map, exclude_training=data, min_per_class=20, seed=2)
    write_design(design, str(tmp_path))
    doc = json.loads((tmp_path / "design.json").read_text())
    exclusion = doc["exclusion"]
    population_ha = doc["total"]["area_ha"]
    assert exclusion["source"] == data and exclusion["split"] == "train"
    assert exclusion["patches"] == 4 and exclusion["patches_on_map"] == 3
    assert exclusion["pixels"] == sum(design.exclusion.pixels)
    assert exclusion["area_ha"] == pytest.approx(exclusion["pixels"] * 0.01)
    assert exclusion["mapped_area_ha"] == pytest.approx(population_ha + exclusion["area_ha"])
    assert exclusion["share_of_mapped_area"] == pytest.approx(
        exclusion["area_ha"] / exclusion["mapped_area_ha"]
    )
    assert exclusion["population"] == (
        f"the map outside the 4 training patches: {population_ha:,.2f} ha of {exclusion['mapped_area_ha']:,.2f} ha"
    )
    assert {name: c["pixels"] for name, c in exclusion["per_class"].items()} == dict(
        zip(design.classes, design.exclusion.pixels)
    )
    assert "inflate" in exclusion["why"]
    assert read_design(str(tmp_path)) == design


def test_without_the_option_nothing_changes(tiny, tmp_path):
    design = make_design(tiny.map, min_per_class=20, seed=2)
    assert design.exclusion is None
    write_design(design, str(tmp_path))
    assert "exclusion" not in json.loads((tmp_path / "design.json").read_text())
    assert count_strata(open_class_map(tiny.map)).excluded_pixels == ()


def test_patches_on_another_grid_are_left_out_by_their_bounding_box(tiny, tmp_path):
    """An extraction in Web Mercator: each patch, widened by one of its pixels, reprojected to the map;
    every map pixel whose centre lies in a patch is left out, and not much more."""
    size, scale = 6, 10.0  # Web Mercator metres: about 7 m on the ground here
    lonlat = centres([(60, 50)])
    data = write_extraction(
        tmp_path / "data", {"train": lonlat}, crs="EPSG:3857", scale=scale, patch_size=size
    )
    class_map = open_class_map(tiny.map)
    footprints = training_footprints(
        data, class_map.crs, class_map.transform, class_map.width, class_map.height
    )
    assert "bounding box in map pixels" in footprints.placement
    ((top, bottom, left, right),) = footprints.rects.tolist()
    # The map pixels whose centres lie in the patch wherever its lattice lies.
    to_mercator = Transformer.from_crs(CRS, "EPSG:3857", always_xy=True)
    cx, cy = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(*lonlat[0])
    rows, cols = np.mgrid[40:80, 30:70]
    xs, ys = to_mercator.transform(ORIGIN[0] + (cols + 0.5) * SCALE, ORIGIN[1] - (rows + 0.5) * SCALE)
    half = size // 2 - 1  # pixels on either side of the centre pixel that every placement holds
    surely = (np.abs(xs - cx) < (half + 0.5) * scale) & (np.abs(ys - cy) < (half + 0.5) * scale)
    assert surely.sum() > 4
    assert rows[surely].min() >= top and rows[surely].max() < bottom
    assert cols[surely].min() >= left and cols[surely].max() < right
    # The widened square is (size + 1) Mercator pixels wide, cos(latitude) times that on the ground (UTM
    # is true to scale within a part in a thousand here); its bounding box may touch one more map pixel
    # on either side.
    ground = (size + 1) * scale * np.cos(np.radians(lonlat[0][1]))
    assert bottom - top <= ground / SCALE + 2 and right - left <= ground / SCALE + 2
    design = make_design(tiny.map, exclude_training=data, total=tiny.map_pixels.size, min_per_class=0)
    assert not any(top <= p.row < bottom and left <= p.col < right for p in design.points)
    assert sum(design.exclusion.pixels) == int(np.count_nonzero(tiny.map_pixels[top:bottom, left:right] < 4))


def test_a_strip_marks_only_the_footprints_that_cross_it():
    footprints = TrainingFootprints("data", 2, 4, np.array([[2, 6, 1, 5], [10, 14, 0, 3]]), "test")
    assert footprints.strip_mask(6, 4, 8) is None  # rows 6-9: between the two
    mask = footprints.strip_mask(4, 8, 8)  # rows 4-11: the end of one, the start of the other
    expected = np.zeros((8, 8), bool)
    expected[0:2, 1:5] = True
    expected[6:8, 0:3] = True
    assert np.array_equal(mask, expected)


def test_bad_training_data_is_an_error_that_says_what_to_pass(tiny, tmp_path):
    with pytest.raises(
        AssessmentError, match=r"--exclude-training .*no manifest.json there; pass the folder"
    ):
        make_design(tiny.map, exclude_training=str(tmp_path))
    everything = write_extraction(
        tmp_path / "all",
        {"train": centres([(60, 50)])},
        patch_size=400,  # one patch over the whole map
    )
    with pytest.raises(AssessmentError, match="every mapped pixel .* lies in a training patch"):
        make_design(tiny.map, exclude_training=everything)
    bare = write_extraction(tmp_path / "bare", {"train": centres([(60, 50)])}, metadata=False)
    with pytest.raises(AssessmentError, match=r"record 1 of .*train/data.* has no lon/lat of its centre"):
        make_design(tiny.map, exclude_training=bare)
    damaged = write_extraction(tmp_path / "damaged", {"train": centres([(60, 50)] * 5)})
    (shard,) = (tmp_path / "damaged" / "train").iterdir()
    shard.write_bytes(shard.read_bytes()[:-30])
    with pytest.raises(AssessmentError, match=r"cannot read .*train/data.*; run the extraction again"):
        make_design(tiny.map, exclude_training=damaged)
