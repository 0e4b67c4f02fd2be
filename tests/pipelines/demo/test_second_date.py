"""Tests of the demo scene's second date: its files, where its changes are and what they look like."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from pipelines.demo.scene import DemoScene, ensure_demo_scene
from transforms.contracts.classes import CLASS_NAMES, S2_BANDS, SPECTRA_MEAN, SPECTRA_STD
from transforms.contracts.label_scheme import PRESETS

SIZE = 512
KINDS = {"forest clearing", "lake level drop", "town growth", "field to grass", "field to crops"}


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> DemoScene:
    return ensure_demo_scene(tmp_path_factory.mktemp("cache"), size=SIZE, seed=0)


@pytest.fixture(scope="module")
def dates(scene) -> dict[str, np.ndarray]:
    """Both dates' spectra (13 bands, float64) and labels."""
    arrays = {}
    for key, path in (("before", scene.image), ("after", scene.image_after)):
        with rasterio.open(path) as src:
            arrays[key] = src.read(list(range(1, len(S2_BANDS) + 1))).astype(np.float64)
    for key, path in (("labels", scene.labels), ("labels_after", scene.labels_after)):
        with rasterio.open(path) as src:
            arrays[key] = src.read(1)
    return arrays


@pytest.fixture(scope="module")
def changes(scene) -> dict:
    return json.loads(pathlib.Path(scene.changes).read_text())


@pytest.fixture(scope="module")
def transform(scene) -> rasterio.Affine:
    with rasterio.open(scene.labels) as src:
        return src.transform


def _window(event: dict, transform: rasterio.Affine) -> tuple[slice, slice]:
    window = from_bounds(*event["bbox"], transform=transform).round_offsets().round_lengths()
    return window.toslices()


def _pair(dates: dict, event: dict) -> np.ndarray:
    """Pixels that went from the event's class to its new class (anywhere in the scene)."""
    source, target = CLASS_NAMES.index(event["from"]), CLASS_NAMES.index(event["to"])
    return (dates["labels"] == source) & (dates["labels_after"] == target)


def _events(changes: dict, name: str) -> list[dict]:
    return [event for event in changes["events"] if event["name"] == name]


def _gain(changes: dict) -> np.ndarray:
    return np.array([changes["after"]["gain"][band] for band in S2_BANDS])


