"""`terrabeam assess` end to end on a tiny class map whose truth is known: design -> labels (from the
truth raster, or a filled-in points.csv) -> estimate; its help, its errors, its quick start, and the
Earth Engine table export against the local fake."""

from __future__ import annotations

import csv
import json
import re
import shlex
import shutil

import ee
import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials

from benchmarks.region_holdout import SCHEME
from pipelines import assess, cli
from pipelines.demo import scene as demo_scene
from pipelines.demo.scene import ensure_demo_scene
from tests.helpers.class_maps import CLASSES, CRS, ORIGIN, SCALE, write_class_map, write_map_and_truth
from tests.helpers.environment import ROOT, run_python
from tests.helpers.extractions import lonlat_of_pixel, write_extraction
from tests.helpers.fake_earthengine_tables import TABLE_EXPORT, FakeEarthEngineTables
from tests.helpers.scenes import shared_data
from transforms.contracts.label_scheme import PRESETS
from transforms.io.earthengine import client as earthengine

DEMO_CLASSES = PRESETS["dynamic-world"].names
DEMO_COLORS = PRESETS["dynamic-world"].colors


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
    assert out.index("--exclude-training DATA") < out.index("\nsample size and allocation:\n")
    assert cli.main(["assess", "estimate", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: terrabeam assess estimate")
    assert "\nreference labels (one of):\n" in out and "--reference-raster RASTER" in out
    assert "`demo`: the demo scene's truth labels" in " ".join(out.split())  # lines wrap


def test_the_command_starts_without_tensorflow_or_beam():
    code = (
        "import sys; from pipelines import assess; assess.main(['--help']); "
        "assert 'tensorflow' not in sys.modules and 'apache_beam' not in sys.modules, 'heavy import'"
    )
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m pipelines.assess" in done.stdout


# --- training patches left out, and the note that suggests it ----------------------------------------------

TRAIN_CENTRES = [(30, 20), (60, 70)]  # (row, col) of the training patches' centres on the tiny map
PATCH = 10


def training_mask(shape, centres, size) -> np.ndarray:
    """The pixels of size x size patches around `centres`, the centre pixel at index size // 2."""
    mask = np.zeros(shape, bool)
    for row, col in centres:
        top, left = row - size // 2, col - size // 2
        mask[max(top, 0) : top + size, max(left, 0) : left + size] = True
    return mask


@pytest.fixture(scope="module")
def training_data(scene, tmp_path_factory):
    train = [lonlat_of_pixel(r, c, CRS, ORIGIN, SCALE) for r, c in TRAIN_CENTRES]
    validation = [lonlat_of_pixel(100, 10, CRS, ORIGIN, SCALE)]
    folder = tmp_path_factory.mktemp("extraction") / "data"
    return write_extraction(folder, {"train": train, "validation": validation}, patch_size=PATCH)


def test_design_leaves_the_training_patches_out_and_the_report_says_so(
    scene, training_data, tmp_path, capsys
):
    folder = str(tmp_path / "design")
    argv = ["--output", folder, "--min-per-class", "30", "--exclude-training", training_data]
    status, out, err = run(capsys, "design", scene.map, *argv)
    assert status == 0, err
    inside = training_mask(scene.map_pixels.shape, TRAIN_CENTRES, PATCH) & (scene.map_pixels != 255)
    mapped_ha = np.count_nonzero(scene.map_pixels != 255) * 0.01
    left_ha = inside.sum() * 0.01
    assert (
        f"  population: the map outside the 2 training patches: {mapped_ha - left_ha:,.2f} ha of {mapped_ha:,.2f} ha\n"
        in out
    )
    assert (
        f"  left out: {inside.sum():,} pixels, {100 * left_ha / mapped_ha:.1f} % of the mapped area, inside the training patches of {training_data}\n"
        in out
    )
    assert "note:" not in err
    design = json.loads(open(f"{folder}/design.json").read())
    assert design["exclusion"]["pixels"] == inside.sum() and design["exclusion"]["source"] == training_data
    assert design["total"]["pixels"] == np.count_nonzero(scene.map_pixels != 255) - inside.sum()
    assert not any(inside[int(p["row"]), int(p["col"])] for p in read_points(f"{folder}/points.csv"))

    status, out, err = run(capsys, "estimate", folder, "--reference-raster", scene.truth)
    assert status == 0, err
    population = f"Population: the map outside the 2 training patches: {mapped_ha - left_ha:,.0f} ha of {mapped_ha:,.0f} ha"
    assert out.splitlines()[1].startswith(population)
    assert population in open(f"{folder}/assessment.md").read()
    assert json.loads(open(f"{folder}/assessment.json").read())["population"]["pixels"] == inside.sum()


def write_prediction_chain(root, model: str, data: str | None) -> str:
    """A prediction folder whose prediction.json names `model`, whose model.json names `data` (as
    pipelines/predict.py and model/train.py write them, reduced to the links)."""
    predictions = root / "predictions"
    predictions.mkdir(parents=True)
    write_map_and_truth(predictions)
    (predictions / "prediction.json").write_text(
        json.dumps({"model": model, "files": {"classes": "classes.tif"}})
    )
    model_dir = root / "model"
    model_dir.mkdir(exist_ok=True)
    training = {"data": data, "patches": 2} if data is not None else None
    (model_dir / "model.json").write_text(json.dumps({"format": "terrabeam-model/1", "training": training}))
    return str(predictions)


def test_a_prediction_whose_training_data_is_at_hand_gets_a_note(
    training_data, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the paths that prediction.json and model.json hold are relative here
    link = tmp_path / "out" / "data"
    link.parent.mkdir()
    link.symlink_to(training_data)
    predictions = write_prediction_chain(tmp_path / "out", "out/model", "out/data")
    status, out, err = run(capsys, "design", predictions, "--sample-size", "50", "--min-per-class", "5")
    assert status == 0, err
    note = (
        "note: the map's model out/model was trained on out/data, and points in its training patches inflate "
        "its accuracy; pass --exclude-training out/data to leave them out.\n"
    )
    assert err == note
    argv = ["--sample-size", "50", "--min-per-class", "5", "--overwrite", "--exclude-training", "out/data"]
    status, out, err = run(capsys, "design", predictions, *argv)
    assert status == 0 and "note:" not in err


@pytest.mark.parametrize(
    "model, data",
    [
        ("elsewhere/model", "out/data"),  # no model.json there
        ("out/model", None),  # model.json names no training data
        ("out/model", "out/missing"),  # the training data is not on this machine
        ("gs://bucket/model", "out/data"),  # not looked up remotely
    ],
)
def test_without_the_whole_chain_there_is_no_note(tmp_path, capsys, monkeypatch, model, data):
    monkeypatch.chdir(tmp_path)
    predictions = write_prediction_chain(tmp_path / "out", model, data)
    status, out, err = run(capsys, "design", predictions, "--sample-size", "50", "--min-per-class", "5")
    assert status == 0 and err == ""


def test_the_file_names_of_the_chain_are_those_the_jobs_write():
    from model import export
    from pipelines import predict
    from transforms.contracts import manifest

    assert assess.PREDICTION_JSON == predict.SUMMARY_NAME
    assert assess.MODEL_JSON == export.MODEL_JSON
    assert assess.MANIFEST_JSON == manifest.MANIFEST_NAME


# --- the demo: `make demo` ends with an assessment -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_demo_scene(tmp_path_factory):
    return ensure_demo_scene(tmp_path_factory.mktemp("demo-cache"), size=64, seed=0)


@pytest.fixture
def demo_preset(tiny_demo_scene, monkeypatch):
    """`--reference-raster demo` resolves to the tiny demo scene; returns the calls it received."""
    calls = []

    def ensure(cache_dir=None, size=2048, seed=0):
        calls.append((cache_dir, size, seed))
        return tiny_demo_scene

    monkeypatch.setattr(demo_scene, "ensure_demo_scene", ensure)
    return calls


def makefile_assess_commands(
    after: str = "pipelines.predict", target: str = "out/demo/predictions"
) -> list[list[str]]:
    """The arguments of the `pipelines.assess` lines of the Makefile's demo target that assess `target`,
    after the `after` job."""
    lines = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    commands = [line.strip() for line in lines]
    prefix = "$(PY) -m pipelines.assess "
    assess_lines = [i for i, c in enumerate(commands) if c.startswith(prefix) and f" {target}" in c]
    job_line = next(i for i, c in enumerate(commands) if c.startswith(f"$(PY) -m {after}"))
    assert len(assess_lines) == 2 and min(assess_lines) > job_line
    return [shlex.split(commands[i][len(prefix) :]) for i in assess_lines]


def test_the_demo_target_assesses_the_map_outside_the_training_patches(
    tiny_demo_scene, demo_preset, tmp_path, capsys, monkeypatch
):
    """The Makefile's two assess commands, as they are, on a tiny demo scene: a map of its truth with
    one pixel in ten wrong, and an extraction of two training patches."""
    import rasterio

    with rasterio.open(tiny_demo_scene.labels) as src:
        truth = src.read(1)
    rng = np.random.default_rng(0)
    mapped = truth.copy()
    wrong = rng.random(truth.shape) < 0.1
    mapped[wrong] = rng.integers(0, len(DEMO_CLASSES), size=int(wrong.sum()))
    monkeypatch.chdir(tmp_path)
    predictions = tmp_path / "out" / "demo" / "predictions"
    predictions.mkdir(parents=True)
    write_class_map(predictions / "classes.tif", mapped, DEMO_CLASSES, DEMO_COLORS)
    centres = [(20, 20), (40, 44)]
    train = [lonlat_of_pixel(r, c, CRS, ORIGIN, SCALE) for r, c in centres]
    write_extraction(tmp_path / "out" / "demo" / "data", {"train": train}, patch_size=16)

    design_argv, estimate_argv = makefile_assess_commands()
    assert design_argv[0] == "design" and estimate_argv[0] == "estimate"
    status, out, err = run(capsys, *design_argv)
    assert status == 0, err
    assert "population: the map outside the 2 training patches:" in out
    inside = training_mask(truth.shape, centres, 16)
    points = read_points("out/demo/predictions/assessment/points.csv")
    assert points and not any(inside[int(p["row"]), int(p["col"])] for p in points)

    status, out, err = run(capsys, *estimate_argv)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Reference raster 'demo': the demo scene's truth labels, {tiny_demo_scene.labels}."
    assert lines[1].startswith("Overall accuracy: 0.") and lines[2].startswith(
        "Population: the map outside the 2 training patches:"
    )
    assert demo_preset == [(None, 2048, 0)]  # the scene the demo jobs use, in their default cache
    doc = json.loads(open("out/demo/predictions/assessment/assessment.json").read())
    assert doc["reference"]["source"] == tiny_demo_scene.labels
    # About nine in ten of the population's pixels are mapped right (a random wrong class is right 1/9).
    assert (
        abs(doc["overall_accuracy"]["estimate"] - (1 - 0.1 * 8 / 9))
        < 4 * doc["overall_accuracy"]["se"] + 0.01
    )


def test_the_demo_target_assesses_the_change_against_the_true_transitions(
    tiny_demo_scene, demo_preset, tmp_path, capsys, monkeypatch
):
    """The Makefile's assessment of the change, as it is: two maps of the tiny demo scene's two dates,
    each its truth with one pixel in twenty wrong, compared by `terrabeam change --maps`; the estimate
    reads the true transitions of the scene's two dates."""
    import rasterio

    from pipelines import change
    from tests.helpers.class_maps import write_prediction

    rng = np.random.default_rng(1)
    maps = []
    for name, truth_path in (("before", tiny_demo_scene.labels), ("after", tiny_demo_scene.labels_after)):
        with rasterio.open(truth_path) as src:
            truth, transform = src.read(1), src.transform
        mapped = truth.copy()
        wrong = rng.random(truth.shape) < 0.05
        mapped[wrong] = rng.integers(0, len(DEMO_CLASSES), size=int(wrong.sum()))
        maps.append(truth != mapped)
        write_prediction(
            tmp_path / "maps" / name, mapped, names=DEMO_CLASSES, colors=DEMO_COLORS, transform=transform
        )
    monkeypatch.chdir(tmp_path)
    assert change.main(["--maps", "maps/before", "maps/after", "--output", "out/demo/change"]) == 0
    write_extraction(tmp_path / "out" / "demo" / "data", {"train": []}, patch_size=16)

    design_argv, estimate_argv = makefile_assess_commands("pipelines.change", "out/demo/change")
    status, out, err = run(capsys, *design_argv)
    assert status == 0, err
    status, out, err = run(capsys, *estimate_argv)
    assert status == 0, err
    true_transitions = tmp_path / "out" / "demo" / "change" / "assessment" / "true_transitions.tif"
    assert out.splitlines()[0] == (
        f"Reference raster 'demo': the demo scene's true transitions between its two dates, {true_transitions}."
    )
    doc = json.loads((true_transitions.parent / "assessment.json").read_text())
    # A pixel's transition is right where both dates' classes are (or, rarely, both wrong alike).
    right = 1 - (maps[0] | maps[1]).mean()
    assert abs(doc["overall_accuracy"]["estimate"] - right) < 4 * doc["overall_accuracy"]["se"] + 0.02


def test_a_file_named_demo_is_read_as_dot_slash_demo(scene, demo_preset, tmp_path, capsys, monkeypatch):
    folder = design_folder(tmp_path, scene, capsys, "--sample-size", "60", "--min-per-class", "5")
    monkeypatch.chdir(tmp_path)
    shutil.copy(scene.truth, tmp_path / "demo")
    status, out, err = run(capsys, "estimate", folder, "--reference-raster", "./demo")
    assert status == 0, err
    assert demo_preset == [] and not out.startswith("Reference raster 'demo'")
    assert json.loads(open(f"{folder}/assessment.json").read())["overall_accuracy"]["estimate"] < 1


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

NC_CLASSES = SCHEME  # GRASS landclass96's classes, as the region-holdout benchmark reads them


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


@pytest.mark.slow
def test_the_real_jobs_chain_gives_the_note_and_the_training_patches_are_left_out(
    viewer_prediction, tmp_path, capsys
):
    """prediction.json -> model.json -> the extraction, as the real jobs write them: the note names the
    training data; with it left out, no point lies in a training patch (cut as extraction cuts it, on the
    label raster's grid) and the population loses exactly the mapped pixels of those patches."""
    import rasterio
    from pyproj import Transformer

    from tests.helpers.records import read_all
    from tests.helpers.viewer_scene import CRS as SCENE_CRS
    from tests.helpers.viewer_scene import ORIGIN as SCENE_ORIGIN
    from tests.helpers.viewer_scene import SCALE as SCENE_SCALE
    from transforms.geometry.grid import GridSpec

    _, predictions = viewer_prediction
    data = str(predictions.parent / "data")
    argv = ["--sample-size", "300", "--min-per-class", "20"]
    status, _, err = run(capsys, "design", str(predictions), "--output", str(tmp_path / "a"), *argv)
    assert status == 0, err
    assert f"pass --exclude-training {data} to leave them out" in err and err.startswith("note: ")

    folder = str(tmp_path / "b")
    status, out, err = run(
        capsys, "design", str(predictions), "--output", folder, "--exclude-training", data, *argv
    )
    assert status == 0 and "note:" not in err, err
    train = [lonlat for split, *lonlat in read_all(predictions.parent / "data") if split == "train"]
    to_utm = Transformer.from_crs("EPSG:4326", SCENE_CRS, always_xy=True)
    lattice = GridSpec(SCENE_CRS, SCENE_SCALE, *SCENE_ORIGIN)
    patches = [lattice.patch_around(*to_utm.transform(lon, lat), 16).bounds for lon, lat in train]
    assert f"population: the map outside the {len(train)} training patches:" in out

    def in_a_patch(x, y):
        return any(left < x < right and bottom < y < top for left, bottom, right, top in patches)

    design = json.loads(open(f"{folder}/design.json").read())
    fields = design["points"]["fields"]
    xy = [(row[fields.index("x")], row[fields.index("y")]) for row in design["points"]["rows"]]
    assert len(xy) == 300 and not any(in_a_patch(x, y) for x, y in xy)
    with rasterio.open(str(predictions / "classes.vrt")) as src:
        classes, transform = src.read(1), src.transform
    rows, cols = np.nonzero(classes != 255)
    xs, ys = transform * (cols + 0.5, rows + 0.5)
    left_out = sum(in_a_patch(x, y) for x, y in zip(xs.tolist(), ys.tolist()))
    assert left_out > 0 and design["exclusion"]["pixels"] == left_out


def test_a_misspelt_option_gets_the_closest_one(capsys):
    assert assess.main(["design", "map.tif", "--seedd", "3"]) == 2
    assert "Unknown option(s): --seedd (did you mean --seed?)" in capsys.readouterr().err
    assert assess.main(["estimate", "design", "--label", "x.csv"]) == 2
    assert "(did you mean --labels?)" in capsys.readouterr().err
