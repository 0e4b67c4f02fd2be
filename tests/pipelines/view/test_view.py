"""The map viewer's server: tiles cut from the prediction's COGs, a pixel's values, the training data, the CLI.

The scene (tests/viewer_scene.py) is predicted by the real jobs into a known class map: four quadrants
and a strip of no data. What the browser shows is tested in test_view_browser.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import morecantile
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from pipelines.view import cli
from pipelines.view.maps import PredictionMap, ViewError, choose_rgb
from pipelines.view.server import create_app
from tests.helpers.environment import ROOT
from tests.helpers.viewer_scene import CLASSES, NODATA_ROWS, SIZE, predict_viewer_scene
from transforms.contracts.label_scheme import scheme_from_metadata
from transforms.contracts.manifest import read_manifest

TMS = morecantile.tms.get("WebMercatorQuad")


def tile_pixel(lon: float, lat: float, zoom: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """The Web Mercator tile (x, y, z) holding (lon, lat), and the pixel (column, row) inside it."""
    tile = TMS.tile(lon, lat, zoom)
    bounds = TMS.xy_bounds(tile)
    x, y = TMS.xy(lon, lat)
    col = int((x - bounds.left) / (bounds.right - bounds.left) * 256)
    row = int((bounds.top - y) / (bounds.top - bounds.bottom) * 256)
    return (tile.x, tile.y, zoom), (col, row)


def get_tile(client: TestClient, layer: str, lon: float, lat: float, zoom: int) -> tuple[int, int, int, int]:
    (x, y, z), (col, row) = tile_pixel(lon, lat, zoom)
    response = client.get(f"/tiles/{layer}/{z}/{x}/{y}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (256, 256)
    return image.convert("RGBA").getpixel((col, row))


def hex_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))


@pytest.fixture(scope="module")
def mosaic_prediction(tmp_path_factory):
    return predict_viewer_scene(tmp_path_factory.mktemp("viewer-mosaic"), mosaic=True)


@pytest.fixture(scope="module")
def client(viewer_prediction):
    _, predictions = viewer_prediction
    with TestClient(create_app(PredictionMap(str(predictions)))) as c:
        yield c


def test_info_lists_classes_with_colours_and_area_shares(viewer_prediction, client):
    scene, predictions = viewer_prediction
    info = client.get("/api/info").json()
    summary = json.loads((predictions / "prediction.json").read_text())
    scheme = scheme_from_metadata(summary)
    assert [c["name"] for c in info["classes"]] == list(CLASSES) == list(scheme.names)
    assert [c["color"] for c in info["classes"]] == list(scheme.colors)
    assert info["classes"][0]["color"] == "#419bdf"  # Dynamic World's water, not a palette guess
    valid = SIZE * (SIZE - NODATA_ROWS)
    shares = {c["name"]: c["share"] for c in info["classes"]}
    assert shares["water"] == pytest.approx((SIZE // 2) ** 2 / valid)
    assert shares["grass"] == pytest.approx((SIZE // 2) * (SIZE // 2 - NODATA_ROWS) / valid)
    west, south, east, north = info["bounds"]
    for lon, lat in scene.quadrant_centres().values():
        assert west < lon < east and south < lat < north
    assert info["imagery"] == {"bands": ["B4", "B3", "B2"], "true_colour": True}
    assert info["probabilities"] and info["training"] and info["size"] == [SIZE, SIZE]
    assert info["assessment"] is None and all(c["assessed"] is None for c in info["classes"])
    assert info["kind"] == "prediction"


@pytest.mark.parametrize("zoom", [13, 15, 17])
def test_class_tiles_have_the_class_colour_of_each_quadrant(viewer_prediction, client, zoom):
    scene, _ = viewer_prediction
    colours = {c["name"]: c["color"] for c in client.get("/api/info").json()["classes"]}
    for name, (lon, lat) in scene.quadrant_centres().items():
        assert get_tile(client, "classes", lon, lat, zoom) == (*hex_rgb(colours[name]), 255), name
    # The strip of no data is transparent, and so is the world around the map.
    lon, lat = scene.lonlat(SIZE - NODATA_ROWS / 2, SIZE / 4)
    assert get_tile(client, "classes", lon, lat, zoom)[3] == 0
    lon, lat = scene.lonlat(-40, -40)
    assert get_tile(client, "classes", lon, lat, zoom)[3] == 0


def test_a_mosaic_cog_shows_the_same_as_the_vrt_of_tiles(viewer_prediction, mosaic_prediction, client):
    scene, predictions = viewer_prediction
    _, mosaic = mosaic_prediction
    assert json.loads((predictions / "prediction.json").read_text())["files"]["classes"] == "classes.vrt"
    assert json.loads((mosaic / "prediction.json").read_text())["files"]["classes"] == "classes.tif"
    with TestClient(create_app(PredictionMap(str(mosaic)))) as mosaic_client:
        for lon, lat in scene.quadrant_centres().values():
            for zoom in (12, 16):
                for layer in ("classes", "probability-1", "imagery"):
                    assert get_tile(mosaic_client, layer, lon, lat, zoom) == get_tile(
                        client, layer, lon, lat, zoom
                    )


def test_a_prediction_in_cloud_storage_shows_the_same(viewer_prediction, client, tmp_path, monkeypatch):
    """gs://: prediction.json through Beam's FileSystems, rasters through GDAL's /vsigs/, both against a
    local Cloud Storage fake (tests/fake_gcs.py)."""
    from apache_beam.internal.gcp import auth

    from tests.helpers.fake_gcs import FakeGCS

    scene, predictions = viewer_prediction
    shutil.copytree(predictions, tmp_path / "gcs" / "bucket" / "maps")
    with FakeGCS(tmp_path / "gcs") as gcs:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)  # google-cloud-storage, under Beam
        monkeypatch.setenv("CPL_GS_ENDPOINT", gcs.url + "/")  # GDAL
        monkeypatch.setenv("GS_NO_SIGN_REQUEST", "YES")
        monkeypatch.setattr(auth, "get_service_credentials", lambda options: None)  # anonymous: no ADC here
        with TestClient(create_app(PredictionMap("gs://bucket/maps"))) as remote:
            info = remote.get("/api/info").json()
            assert (
                info["title"] == "gs://bucket/maps"
                and info["classes"] == client.get("/api/info").json()["classes"]
            )
            for lon, lat in scene.quadrant_centres().values():
                for layer in ("classes", "probability-0"):
                    assert get_tile(remote, layer, lon, lat, 15) == get_tile(client, layer, lon, lat, 15)
                params = {"lon": lon, "lat": lat}
                assert (
                    remote.get("/api/pixel", params=params).json()
                    == client.get("/api/pixel", params=params).json()
                )
    assert any(r.startswith("GET /bucket/maps/tiles/classes/") for r in gcs.requests)  # GDAL read the COGs
    assert any("/storage/v1/b/bucket/o/maps%2Fprediction.json" in r for r in gcs.requests)


def test_probability_tiles_are_bright_where_the_class_is_likely(viewer_prediction, client):
    scene, _ = viewer_prediction
    centres = scene.quadrant_centres()
    # viridis: yellow (high red and green) near 1, dark purple near 0
    trees = get_tile(client, "probability-1", *centres["trees"], 15)
    water = get_tile(client, "probability-1", *centres["water"], 15)
    assert trees[0] > 200 and trees[1] > 200 and trees[3] == 255
    assert water[0] < 90 and water[1] < 40 and water[3] == 255
    assert client.get("/tiles/probability-9/15/0/0.png").status_code == 404
    assert client.get("/tiles/elevation/15/0/0.png").status_code == 404


def test_imagery_is_true_colour_with_a_stretch(viewer_prediction, client):
    scene, _ = viewer_prediction
    centres = scene.quadrant_centres()
    water = get_tile(client, "imagery", *centres["water"], 15)
    trees = get_tile(client, "imagery", *centres["trees"], 15)
    assert water[2] > water[0] and water[3] == 255  # B2 (blue) above B4 (red) over water
    assert trees[1] > trees[0] and trees[1] > trees[2]  # B3 (green) the highest over trees
    # Every band 0 is no data: transparent.
    lon, lat = scene.lonlat(SIZE - NODATA_ROWS / 2, SIZE / 4)
    assert get_tile(client, "imagery", lon, lat, 15)[3] == 0


def test_pixel_reports_position_class_and_probabilities(viewer_prediction, client):
    scene, _ = viewer_prediction
    for name, (lon, lat) in scene.quadrant_centres().items():
        pixel = client.get("/api/pixel", params={"lon": lon, "lat": lat}).json()
        assert pixel["inside"] and pixel["class"]["name"] == name
        row, col = pixel["row"], pixel["col"]
        assert scene.labels_array[row, col] == CLASSES.index(name)
        probabilities = {p["name"]: p["p"] for p in pixel["probabilities"]}
        assert max(probabilities, key=probabilities.get) == name
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=0.01)
    lon, lat = scene.lonlat(SIZE - 2.5, 10.5)
    nodata = client.get("/api/pixel", params={"lon": lon, "lat": lat}).json()
    assert nodata["inside"] and (nodata["row"], nodata["col"]) == (SIZE - 3, 10)
    assert nodata["class"] is None and nodata["probabilities"] is None
    lon, lat = scene.lonlat(-10, 5)
    assert client.get("/api/pixel", params={"lon": lon, "lat": lat}).json()["inside"] is False
    assert client.get("/api/pixel", params={"lon": "east"}).status_code == 400


def test_training_regions_and_points_come_from_the_models_manifest(viewer_prediction, client):
    scene, predictions = viewer_prediction
    regions = client.get("/api/regions").json()
    assert regions == json.loads(Path(scene.regions).read_text())
    points = client.get("/api/points").json()
    model = json.loads((predictions.parent / "model" / "model.json").read_text())
    manifest = read_manifest(model["training"]["data"])
    assert len(points["features"]) == sum(s["patches"] for s in manifest["splits"].values())
    assert points["complete"] is True
    for feature in points["features"]:
        lon, lat = feature["geometry"]["coordinates"]
        pixel = client.get("/api/pixel", params={"lon": lon, "lat": lat}).json()
        # The point's class is its label patch's centre pixel: the label raster there.
        assert feature["properties"]["class"] == CLASSES[scene.labels_array[pixel["row"], pixel["col"]]]
        assert feature["properties"]["split"] in ("train", "validation")


def test_points_are_capped(viewer_prediction):
    _, predictions = viewer_prediction
    points = PredictionMap(str(predictions), max_points=3).points()
    assert len(points["features"]) == 3 and points["complete"] is False


def test_the_page_and_its_vendored_map_library_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "static/vendor/leaflet/leaflet.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing from the internet
    for path in ("static/viewer.js", "static/viewer.css", "static/vendor/leaflet/leaflet.js"):
        assert client.get("/" + path).status_code == 200
    assert client.get("/static/vendor/leaflet/images/layers.png").headers["content-type"] == "image/png"


def test_rgb_bands_are_chosen_from_the_model_bands():
    assert choose_rgb(["B1", "B2", "B3", "B4", "B8"]) == (("B4", "B3", "B2"), True)
    assert choose_rgb(["Red", "Green", "Blue", "nir"]) == (("Red", "Green", "Blue"), True)
    assert choose_rgb(["red", "nir", "elevation"]) == (("red", "nir", "elevation"), False)
    assert choose_rgb(["vv"]) == (("vv", "vv", "vv"), False)


def test_rgb_and_stretch_options(viewer_prediction):
    _, predictions = viewer_prediction
    prediction = PredictionMap(str(predictions), rgb=["B8", "B4", "B3"])
    assert prediction.imagery.bands == ("B8", "B4", "B3")
    with pytest.raises(ViewError, match="--rgb takes three band names"):
        PredictionMap(str(predictions), rgb=["B4", "B5", "B3"])
    low, high = PredictionMap(str(predictions), stretch=(0, 100)).stretch()[0]
    # B4: 300 (water, trees) .. 800 (grass, the left half), times a 0.9 (left) .. 1.1 (right) gradient
    assert low == pytest.approx(300 * 0.9, rel=0.01) and high == pytest.approx(800 * 1.0, rel=0.01)


def test_bad_input_stops_with_a_clear_message(viewer_prediction, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no out/demo/predictions here
    assert cli.main(["--no-browser"]) == 2
    assert "make demo" in capsys.readouterr().err
    assert cli.main([str(tmp_path), "--no-browser"]) == 2
    assert "prediction.json missing" in capsys.readouterr().err
    _, predictions = viewer_prediction
    for args, message in [
        (["--rgb", "B4,B3"], "--rgb takes three band names"),
        (["--stretch", "98,2"], "--stretch percentiles"),
        (["--basemap", "https://example.org/tiles.png"], "--basemap takes"),
        (["--manifest", str(tmp_path)], "--manifest"),
    ]:
        assert cli.main([str(predictions), "--no-browser", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert cli.main([str(predictions), "--no-browser", "--port", str(busy.getsockname()[1])]) == 2
        assert "pass another --port" in capsys.readouterr().err


def test_without_the_model_the_map_still_shows(viewer_prediction, tmp_path):
    """A prediction copied elsewhere (or a model gone): no training layers, and the page says why."""
    _, predictions = viewer_prediction
    copy = tmp_path / "copy"
    shutil.copytree(predictions, copy)
    summary = json.loads((copy / "prediction.json").read_text())
    summary["model"] = str(tmp_path / "gone")
    (copy / "prediction.json").write_text(json.dumps(summary))
    with TestClient(create_app(PredictionMap(str(copy)))) as client:
        info = client.get("/api/info").json()
        assert info["training"] is False and "--manifest" in info["training_note"]
        assert client.get("/api/points").status_code == 404
        assert info["classes"][1]["name"] == "trees"


def test_command_line_serves_the_map_and_prints_its_url(viewer_prediction):
    _, predictions = viewer_prediction
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.view", str(predictions), "--port", "0", "--no-browser"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith(f"Map of {predictions}: http://127.0.0.1:"), line + process.stderr.read()
        url = line.split(": ", 1)[1].split()[0]
        deadline = time.monotonic() + 30
        while True:
            try:
                info = httpx.get(url + "api/info", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert [c["name"] for c in info["classes"]] == list(CLASSES)
        assert httpx.get(url).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_installed_package_carries_the_page_and_leaflet(tmp_path):
    """package_data: a wheel built from setup.py holds the page, its script and the vendored Leaflet."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("terrabeam-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = ROOT / "pipelines" / "view" / "static"
    expected = {
        str(p.relative_to(ROOT)).replace(os.sep, "/")
        for p in static.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected and expected <= names, sorted(expected - names)
    assert "pipelines/view/static/vendor/leaflet/LICENSE" in names


def test_leaflet_is_vendored_with_its_licence():
    leaflet = ROOT / "pipelines" / "view" / "static" / "vendor" / "leaflet"
    assert "BSD 2-Clause" in (leaflet / "LICENSE").read_text()
    assert 't.version="1.9.4"' in (leaflet / "leaflet.js").read_text()
    assert "1.9.4" in (leaflet.parent / "README.md").read_text()


def test_class_tile_pixels_match_the_class_raster_at_native_resolution(viewer_prediction, client):
    """At a zoom finer than the 10 m pixels, every opaque tile pixel has its class raster pixel's colour."""
    scene, predictions = viewer_prediction
    info = client.get("/api/info").json()
    lut = {hex_rgb(c["color"]): c["index"] for c in info["classes"]}
    lon, lat = scene.quadrant_centres()["water"]
    (x, y, z), _ = tile_pixel(lon, lat, 17)
    image = np.asarray(
        Image.open(io.BytesIO(client.get(f"/tiles/classes/{z}/{x}/{y}.png").content)).convert("RGBA")
    )
    opaque = image[..., 3] == 255
    assert opaque.mean() > 0.5
    rows, cols = np.nonzero(opaque)
    pick = np.linspace(0, len(rows) - 1, 200).astype(int)
    for r, c in zip(rows[pick], cols[pick]):
        lon_px, lat_px = TMS.lnglat(*_pixel_xy(x, y, z, r, c))
        pixel = client.get("/api/pixel", params={"lon": lon_px, "lat": lat_px}).json()
        assert lut[tuple(image[r, c, :3])] == pixel["class"]["index"]


def _pixel_xy(x: int, y: int, z: int, row: int, col: int) -> tuple[float, float]:
    bounds = TMS.xy_bounds(morecantile.Tile(x, y, z))
    return (
        bounds.left + (col + 0.5) / 256 * (bounds.right - bounds.left),
        bounds.top - (row + 0.5) / 256 * (bounds.top - bounds.bottom),
    )


def test_the_legend_shows_estimated_areas_when_an_assessment_sits_beside_the_map(assessed_prediction):
    info = PredictionMap(str(assessed_prediction)).info()
    doc = json.loads((assessed_prediction / "assessment" / "assessment.json").read_text())
    assert info["assessment"]["overall_accuracy"] == doc["overall_accuracy"]["estimate"]
    assert info["assessment"]["labelled"] == doc["sample"]["labelled"] > 0
    assert info["assessment"]["population"] == "the whole map"
    for c, row in zip(info["classes"], doc["per_class"]):
        assert c["assessed"]["estimate_ha"] == row["area_ha"]["estimate"]
        assert c["assessed"]["ci95_ha"] == row["area_ha"]["ci95"]
        assert c["assessed"]["mapped_ha"] == row["mapped"]["area_ha"]
        assert c["share"] is not None  # the pixel share stays, beside the estimate


def test_an_assessment_of_another_scheme_is_not_shown(assessed_prediction, tmp_path):
    folder = tmp_path / "predictions"
    shutil.copytree(assessed_prediction, folder)
    path = folder / "assessment" / "assessment.json"
    doc = json.loads(path.read_text())
    doc["per_class"] = doc["per_class"][::-1]
    path.write_text(json.dumps(doc))
    info = PredictionMap(str(folder)).info()
    assert info["assessment"] is None and all(c["assessed"] is None for c in info["classes"])
