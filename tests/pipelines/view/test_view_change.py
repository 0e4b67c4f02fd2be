"""The viewer on a change folder: both dates' layers and the transitions, the legend's areas against
change.json, tiles in the transitions' colours, a pixel's two dates and transition.

The change (tests/helpers/viewer_scene.py: `write_viewer_change`) is the viewer scene's prediction as
2019 and a 2023 in which the right half of the water quadrant became trees and the left half of the
flooded vegetation grass, compared by the real transforms.change. The page is tested in a browser in
test_view_browser.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import rasterio
from starlette.testclient import TestClient

from pipelines.view import cli
from pipelines.view.change import ChangeMap, open_map
from pipelines.view.maps import PredictionMap, ViewError
from tests.helpers.viewer_scene import (
    CHANGE_DATES,
    CHANGES,
    CLASSES,
    NODATA_ROWS,
    SIZE,
    write_viewer_change,
)
from tests.pipelines.view.test_view import get_tile, hex_rgb


def block_centre(scene, index: int) -> tuple[float, float]:
    """Lon/lat of the middle of a changed block (CHANGES[index])."""
    _, _, rows, cols = CHANGES[index]
    return scene.lonlat((rows.start + rows.stop) / 2 + 0.5, (cols.start + cols.stop) / 2 + 0.5)


@pytest.fixture(scope="module")
def change_client(viewer_change):
    with TestClient(cli.load(str(viewer_change))) as client:  # the command's own way in: change.json found
        yield client


@pytest.fixture(scope="module")
def change_doc(viewer_change):
    return json.loads((viewer_change / "change.json").read_text())


def test_a_change_folder_shows_both_dates_and_the_transitions(viewer_prediction, change_client):
    scene, _ = viewer_prediction
    info = change_client.get("/api/info").json()
    assert info["kind"] == "change" and info["method"] == "post-classification"
    before, after = CHANGE_DATES
    assert {role: d["label"] for role, d in info["dates"].items()} == {"before": before, "after": after}
    assert [layer["id"] for layer in info["layers"]] == [
        "before-imagery",
        "before-classes",
        "after-imagery",
        "after-classes",
        "transitions",
        "change-probability",
    ]
    assert [layer["date"] for layer in info["layers"]] == ["before"] * 2 + ["after"] * 2 + [None] * 2
    assert info["layers"][4]["title"] == f"Transitions {before} → {after}"
    assert info["dates"]["after"]["imagery"] == {"bands": ["B4", "B3", "B2"], "true_colour": True}
    assert info["change_probability"] and info["training"] and info["size"] == [SIZE, SIZE]
    assert [c["name"] for c in info["classes"]] == list(CLASSES)
    west, south, east, north = info["bounds"]
    for lon, lat in scene.quadrant_centres().values():
        assert west < lon < east and south < lat < north
    assert info["assessment"] is None


def test_the_legend_lists_the_transitions_with_change_jsons_hectares(change_client, change_doc):
    legend = change_client.get("/api/info").json()["transitions"]
    # Unchanged first, then the changes largest first: the top transitions, in their order.
    top = change_doc["top_transitions"]
    assert [e["name"] for e in legend] == ["unchanged", *(t["transition"] for t in top)]
    assert [t["transition"] for t in top] == ["water_to_trees", "flooded_vegetation_to_grass"]
    for entry, t in zip(legend[1:], top):
        assert entry["hectares"] == t["hectares"] and entry["pixels"] == t["pixels"]
        assert (entry["from"], entry["to"], entry["code"]) == (t["from"], t["to"], t["code"])
        assert entry["label"] == f"{t['from']} → {t['to']}"
    # Counted again from the scene: a 10 m pixel is 0.01 ha.
    for (before, after, rows, cols), entry in zip(CHANGES, legend[1:]):
        assert entry["name"] == f"{before}_to_{after}"
        assert entry["hectares"] == pytest.approx((rows.stop - rows.start) * (cols.stop - cols.start) * 0.01)
    matrix = np.array(change_doc["matrix"]["hectares"])
    assert legend[0]["hectares"] == pytest.approx(np.trace(matrix))
    assert legend[0]["pixels"] == SIZE * (SIZE - NODATA_ROWS) - sum(e["pixels"] for e in legend[1:])
    assert sum(e["hectares"] for e in legend) == pytest.approx(matrix.sum())
    # A transition is drawn in the colour of the class it turns into; unchanged pale.
    colours = {c["name"]: c["color"] for c in change_client.get("/api/info").json()["classes"]}
    assert legend[1]["color"] == colours["trees"] and legend[2]["color"] == colours["grass"]
    assert legend[0]["color"] == "#e8e8e8"


def test_transition_tiles_have_the_colours_of_the_transitions_raster(
    viewer_prediction, viewer_change, change_client
):
    scene, _ = viewer_prediction
    legend = {e["code"]: e for e in change_client.get("/api/info").json()["transitions"]}
    with rasterio.open(viewer_change / "transitions.tif") as src:
        table = src.colormap(1)
        codes = src.read(1)
    places = [block_centre(scene, 0), block_centre(scene, 1), scene.quadrant_centres()["trees"]]
    for zoom in (13, 16):
        for lon, lat in places:
            pixel = change_client.get("/api/pixel", params={"lon": lon, "lat": lat}).json()
            code = int(codes[pixel["row"], pixel["col"]])
            assert code == pixel["transition"]["code"]
            rgba = get_tile(change_client, "transitions", lon, lat, zoom)
            assert rgba == (*table[code][:3], 255) == (*hex_rgb(legend[code]["color"]), 255)
    assert {int(codes[r, c]) for r, c in [(64, 96), (200, 160), (64, 200)]} == {1, 12, 0}
    # Each date's class map is its own: water, then trees, in the first changed block.
    colours = {c["name"]: c["color"] for c in change_client.get("/api/info").json()["classes"]}
    lon, lat = block_centre(scene, 0)
    assert get_tile(change_client, "before-classes", lon, lat, 15)[:3] == hex_rgb(colours["water"])
    assert get_tile(change_client, "after-classes", lon, lat, 15)[:3] == hex_rgb(colours["trees"])
    assert get_tile(change_client, "after-imagery", lon, lat, 15)[3] == 255
    # Change probability (viridis): bright where the sure change is, dark where nothing changed.
    changed = get_tile(change_client, "change-probability", lon, lat, 15)
    unchanged = get_tile(change_client, "change-probability", *scene.quadrant_centres()["trees"], 15)
    assert changed[0] > 200 and changed[1] > 200 and unchanged[0] < 90
    # The strip without data is transparent.
    lon, lat = scene.lonlat(SIZE - NODATA_ROWS / 2, SIZE / 4)
    assert get_tile(change_client, "transitions", lon, lat, 15)[3] == 0
    for layer in ("before-elevation", "elevation", "before-", "after-probability-9"):
        assert change_client.get(f"/tiles/{layer}/15/0/0.png").status_code == 404


def test_a_pixel_reports_both_dates_and_its_transition(viewer_prediction, change_client):
    scene, _ = viewer_prediction
    pixel = change_client.get("/api/pixel", params=dict(zip(("lon", "lat"), block_centre(scene, 0)))).json()
    before, after = pixel["dates"]["before"], pixel["dates"]["after"]
    assert (before["label"], before["class"]["name"]) == ("2019", "water")
    assert (after["label"], after["class"]["name"]) == ("2023", "trees")
    assert pixel["transition"]["name"] == "water_to_trees" and pixel["transition"]["label"] == "water → trees"
    p_before = {p["name"]: p["p"] for p in before["probabilities"]}
    p_after = {p["name"]: p["p"] for p in after["probabilities"]}
    assert p_after["trees"] == pytest.approx(0.9, abs=0.01) and p_before["water"] > 0.9
    expected = 1 - sum(p_before[name] * p_after[name] for name in CLASSES)
    assert pixel["change_probability"] == pytest.approx(expected, abs=0.02)
    same = change_client.get(
        "/api/pixel", params=dict(zip(("lon", "lat"), scene.quadrant_centres()["grass"]))
    ).json()
    assert same["transition"]["name"] == "unchanged" and same["dates"]["after"]["class"]["name"] == "grass"
    lon, lat = scene.lonlat(SIZE - 2.5, 10.5)
    nodata = change_client.get("/api/pixel", params={"lon": lon, "lat": lat}).json()
    assert nodata["inside"] and nodata["transition"] is None and nodata["change_probability"] is None
    assert nodata["dates"]["before"]["class"] is None
    lon, lat = scene.lonlat(-10, 5)
    assert change_client.get("/api/pixel", params={"lon": lon, "lat": lat}).json()["inside"] is False


def test_uncertain_changes_have_their_own_legend_entry(viewer_prediction, tmp_path):
    scene, predictions = viewer_prediction
    folder = write_viewer_change(tmp_path / "change", scene, predictions, min_confidence=0.6)
    doc = json.loads((folder / "change.json").read_text())
    legend = ChangeMap(str(folder)).info()["transitions"]
    # The hesitant flooded vegetation -> grass change is uncertain, not a change.
    assert [e["name"] for e in legend] == ["unchanged", "water_to_trees", "uncertain"]
    assert legend[-1]["hectares"] == doc["uncertain"]["hectares"] == pytest.approx(71.68)
    assert legend[-1]["color"] == "#5a5a5a"
    assert sum(e["hectares"] for e in legend) == pytest.approx(np.array(doc["matrix"]["hectares"]).sum())


def test_an_assessment_beside_the_change_gives_each_transitions_estimated_area(assessed_change):
    info = ChangeMap(str(assessed_change)).info()
    doc = json.loads((assessed_change / "assessment" / "assessment.json").read_text())
    rows = {row["class"]: row for row in doc["per_class"]}
    assert info["assessment"]["overall_accuracy"] == doc["overall_accuracy"]["estimate"]
    assert info["assessment"]["labelled"] == doc["sample"]["labelled"] > 0
    for entry in info["transitions"]:
        row = rows[entry["name"]]
        assert entry["assessed"]["estimate_ha"] == row["area_ha"]["estimate"]
        assert entry["assessed"]["ci95_ha"] == row["area_ha"]["ci95"]
        assert entry["assessed"]["mapped_ha"] == pytest.approx(entry["hectares"])
    # The truth has a quarter of the water -> trees block unchanged: the estimate is below the map's.
    water_to_trees = next(e for e in info["transitions"] if e["name"] == "water_to_trees")
    assert water_to_trees["assessed"]["estimate_ha"] < water_to_trees["hectares"]


def test_each_dates_prediction_is_found_where_change_json_says_or_beside_it(
    viewer_change, tmp_path, monkeypatch
):
    moved = tmp_path / "elsewhere" / "change"
    shutil.copytree(viewer_change, moved)
    path = moved / "change.json"
    doc = json.loads(path.read_text())
    monkeypatch.chdir(tmp_path)
    # As given, relative to the working directory.
    doc["predictions"] = {label: f"elsewhere/change/dates/{label}" for label in CHANGE_DATES}
    path.write_text(json.dumps(doc))
    assert ChangeMap(str(moved)).dates["before"].folder == "elsewhere/change/dates/2019"
    # Relative to the change folder's parent, when it is not there as given.
    doc["predictions"] = {label: f"change/dates/{label}" for label in CHANGE_DATES}
    path.write_text(json.dumps(doc))
    assert ChangeMap(str(moved)).dates["after"].folder == str(moved.parent / "change" / "dates" / "2023")
    # Gone from where change.json says (the folder was moved): dates/<label> inside the change folder.
    doc["predictions"] = {label: str(tmp_path / "gone" / label) for label in CHANGE_DATES}
    path.write_text(json.dumps(doc))
    assert ChangeMap(str(moved)).dates["after"].folder == str(moved / "dates" / "2023")
    shutil.rmtree(moved / "dates" / "2023")
    with pytest.raises(ViewError, match=r"Date '2023'.*no prediction \(prediction.json\).*\"predictions\""):
        ChangeMap(str(moved))


def test_the_command_line_opens_a_change_and_a_direct_change_as_its_prediction(
    viewer_prediction, viewer_change, tmp_path, capsys
):
    _, predictions = viewer_prediction
    assert isinstance(open_map(str(viewer_change / "change.json")), ChangeMap)
    direct = tmp_path / "direct"
    direct.mkdir()
    (direct / "change.json").write_text(
        json.dumps(
            {
                "method": "direct",
                "dates": {"before": "a", "after": "b"},
                "predictions": {"direct": str(predictions)},
            }
        )
    )
    shown = open_map(str(direct))
    assert isinstance(shown, PredictionMap) and shown.folder == str(predictions)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "change.json").write_text(json.dumps({"method": "post-classification"}))
    assert cli.main([str(broken), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "change.json lacks" in err, err
