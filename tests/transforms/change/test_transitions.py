"""Transition codes, the binary change map, the change probability and the summary's arithmetic."""

import itertools

import numpy as np
import pytest

from transforms.change.summary import ChangeTally, summarise
from transforms.change.transitions import (
    CHANGE_NODATA,
    ChangeError,
    TransitionScheme,
    change_probability,
    transition_codes,
)
from transforms.contracts.label_scheme import LabelClass, LabelScheme, dynamic_world


def scheme(n: int) -> LabelScheme:
    return LabelScheme("s", tuple(LabelClass(f"c{i}", (i,), "#000000") for i in range(n)))


@pytest.mark.parametrize("n", [2, 3, 9, 16])
def test_every_pair_has_its_own_code_and_decodes_back(n):
    t = TransitionScheme(scheme(n))
    codes = {t.code(i, j) for i, j in itertools.product(range(n), repeat=2) if i != j}
    assert codes == set(range(1, n * (n - 1) + 1))
    for i, j in itertools.product(range(n), repeat=2):
        assert t.pair(t.code(i, j)) == (None if i == j else (i, j))
    assert t.code(1, 1) == 0


def test_seventeen_classes_are_too_many_for_a_uint8_map():
    with pytest.raises(ChangeError, match="17 classes make 272 transitions"):
        TransitionScheme(scheme(17))


def test_the_transitions_are_a_label_scheme_named_by_their_pairs():
    t = TransitionScheme(dynamic_world(), with_uncertain=True)
    classes = t.label_scheme()
    assert classes.names[0] == "unchanged" and classes.names[-1] == "uncertain"
    trees, crops = dynamic_world().index("trees"), dynamic_world().index("crops")
    assert classes.names[t.code(trees, crops)] == "trees_to_crops"
    assert classes.colors[t.code(trees, crops)] == dynamic_world().colors[crops]
    assert classes.num_classes == 1 + 72 + 1


def test_codes_nodata_and_the_binary_map():
    t = TransitionScheme(scheme(3))
    before = np.array([[0, 1, 2, 255]], np.uint8)
    after = np.array([[0, 2, 0, 1]], np.uint8)
    codes, changed = transition_codes(t, before, after)
    assert codes.tolist() == [[0, t.code(1, 2), t.code(2, 0), CHANGE_NODATA]]
    assert changed.tolist() == [[0, 1, 1, CHANGE_NODATA]]


def test_a_change_below_the_confidence_floor_is_uncertain():
    t = TransitionScheme(scheme(2), with_uncertain=True)
    before = np.array([[0, 0, 1]], np.uint8)
    after = np.array([[1, 1, 1]], np.uint8)
    probability = np.array([[0.9, 0.4, 0.1]], np.float32)
    codes, changed = transition_codes(t, before, after, probability, min_confidence=0.5)
    assert codes.tolist() == [[t.code(0, 1), t.uncertain_code, 0]]
    assert changed.tolist() == [[1, 2, 0]]


def test_change_probability_is_the_chance_two_draws_disagree():
    before = np.array([[[1.0, 0.0], [0.5, 0.5]]], np.float32)
    after = np.array([[[0.0, 1.0], [0.5, 0.5]]], np.float32)
    np.testing.assert_allclose(change_probability(before, after), [[1.0, 0.5]])
    with pytest.raises(ChangeError, match="same model"):
        change_probability(before, after[..., :1])


