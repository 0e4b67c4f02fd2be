"""`terrabeam assess` end to end on a tiny class map whose truth is known: design -> labels (from the
truth raster, or a filled-in points.csv) -> estimate; its help, its errors, its quick start, and the
Earth Engine table export against the local fake."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import ee
import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials

from pipelines import assess, cli
from tests.helpers.class_maps import CLASSES, write_map_and_truth
from tests.helpers.environment import ROOT, env
from tests.helpers.fake_earthengine_tables import TABLE_EXPORT, FakeEarthEngineTables
from tests.helpers.scenes import shared_data
from transforms.io.earthengine import client as earthengine


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_map_and_truth(tmp_path_factory.mktemp("assess") / "predictions")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = assess.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def design_folder(tmp_path, scene, capsys, *extra: str) -> str:
    folder = str(tmp_path / "design")
    status, out, err = run(capsys, "design", scene.map, "--output", folder, "--min-per-class", "30", *extra)
    assert status == 0, err
    return folder


def read_points(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_points(path: str, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_design_then_estimate_from_the_truth_raster(scene, tmp_path, capsys):
    folder = str(tmp_path / "design")
    status, out, err = run(
        capsys, "design", scene.map, "--output", folder, "--min-per-class", "30", "--seed", "4"
    )
    assert status == 0, err
    assert "Stratified random sample of" in out and "asks for 1600 (Olofsson et al. 2014, Eq. 13)" in out
    assert "not sampled: 64 nodata/ignored pixels" in out
    assert f"estimate {folder} --labels {folder}/points.csv" in out
    design = json.loads(open(f"{folder}/design.json").read())
    assert [s["class"] for s in design["strata"]] == list(CLASSES)
    assert sum(s["n"] for s in design["strata"]) == 1600 == len(read_points(f"{folder}/points.csv"))

    status, out, err = run(capsys, "estimate", folder, "--reference-raster", scene.truth)
    assert status == 0, err
    assert out.startswith("Overall accuracy: 0.")
    doc = json.loads(open(f"{folder}/assessment.json").read())
    assert doc["sample"]["labelled"] == 1600 and doc["sample"]["unknown"] == 0
    # The map's truth is known: every class's true area (on the mapped pixels) lies within a few SE.
    mapped = scene.map_pixels != 255
    for k, row in enumerate(doc["per_class"]):
        true_ha = np.count_nonzero(scene.truth_pixels[mapped] == k) * 0.01
        assert abs(row["area_ha"]["estimate"] - true_ha) < 4 * row["area_ha"]["se"], row["class"]
        assert row["mapped"]["area_ha"] == pytest.approx(np.count_nonzero(scene.map_pixels == k) * 0.01)
    # The labels read from the raster are kept in the points file's form.
    reference = read_points(f"{folder}/reference.csv")
    for row in reference[:50]:
        assert row["reference"] == CLASSES[scene.truth_pixels[int(row["row"]), int(row["col"])]]
    assert "<svg" in open(f"{folder}/assessment.html").read()
    assert "## Error matrix: sample counts" in open(f"{folder}/assessment.md").read()


def test_estimate_from_a_filled_in_points_file_counts_what_it_leaves_out(scene, tmp_path, capsys):
    folder = design_folder(tmp_path, scene, capsys, "--sample-size", "200")
    rows = read_points(f"{folder}/points.csv")
    for row in rows:
        number = int(row["id"])
        truth = CLASSES[scene.truth_pixels[int(row["row"]), int(row["col"])]]
        row["reference"] = "" if number % 25 == 0 else "unknown" if number % 25 == 1 else truth
    write_points(f"{folder}/points.csv", rows)
    status, out, err = run(capsys, "estimate", folder, "--labels", f"{folder}/points.csv")
    assert status == 0, err
    assert "n = 184 labelled points of 200; left out: 8 without a label, 8 unknown" in out
    doc = json.loads(open(f"{folder}/assessment.json").read())
    assert doc["sample"]["missing_ids"] == list(range(25, 201, 25))
    assert doc["sample"]["unknown_ids"] == list(range(1, 201, 25))
    assert "8 without a label and 8 labelled unknown were left out" in open(f"{folder}/assessment.md").read()


def test_a_class_with_no_labelled_point_is_a_warning_and_null_estimates(scene, tmp_path, capsys):
    folder = design_folder(tmp_path, scene, capsys, "--sample-size", "200")
    rows = read_points(f"{folder}/points.csv")
    for row in rows:
        truth = CLASSES[scene.truth_pixels[int(row["row"]), int(row["col"])]]
        row["reference"] = "" if row["stratum"] == "built" else truth
    write_points(f"{folder}/points.csv", rows)
    status, out, err = run(capsys, "estimate", folder, "--labels", f"{folder}/points.csv")
    assert status == 0
    assert "warning: class 'built' has no labelled sample point" in err
    built = json.loads(open(f"{folder}/assessment.json").read())["per_class"][3]
    assert built["users_accuracy"]["estimate"] is None and built["area_ha"]["estimate"] is None


def test_a_map_class_the_design_gave_no_point_is_a_warning_and_null_estimates(scene, tmp_path, capsys):
    # Without a minimum per class, 5 points in proportion leave water and built-up without a point.
    folder = str(tmp_path / "design")
    argv = ["--output", folder, "--min-per-class", "0", "--sample-size", "5"]
    assert run(capsys, "design", scene.map, *argv)[0] == 0
    status, out, err = run(capsys, "estimate", folder, "--reference-raster", scene.truth)
    assert status == 0
    assert "warning: class 'water' has no labelled sample point" in err
    assert "warning: class 'built' has no labelled sample point" in err
    doc = json.loads(open(f"{folder}/assessment.json").read())
    assert [c["n_design"] for c in doc["per_class"]] == [0, 2, 3, 0]
    assert doc["per_class"][0]["area_ha"]["estimate"] is None
    assert doc["assessed_share"] < 1


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("id", "5000", "point 5000 is not in the design"),
        ("stratum", "water_or_trees", "stratum 'water_or_trees' is not the design's"),
        ("lon", "0.5", "lon 0.5 is not the design's .* the point moved"),
        ("reference", "forest", "reference 'forest' is not a class of the label scheme"),
    ],
)
def test_a_labels_file_that_does_not_fit_the_design_is_an_error(
    scene, tmp_path, capsys, column, value, message
):
    folder = design_folder(tmp_path, scene, capsys, "--sample-size", "150")
    rows = read_points(f"{folder}/points.csv")
    for row in rows:
        row["reference"] = row["map_class"]
    rows[7][column] = value
    write_points(f"{tmp_path}/labels.csv", rows)
    status, out, err = run(capsys, "estimate", folder, "--labels", f"{tmp_path}/labels.csv")
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "line 9" in err
    assert re.search(message, err), err


def test_the_same_seed_draws_the_same_points_and_a_design_is_not_overwritten(scene, tmp_path, capsys):
    first = design_folder(tmp_path, scene, capsys, "--seed", "9", "--sample-size", "120")
    again = str(tmp_path / "again")
    assert (
        run(
            capsys,
            "design",
            scene.map,
            "--output",
            again,
            "--min-per-class",
            "30",
            "--seed",
            "9",
            "--sample-size",
            "120",
        )[0]
        == 0
    )
    for name in ("points.csv", "points.geojson"):
        assert open(f"{first}/{name}").read() == open(f"{again}/{name}").read()
    status, _, err = run(capsys, "design", scene.map, "--output", first)
    assert status == 2 and "already holds a design" in err and "--overwrite" in err


def test_a_prediction_folder_is_taken_for_its_class_map(scene, capsys):
    folder = scene.map.rsplit("/", 1)[0]
    status, out, err = run(capsys, "design", folder, "--sample-size", "60", "--min-per-class", "5")
    assert status == 0, err
    assert f"Written: {folder}/assessment/design.json" in out  # the design goes beside the map


@pytest.mark.parametrize(
    "argv, message",
    [
        (["design", "nowhere.tif"], "no class map at 'nowhere.tif'"),
        (["design", "MAP", "--users-accuracy", "high"], "--users-accuracy 'high': give a number"),
        (["design", "MAP", "--users-accuracy", "built=1.2"], "strictly between 0 and 1"),
        (["design", "MAP", "--users-accuracy", "forest=0.7"], "--users-accuracy names 'forest'"),
        (["design", "MAP", "--target-se", "0"], "--target-se 0.0 must be"),
        (["design", "MAP", "--label-scheme", "binary:"], "binary shortcut"),
        (
            ["design", "MAP", "--ee-table", "landcover-points"],
            "--ee-table 'landcover-points' is not an Earth Engine asset id",
        ),
        (["estimate", "nowhere"], "one of the arguments --labels --reference-raster is required"),
        (["estimate", "nowhere", "--labels", "x.csv"], "no assessment design at 'nowhere'"),
        ([], "name a step: design or estimate"),
    ],
)
def test_bad_input_is_one_error_line_that_says_what_to_do(scene, tmp_path, capsys, argv, message):
    argv = [scene.map if a == "MAP" else a for a in argv]
    argv += ["--output", str(tmp_path / "out")] if argv[:1] == ["design"] else []
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert message in err, err


def test_help_is_grouped_and_named_as_terrabeam_names_it(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert cli.main(["assess", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: terrabeam assess")
    assert "design" in out and "estimate" in out and "how it goes:" in out
    assert cli.main(["assess", "design", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: terrabeam assess design")
    titles = ["map:", "sample size and allocation:", "output:", "Earth Engine (optional):"]
    assert [out.index(f"\n{t}\n") for t in titles] == sorted(out.index(f"\n{t}\n") for t in titles)
    assert "(default: 0.01)" in out and "(default: 75)" in out and "(default: 0.8)" in out
    assert cli.main(["assess", "estimate", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: terrabeam assess estimate")
    assert "\nreference labels (one of):\n" in out and "--reference-raster RASTER" in out


def test_the_command_starts_without_tensorflow_or_beam():
    code = (
        "import sys; from pipelines import assess; assess.main(['--help']); "
        "assert 'tensorflow' not in sys.modules and 'apache_beam' not in sys.modules, 'heavy import'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "usage: python -m pipelines.assess" in done.stdout


# --- Earth Engine ---------------------------------------------------------------------------------------


@pytest.fixture
def fake(scene, monkeypatch):
    monkeypatch.setattr(ee.data, "get_persistent_credentials", lambda: AnonymousCredentials())
    with FakeEarthEngineTables([scene.map], scene.truth) as server:
        yield server
        assert not server.errors, server.errors
    earthengine._session = None  # the next test's fake listens elsewhere
    ee.Reset()


def test_the_points_go_to_an_earth_engine_table(scene, tmp_path, capsys, fake):
    asset = "projects/fake-project/assets/assessment-points"
    argv = ["--ee-table", asset, "--ee-endpoint", fake.url, "--sample-size", "40", "--min-per-class", "5"]
    status, out, err = run(capsys, "design", scene.map, "--output", str(tmp_path / "d"), *argv)
    assert status == 0, err
    assert f"writes the points to {asset}" in out and f'ee.FeatureCollection("{asset}")' in out
    (body,) = fake.table_exports
    assert body["assetExportOptions"]["earthEngineDestination"]["name"] == asset
    exported = json.dumps(body["expression"])
    points = read_points(str(tmp_path / "d" / "points.csv"))
    assert exported.count("Feature") >= len(points)
    assert points[0]["lon"][:8] in exported and "map_class" in exported and "reference" in exported
    assert [r.route for r in fake.requests if r.route == TABLE_EXPORT] == [TABLE_EXPORT]

    # The asset exists now: replacing it takes --overwrite.
    status, _, err = run(capsys, "design", scene.map, "--output", str(tmp_path / "e"), *argv)
    assert status == 1 and f"the Earth Engine asset {asset} exists; pass --overwrite" in err
    status, _, err = run(capsys, "design", scene.map, "--output", str(tmp_path / "e"), *argv, "--overwrite")
    assert status == 0, err
    assert len(fake.table_exports) == 2


def test_no_earth_engine_credentials_is_an_error_before_anything_is_drawn(
    scene, tmp_path, capsys, monkeypatch
):
    def refuse():
        raise ee.EEException("no credentials")

    monkeypatch.setattr(ee.data, "get_persistent_credentials", refuse)
    out = tmp_path / "d"
    status, _, err = run(
        capsys, "design", scene.map, "--output", str(out), "--ee-table", "projects/p-1234/assets/x"
    )
    assert status == 2 and err.startswith("error: No Google credentials for Earth Engine were found")
    assert not out.exists()


# --- real maps (../shared/data; skipped without it) -------------------------------------------------------

NC_CLASSES = {
    "name": "nc-landclass96",
    "classes": [
        {"name": name, "values": [value]}
        for value, name in enumerate(
            ("developed", "agriculture", "herbaceous", "shrubland", "forest", "water", "sediment"), start=1
        )
    ],
}


@pytest.mark.shared_data
def test_a_real_land_class_raster_assessed_against_itself_is_exact(tmp_path, capsys):
    """North Carolina's 7-class raster (float32 values 1-7, NC State Plane, 28.5 m pixels), with its
    classes file: as its own reference, every estimate is the mapped figure, with no uncertainty."""
    strata = str(shared_data("nc-landsat7", "strata.tif"))
    classes = tmp_path / "nc.json"
    classes.write_text(json.dumps(NC_CLASSES))
    folder = str(tmp_path / "nc")
    argv = ["--label-scheme", str(classes), "--output", folder, "--min-per-class", "30"]
    status, out, err = run(capsys, "design", strata, *argv)
    assert status == 0, err
    assert "every pixel |a·e − b·d| = 812.25 m²" in out  # 28.5 m x 28.5 m
    design = json.loads(open(f"{folder}/design.json").read())
    rare = [s["n"] for s in design["strata"] if s["class"] in ("agriculture", "water", "sediment")]
    assert rare == [30, 30, 30]
    assert run(capsys, "estimate", folder, "--reference-raster", strata)[0] == 0
    doc = json.loads(open(f"{folder}/assessment.json").read())
    assert doc["overall_accuracy"]["estimate"] == pytest.approx(1.0) and doc["overall_accuracy"]["se"] == 0.0
    for row in doc["per_class"]:
        assert row["area_ha"]["estimate"] == pytest.approx(row["mapped"]["area_ha"])
        assert row["mapped"]["area_ha"] == pytest.approx(row["mapped"]["pixels"] * 28.5**2 / 10_000)


@pytest.mark.shared_data
def test_a_real_map_in_geographic_coordinates_is_measured_on_the_ellipsoid(tmp_path, capsys):
    """Sen1Floods11's hand-labelled water mask (EPSG:4326, -1 no data): pixel areas per row add up to the
    geodesic area of the chip's footprint."""
    import rasterio
    from pyproj import Geod

    from transforms.assessment.areas import pixel_areas

    mask = str(shared_data("sen1floods11", "Spain_7370579_LabelHand.tif"))
    folder = str(tmp_path / "flood")
    argv = ["--label-scheme", "binary:water=1:ignore=-1", "--output", folder, "--users-accuracy", "0.9"]
    status, out, err = run(capsys, "design", mask, *argv)
    assert status == 0, err
    assert "on the WGS 84 ellipsoid" in out
    with rasterio.open(mask) as src:
        values, bounds, transform = src.read(1), src.bounds, src.transform
    left, bottom, right, top = bounds
    footprint, _ = Geod(ellps="WGS84").polygon_area_perimeter(
        [left, right, right, left, left], [top, top, bottom, bottom, top]
    )
    per_row = pixel_areas("EPSG:4326", tuple(transform)[:6], values.shape[0]).per_row
    assert per_row.sum() * values.shape[1] == pytest.approx(abs(footprint), rel=1e-5)
    design = json.loads(open(f"{folder}/design.json").read())
    water = design["strata"][1]
    assert water["pixels"] == int(np.count_nonzero(values == 1))
    expected_ha = (per_row[:, None] * (values == 1)).sum() / 10_000
    assert water["area_ha"] == pytest.approx(expected_ha, rel=1e-9)


@pytest.mark.slow
def test_the_output_folder_of_terrabeam_predict_is_assessed(viewer_prediction, tmp_path, capsys):
    """The real prediction jobs' class map (a VRT of tiled COGs naming its classes in its metadata),
    assessed against the scene's label raster: the quadrants are predicted exactly."""
    scene, predictions = viewer_prediction
    folder = str(tmp_path / "assessment")
    argv = ["--output", folder, "--sample-size", "200", "--min-per-class", "20"]
    status, out, err = run(capsys, "design", str(predictions), *argv)
    assert status == 0, err
    scheme = json.loads((predictions / "prediction.json").read_text())["label_scheme"]
    assert f"classes.vrt (label scheme {scheme['name']!r}" in out  # the scheme the class map names
    design = json.loads(open(f"{folder}/design.json").read())
    assert [s["class"] for s in design["strata"]][:4] == ["water", "trees", "grass", "flooded_vegetation"]
    assert run(capsys, "estimate", folder, "--reference-raster", scene.labels)[0] == 0
    doc = json.loads(open(f"{folder}/assessment.json").read())
    assert doc["sample"]["labelled"] == 200
    assert doc["overall_accuracy"]["estimate"] == pytest.approx(1.0)