def _distance_to(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Chessboard distance in pixels from each of `points` (row, col) to the nearest of `targets`."""
    return np.abs(points[:, None, :] - targets[None, :, :]).max(axis=2).min(axis=1)


def test_files_match_the_first_date(scene, changes):
    folder = pathlib.Path(scene.image).parent
    assert pathlib.Path(scene.image_after) == folder / "image_after.tif"
    assert pathlib.Path(scene.labels_after) == folder / "labels_after.tif"
    assert pathlib.Path(scene.changes) == folder / "changes.json"
    for first, second in ((scene.image, scene.image_after), (scene.labels, scene.labels_after)):
        with rasterio.open(first) as a, rasterio.open(second) as b:
            assert b.profile == a.profile
            assert b.descriptions == a.descriptions
            assert [b.tags(i) for i in b.indexes] == [a.tags(i) for i in a.indexes]
            if a.count == 1:
                assert b.colormap(1) == a.colormap(1)
            else:  # the elevation model does not change between acquisitions
                np.testing.assert_array_equal(b.read(b.count), a.read(a.count))
    manifest = json.loads((folder / "scene.json").read_text())
    assert {"image_after.tif", "labels_after.tif", "changes.json"} <= set(manifest["files"])
    assert changes["label_scheme"] == PRESETS["dynamic-world"].to_json()
    assert (changes["size"], changes["seed"]) == (SIZE, 0)
    assert (changes["crs"], changes["pixel_size"]) == ("EPSG:32632", 10.0)
    assert changes["before"] == {"image": "image.tif", "labels": "labels.tif"}
    assert (changes["after"]["image"], changes["after"]["labels"]) == ("image_after.tif", "labels_after.tif")


def test_labels_change_exactly_inside_the_events(dates, changes, transform):
    changed = dates["labels"] != dates["labels_after"]
    explained = np.zeros_like(changed)
    for event in changes["events"]:
        assert event["from"] != event["to"]
        assert event["hectares"] == pytest.approx(event["pixels"] / 100)  # 10 m pixels
        rows, cols = _window(event, transform)
        pair = _pair(dates, event)[rows, cols]
        assert pair.sum() >= event["pixels"] > 0
        # The box is tight: the event's pixels reach each of its sides.
        assert pair[0].any() and pair[-1].any() and pair[:, 0].any() and pair[:, -1].any()
        explained[rows, cols] |= pair
    np.testing.assert_array_equal(changed, explained)  # nothing changed outside the events
    assert changes["changed"]["pixels"] == changed.sum() == sum(e["pixels"] for e in changes["events"])


def test_pair_totals_equal_the_rasters(dates, changes):
    pairs = {(p["from"], p["to"]): p["pixels"] for p in changes["pairs"]}
    assert len(pairs) == len(changes["pairs"])
    for (source, target), pixels in pairs.items():
        event = {"from": source, "to": target}
        assert _pair(dates, event).sum() == pixels
        events = [e for e in changes["events"] if (e["from"], e["to"]) == (source, target)]
        assert sum(e["pixels"] for e in events) == pixels
    a, b = dates["labels"], dates["labels_after"]
    observed = {(CLASS_NAMES[i], CLASS_NAMES[j]) for i, j in zip(a[a != b], b[a != b], strict=True)}
    assert observed == set(pairs)


def test_every_kind_of_change_is_there(changes):
    assert {event["name"] for event in changes["events"]} == KINDS
    allowed = {
        "forest clearing": {("trees", "bare"), ("trees", "grass")},
        "lake level drop": {("water", "bare"), ("water", "flooded_vegetation")},
        "town growth": {("grass", "built"), ("crops", "built")},
        "field to grass": {("crops", "grass")},
        "field to crops": {("grass", "crops")},
    }
    for event in changes["events"]:
        assert (event["from"], event["to"]) in allowed[event["name"]], event


def test_clearing_is_compact_and_inside_a_forest_stand(dates, changes, transform):
    (event,) = _events(changes, "forest clearing")
    rows, cols = _window(event, transform)
    pair = _pair(dates, event)[rows, cols]
    assert pair.sum() == event["pixels"] >= 0.5 * pair.size
    # Forest all round it on the first date, with a margin.
    around = (slice(rows.start - 2, rows.stop + 2), slice(cols.start - 2, cols.stop + 2))
    assert (dates["labels"][around] == CLASS_NAMES.index("trees")).all()


def test_fields_change_whole(dates, changes, transform):
    for name in ("field to grass", "field to crops"):
        for event in _events(changes, name):
            rows, cols = _window(event, transform)
            pair = _pair(dates, event)[rows, cols]
            # A rotated rectangle (the field grid turns by up to 12 degrees) fills most of its box.
            assert pair.sum() >= 0.6 * pair.size
            assert (dates["labels_after"][rows, cols][pair] == CLASS_NAMES.index(event["to"])).all()


def test_town_grows_at_its_edge(dates, changes, transform):
    events = _events(changes, "town growth")
    built = np.argwhere(dates["labels"] == CLASS_NAMES.index("built"))
    grown = np.argwhere(np.logical_or.reduce([_pair(dates, e) for e in events]))
    # Every new built pixel is within three blocks of the old town (a block is 24 px at full detail, 9 px
    # here; the new blocks may leap a park or a stream), and the new blocks join it.
    gap = _distance_to(grown, built)
    assert gap.max() <= 3 * 24 * max(SIZE / 2048, 0.375)
    assert (gap == 1).any()


def test_lake_shrinks_from_its_shore(dates, changes, transform):
    events = _events(changes, "lake level drop")
    windows = [_window(e, transform) for e in events]
    rows = slice(min(w[0].start for w in windows) - 1, max(w[0].stop for w in windows) + 1)
    cols = slice(min(w[1].start for w in windows) - 1, max(w[1].stop for w in windows) + 1)
    water = CLASS_NAMES.index("water")
    land = np.argwhere(dates["labels"][rows, cols] != water)
    left = np.argwhere(dates["labels_after"][rows, cols] == water)
    assert len(left) > sum(e["pixels"] for e in events)  # lower, not gone
    # The ring laid bare is the lake's margin: nearer its old shore than the water that is left, and
    # the reeds that followed the water down lie nearer the old shore than the bare mud.
    depth = {}
    for event in events:
        where = np.argwhere(_pair(dates, event)[rows, cols])
        depth[event["to"]] = _distance_to(where, land)
    ring = np.concatenate(list(depth.values()))
    assert ring.mean() < _distance_to(left, land).mean()
    assert depth["flooded_vegetation"].mean() <= depth["bare"].mean()


def test_unchanged_pixels_are_close_but_not_identical(dates, changes):
    gain = _gain(changes)
    assert 0.02 <= abs(gain.mean() - 1) <= 0.055  # a few per cent: another acquisition
    same = dates["labels"] == dates["labels_after"]
    before, after = dates["before"][:, same], dates["after"][:, same]
    assert (before == after).all(axis=0).mean() < 0.001
    # Only the per-pixel noise differs once the gain is taken out: a quarter of the class spread, where
    # fresh object offsets would make it about half.
    spread = np.array([SPECTRA_STD[name] for name in CLASS_NAMES])[dates["labels"][same]].mean(axis=0)
    difference = np.abs(after / gain[:, None] - before).mean(axis=1) / spread
    assert (difference < 0.3).all(), difference
    assert (difference > 0.1).all(), difference
    ratio = np.median(after / np.maximum(before, 1), axis=1)
    bright = [i for i, band in enumerate(S2_BANDS) if band != "B10"]  # B10 is a few counts: rounding rules
    np.testing.assert_allclose(ratio[bright], gain[bright], rtol=0.01)


def test_second_date_class_means_are_the_real_ones(dates, changes):
    spectra = dates["after"] / _gain(changes)[:, None, None]
    for index, name in enumerate(CLASS_NAMES):
        mask = dates["labels_after"] == index
        if mask.sum() < 200:
            continue
        np.testing.assert_allclose(spectra[:, mask].mean(axis=1), SPECTRA_MEAN[name], rtol=0.2, err_msg=name)


def _log_likelihood(spectra: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Log-likelihood (up to a constant) of each column of `spectra` under a Gaussian fitted to `sample`."""
    mean, cov = sample.mean(axis=1), np.cov(sample) + np.eye(len(sample))  # + 1 count²: rounding
    inverse, (_, logdet) = np.linalg.inv(cov), np.linalg.slogdet(cov)
    d = spectra - mean[:, None]
    return -0.5 * (np.einsum("ij,ik,kj->j", d, inverse, d) + logdet)


@pytest.mark.parametrize("date", ["before", "after"])
def test_changed_pixels_have_their_class_spectra(dates, changes, date):
    # Each class's spectra, as the pixels that kept their class show them on that date, form a
    # distribution of their own (mean, spread, and how the bands move together). A changed pixel is
    # likelier under its class of that date than under its class of the other date. Grass, crops and
    # built share much of their mean spectrum, so comparing means alone would not tell them apart.
    labels = dates["labels"] if date == "before" else dates["labels_after"]
    kept = dates["labels"] == dates["labels_after"]
    for pair in changes["pairs"]:
        source, target = CLASS_NAMES.index(pair["from"]), CLASS_NAMES.index(pair["to"])
        own, other = (source, target) if date == "before" else (target, source)
        samples = {c: dates[date][:, kept & (labels == c)] for c in (own, other)}
        assert min(sample.shape[1] for sample in samples.values()) >= 50, pair
        changed = dates[date][:, _pair(dates, pair)]
        likelier = _log_likelihood(changed, samples[own]) > _log_likelihood(changed, samples[other])
        assert likelier.mean() >= 0.9, (pair, likelier.mean())