def test_summary_counts_gain_loss_net_and_ranks_the_transitions():
    t = TransitionScheme(scheme(3), with_uncertain=True)
    tally = ChangeTally.empty(3)
    before = np.array([[0, 0, 0, 1], [1, 2, 2, 255]], np.uint8)
    after = np.array([[0, 1, 1, 1], [2, 2, 0, 0]], np.uint8)
    uncertain = np.zeros(before.shape, bool)
    uncertain[1, 0] = True  # the 1 -> 2 change is not sure
    tally.add(before, after, np.array([100.0, 200.0]), uncertain)  # m² per pixel, per row
    doc = summarise(t, tally, "test areas", min_confidence=0.5).to_json()
    assert doc["nodata_pixels"] == 1 and doc["mapped_pixels"] == 7
    assert doc["matrix"]["pixels"] == [[1, 2, 0], [0, 1, 1], [1, 0, 1]]
    # hectares: row 0 pixels are 100 m² (0.01 ha), row 1 pixels 200 m² (0.02 ha)
    assert doc["matrix"]["hectares"][0][1] == pytest.approx(0.02)
    c0, c1, c2 = doc["per_class"]
    assert (c0["gain_ha"], c0["loss_ha"], c0["net_ha"]) == pytest.approx((0.02, 0.02, 0.0))
    assert (c1["gain_ha"], c1["loss_ha"]) == pytest.approx((0.02, 0.0))  # 1 -> 2 is uncertain
    assert (c2["gain_ha"], c2["loss_ha"]) == pytest.approx((0.0, 0.02))
    assert doc["changed"]["pixels"] == 3 and doc["uncertain"]["pixels"] == 1
    top = doc["top_transitions"]
    assert [(x["from"], x["to"], x["pixels"]) for x in top] == [("c0", "c1", 2), ("c2", "c0", 1)]
    assert top[0]["share_of_change"] == pytest.approx(0.5)


def test_scoring_against_truth_counts_change_pixels_and_areas(tmp_path):
    from tests.helpers.class_maps import write_class_map
    from transforms.change.scoring import score_change

    truth_a = np.zeros((10, 10), np.uint8)
    truth_b = truth_a.copy()
    truth_b[:4, :5] = 3  # 20 pixels water -> built, 0.2 ha
    map_a = truth_a.copy()
    map_b = truth_a.copy()
    map_b[:4, :4] = 3  # 16 found
    map_b[9, 9] = 2  # 1 false alarm: water -> grass
    paths = [
        write_class_map(tmp_path / f"{name}.tif", pixels)
        for name, pixels in (("ma", map_a), ("mb", map_b), ("ta", truth_a), ("tb", truth_b))
    ]
    score = score_change(*paths, ("water", "trees", "grass", "built"))
    assert score["change_pixels"] == {
        "true_positive": 16,
        "false_positive": 1,
        "false_negative": 4,
        "true_negative": 79,
    }
    assert score["precision"] == pytest.approx(16 / 17, abs=1e-4)
    assert score["recall"] == pytest.approx(0.8)
    assert score["f1"] == pytest.approx(2 * (16 / 17) * 0.8 / (16 / 17 + 0.8), abs=1e-4)
    built = next(t for t in score["transitions"] if t["transition"] == "water_to_built")
    assert (built["true_ha"], built["mapped_ha"], built["relative_error"]) == (0.2, 0.16, -0.2)
    grass = next(t for t in score["transitions"] if t["transition"] == "water_to_grass")
    assert grass["true_ha"] == 0 and grass["relative_error"] is None


def test_the_truths_transitions_are_written_as_a_transitions_map(tmp_path):
    """The reference an assessment of a change reads: the true transitions, named as transitions.tif's."""
    import rasterio

    from tests.helpers.class_maps import write_class_map
    from transforms.change.scoring import write_true_transitions
    from transforms.contracts.label_scheme import raster_categories

    scheme = LabelScheme(
        "three",
        (
            LabelClass("water", (10,), "#419bdf"),
            LabelClass("trees", (20,), "#397d49"),
            LabelClass("built", (50,), "#c4281b"),
        ),
    )
    before = np.array([[10, 20, 20], [50, 10, 0]], np.uint8)
    after = np.array([[10, 50, 20], [50, 20, 20]], np.uint8)
    a = write_class_map(tmp_path / "a.tif", before, nodata=0)
    b = write_class_map(tmp_path / "b.tif", after, nodata=0)
    path = write_true_transitions(a, b, scheme, str(tmp_path / "true.tif"))
    names = raster_categories(path)
    with rasterio.open(path) as src:
        codes = src.read(1)
    assert [[names.get(int(c), "nodata") for c in row] for row in codes] == [
        ["unchanged", "trees_to_built", "unchanged"],
        ["unchanged", "water_to_trees", "nodata"],
    ]
