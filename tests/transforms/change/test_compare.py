"""Two prediction folders compared: the change rasters on the maps' grid, their classes, change.json's
numbers against counts made here from the arrays."""

import numpy as np
import pytest
import rasterio

from tests.helpers.class_maps import CLASSES, write_prediction
from transforms.change.compare import compare, open_prediction
from transforms.change.transitions import ChangeError, TransitionScheme
from transforms.contracts.label_scheme import raster_categories


def one_hot(classes: np.ndarray, n: int, confidence: float) -> np.ndarray:
    p = np.full((*classes.shape, n), (1 - confidence) / (n - 1), np.float32)
    np.put_along_axis(p, np.minimum(classes, n - 1)[..., None].astype(np.int64), confidence, axis=-1)
    p[classes >= n] = np.nan  # no prediction, no probabilities
    return p


@pytest.fixture
def two_dates(tmp_path):
    rng = np.random.default_rng(0)
    before = rng.integers(0, 4, (70, 90)).astype(np.uint8)
    after = before.copy()
    after[10:30, 20:50] = 3  # built where there was anything: 600 pixels set, some already built
    after[50:60, 0:10] = np.where(before[50:60, 0:10] == 1, 2, before[50:60, 0:10])  # trees -> grass
    after[0, 0] = 255  # no prediction on one date
    sure = one_hot(before, 4, 0.9)
    unsure = one_hot(after, 4, 0.9)
    # the trees -> grass change is not sure: after, trees almost as likely as grass, so
    # P(change) = 1 - (0.9 * 0.45 + 3 * 0.1/3 * 0.55/3) ~ 0.56
    shift = (before[50:60, 0:10] == 1) & (after[50:60, 0:10] == 2)
    unsure[50:60, 0:10][shift] = [0.05 / 2, 0.45, 0.5, 0.05 / 2]
    return (
        write_prediction(tmp_path / "2019", before, sure),
        write_prediction(tmp_path / "2023", after, unsure),
        before,
        after,
    )


def test_the_change_rasters_hold_every_pixel_s_transition(tmp_path, two_dates):
    a, b, before, after = two_dates
    doc = compare(open_prediction("2019", a), open_prediction("2023", b), str(tmp_path / "out")).to_json()
    from transforms.change.compare import DatedMap  # noqa: F401 (the module's public types load)

    scheme = TransitionScheme(open_prediction("2019", a).scheme)
    with (
        rasterio.open(tmp_path / "out" / "transitions.tif") as src,
        rasterio.open(tmp_path / "2019" / "classes.tif") as ref,
    ):
        codes = src.read(1)
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
        assert src.tags(1)["label_scheme"] == "tiny-landcover-transitions"
        assert src.profile["tiled"] and src.overviews(1) is not None  # a COG
    valid = after != 255
    expected = np.full(before.shape, 255)
    for i in range(4):
        for j in range(4):
            expected[valid & (before == i) & (after == j)] = scheme.code(i, j)
    np.testing.assert_array_equal(codes, expected)
    with rasterio.open(tmp_path / "out" / "changed.tif") as src:
        np.testing.assert_array_equal(src.read(1), np.where(valid, before != after, 255))
    names = raster_categories(str(tmp_path / "out" / "transitions.tif"))
    assert names[scheme.code(1, 3)] == "trees_to_built"
    # change.json: counted again here from the arrays
    changed = int((valid & (before != after)).sum())
    assert doc["changed"]["pixels"] == changed and doc["nodata_pixels"] == 1
    assert doc["changed"]["hectares"] == pytest.approx(changed * 0.01)
    built = CLASSES.index("built")
    gain = int((valid & (before != built) & (after == built)).sum())
    assert doc["per_class"][built]["gain_ha"] == pytest.approx(gain * 0.01)
    assert doc["top_transitions"][0]["to"] == "built"
    with rasterio.open(tmp_path / "out" / "change_probability.tif") as src:
        p = src.read(1)
    # p = 1 - sum_k p1 p2: for confident, equal classes 1 - (0.81 + 3 * (0.1/3)**2) ~ 0.186
    assert p[valid & (before == after) & (np.arange(90) >= 50)].max() == pytest.approx(0.186, abs=0.01)
    assert np.isnan(p[0, 0])
    assert (tmp_path / "out" / "transitions.png").stat().st_size > 1000


def test_a_confidence_floor_makes_unsure_changes_uncertain(tmp_path, two_dates):
    a, b, before, after = two_dates
    doc = compare(
        open_prediction("2019", a), open_prediction("2023", b), str(tmp_path / "out"), 0.6
    ).to_json()
    unsure = int((before[50:60, 0:10] != after[50:60, 0:10]).sum())  # every change there is trees -> grass
    assert unsure > 0 and doc["uncertain"]["pixels"] == unsure
    with rasterio.open(tmp_path / "out" / "changed.tif") as src:
        assert (src.read(1)[50:60, 0:10] == 2).sum() == unsure


def test_a_map_on_another_grid_is_read_onto_the_first_and_disjoint_maps_are_refused(tmp_path):
    from rasterio.transform import from_origin

    from transforms.change.compare import check_comparable

    classes = np.zeros((20, 20), np.uint8)
    a = write_prediction(tmp_path / "a", classes)
    # One pixel (10 m) east: the after map's column c covers the before map's column c + 1.
    shifted = np.zeros((20, 20), np.uint8)
    shifted[:, 4] = 2
    b = write_prediction(tmp_path / "b", shifted, transform=from_origin(600_010.0, 5_120_000.0, 10, 10))
    before, after = open_prediction("a", a), open_prediction("b", b)
    _, note = check_comparable(before, after)
    assert note.startswith("Date b lies on another grid (EPSG:32632 20x20 pixels of 10 at 600010,5120000)")
    summary = compare(before, after, str(tmp_path / "out"))
    with rasterio.open(tmp_path / "out" / "changed.tif") as src:
        assert (src.width, src.height, src.transform.c) == (20, 20, 600_000.0)
        changed = src.read(1)
        expected = np.zeros((20, 20), np.uint8)
        expected[:, 5] = 1
        expected[:, 0] = src.nodata  # the after map does not cover the first column
        np.testing.assert_array_equal(changed, expected)
    assert summary.to_json()["changed"]["pixels"] == 20
    far = write_prediction(tmp_path / "far", classes, transform=from_origin(700_000.0, 5_120_000.0, 10, 10))
    with pytest.raises(ChangeError, match="do not overlap.*same place"):
        compare(before, open_prediction("far", far), str(tmp_path / "out"))
    c = write_prediction(tmp_path / "c", classes, names=("w", "t", "g", "b"))
    with pytest.raises(ChangeError, match="different classes"):
        compare(open_prediction("a", a), open_prediction("c", c), str(tmp_path / "out"))
    with pytest.raises(ChangeError, match="needs both dates' probabilities"):
        compare(open_prediction("a", a), open_prediction("a", a), str(tmp_path / "out"), 0.5)
    with pytest.raises(ChangeError, match="no readable prediction.json"):
        open_prediction("x", str(tmp_path))
