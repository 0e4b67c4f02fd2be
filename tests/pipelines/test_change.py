"""`terrabeam change` end to end: two dates predicted by one model and compared (post-classification),
one prediction by a two-date model (direct), two finished predictions compared (--maps), the demo's
two dates scored against their truth, and the bad inputs each stopped with the fix."""

from __future__ import annotations

import functools
import json

import keras
import numpy as np
import pytest
import rasterio

from pipelines import change
from tests.helpers.class_maps import write_prediction
from tests.helpers.dated import AFTER_SHIFT, CHANGE, change_model, write_later_date
from tests.helpers.models import export
from transforms.contracts.label_scheme import raster_categories

BANDS = ("red", "nir", "elevation")
STACK = tuple(f"{band}_{date}" for date in ("before", "after") for band in BANDS)
CHANGED = (slice(120, 150), slice(30, 70))  # rows, columns whose red the later date raises
TILES = ["--tile-size=64", "--overlap=8"]


@pytest.fixture(scope="module")
def after(tiny_scene, tmp_path_factory) -> str:
    return write_later_date(tiny_scene, tmp_path_factory.mktemp("after"), changed=CHANGED)[0]


@pytest.fixture(scope="module")
def bright_red_model(tiny_scene, tmp_path_factory) -> str:
    """A one-date model: class "bright" where red is above anything the first date holds plus the later
    date's shift, so only the changed block is bright on the later date."""
    threshold = float(tiny_scene.pixels[0].max()) + AFTER_SHIFT + CHANGE / 2
    model = change_model(list(BANDS), None, "red", threshold)
    folder = tmp_path_factory.mktemp("one-date") / "model"
    return export(model, folder, bands=BANDS, classes=["dim", "bright"])


def dates(scene, after_path: str) -> list[str]:
    return ["--inputs", f"2019={scene.image}", f"2023={after_path}"]


def test_post_classification_maps_the_changed_block(tiny_scene, after, bright_red_model, tmp_path, capsys):
    out = tmp_path / "change"
    argv = [f"--model={bright_red_model}", *dates(tiny_scene, after), f"--output={out}", *TILES]
    assert change.main(argv) == 0
    doc = json.loads((out / "change.json").read_text())
    block = np.zeros(tiny_scene.label_pixels.shape, bool)
    block[CHANGED] = True
    with rasterio.open(out / "changed.tif") as src:
        np.testing.assert_array_equal(src.read(1), block.astype(np.uint8))
    with rasterio.open(out / "transitions.tif") as src:
        names = raster_categories(str(out / "transitions.tif"))
        codes = src.read(1)
    assert {names[c] for c in np.unique(codes[block])} == {"dim_to_bright"}
    assert {names[c] for c in np.unique(codes[~block])} == {"unchanged"}
    with rasterio.open(out / "change_probability.tif") as src:
        p = src.read(1)
    assert p[block].min() > 0.9 and p[~block].max() < 0.1
    pixels = int(block.sum())  # 1,200 pixels of 10 m: 12 ha
    assert doc["changed"]["pixels"] == pixels and doc["changed"]["hectares"] == pytest.approx(12.0)
    assert doc["top_transitions"][0] == {
        **doc["top_transitions"][0],
        "from": "dim",
        "to": "bright",
        "pixels": pixels,
    }
    assert doc["dates"] == {"before": "2019", "after": "2023"}
    assert doc["method"] == "post-classification" and "truth" not in doc
    for date in ("2019", "2023"):
        prediction = json.loads((out / "dates" / date / "prediction.json").read_text())
        assert prediction["probabilities"] == "uint8"
    stdout = capsys.readouterr().out
    assert "Change 2019 -> 2023 (post-classification) written to" in stdout
    assert "12.0 ha changed" in stdout and "dim -> bright: 12.0 ha (1,200 pixels)" in stdout
    # Twice into the same folder needs --overwrite.
    assert change.main(argv) == 2
    assert "already holds a change (change.json); pass --overwrite" in capsys.readouterr().err


def test_direct_method_predicts_the_stack_once(tiny_scene, after, tmp_path):
    model = change_model(list(STACK), "red_before", "red_after", AFTER_SHIFT + CHANGE / 2)
    model_dir = export(model, tmp_path / "model", bands=STACK, classes=["same", "changed"])
    inputs = ["--inputs", f"before={tiny_scene.image}", f"after={after}"]
    doc = change.run(
        [f"--model={model_dir}", "--method=direct", *inputs, f"--output={tmp_path / 'out'}", *TILES]
    )
    areas = {c["class"]: c["pixels"] for c in doc["class_areas"]}
    assert areas == {"same": tiny_scene.label_pixels.size - 1200, "changed": 1200}
    with rasterio.open(tmp_path / "out" / doc["files"]["classes"]) as src:
        assert int((src.read(1) == 1).sum()) == 1200
    assert json.loads((tmp_path / "out" / "change.json").read_text())["method"] == "direct"


def test_maps_compares_two_finished_predictions(tmp_path, capsys):
    before = np.zeros((40, 50), np.uint8)
    after = before.copy()
    after[5:15, 10:30] = 3  # 200 pixels of water -> built
    a = write_prediction(tmp_path / "2019", before)
    b = write_prediction(tmp_path / "2023", after)
    out = tmp_path / "change"
    assert change.main(["--maps", a, b, f"--output={out}"]) == 0
    doc = json.loads((out / "change.json").read_text())
    assert doc["dates"] == {"before": "2019", "after": "2023"}
    assert doc["predictions"] == {"2019": a, "2023": b}
    assert doc["changed"]["pixels"] == 200 and doc["changed"]["hectares"] == pytest.approx(2.0)
    assert "change_probability" not in doc["files"]
    assert "water -> built: 2.0 ha (200 pixels)" in capsys.readouterr().out


def test_a_date_on_another_grid_is_read_onto_the_first_and_said_once(tmp_path, capsys):
    from rasterio.transform import from_origin

    before = np.zeros((40, 50), np.uint8)
    a = write_prediction(tmp_path / "a" / "2019", before)
    b = write_prediction(
        tmp_path / "b" / "2023", before, transform=from_origin(600_020.0, 5_120_000.0, 10, 10)
    )
    out = tmp_path / "change"
    assert change.main(["--maps", a, b, f"--output={out}"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "another grid" in line]
    assert len(notes) == 1 and notes[0].startswith("note: Date 2023 lies on another grid")
    doc = json.loads((out / "change.json").read_text())
    assert doc["reprojected"] in notes[0]
    assert doc["changed"]["pixels"] == 0


@pytest.fixture(scope="module")
def nearest_mean_demo(tmp_path_factory):
    """The demo scene at 256 pixels and a minimum-distance classifier fitted on its first date (class
    means of the standardized bands, as a 1x1 convolution): a real, if simple, one-date model."""
    from pipelines.demo.scene import ensure_demo_scene
    from transforms.contracts.label_scheme import dynamic_world

    cache = tmp_path_factory.mktemp("demo-cache")
    scene = ensure_demo_scene(cache, size=256)
    with rasterio.open(scene.image) as src:
        image = np.moveaxis(src.read().astype(np.float64), 0, -1)
    with rasterio.open(scene.labels) as src:
        labels = src.read(1)
    scheme = dynamic_world()  # the demo scene's classes
    indices = scheme.remap(labels)
    flat, classes = image.reshape(-1, image.shape[-1]), indices.reshape(-1)
    mean, std = flat.mean(0), flat.std(0) + 1e-6
    z = (flat - mean) / std
    centroids = np.stack(
        [
            z[classes == k].mean(0) if (classes == k).any() else np.full(z.shape[1], 1e3)
            for k in range(scheme.num_classes)
        ]
    )
    inputs = keras.Input((None, None, image.shape[-1]), name="image")
    x = keras.layers.Normalization(mean=mean.tolist(), variance=(std**2).tolist())(inputs)
    conv = keras.layers.Conv2D(scheme.num_classes, 1)
    model = keras.Model(inputs, keras.layers.Softmax(name="probabilities")(conv(x)))
    # -|z - c|^2 / 2 = c.z - |c|^2 / 2 + (a term alike for every class)
    conv.set_weights(
        [centroids.T[None, None].astype(np.float32), (-(centroids**2).sum(1) / 2).astype(np.float32)]
    )
    folder = tmp_path_factory.mktemp("demo-model") / "out" / "demo" / "model"
    export(model, folder, bands=scene.bands, classes=scheme.names, crs=_crs(scene.image), scale=10.0)
    return cache, folder.parents[2], scene


def _crs(path: str) -> str:
    with rasterio.open(path) as src:
        return src.crs.to_string()


def test_the_demo_change_is_scored_against_the_scenes_truth(nearest_mean_demo, monkeypatch, tmp_path):
    """With no options: the demo scene's two dates, the demo model, the truth of what changed."""
    from pipelines.demo import scene as demo_scene

    cache, root, scene = nearest_mean_demo
    monkeypatch.chdir(root)  # the demo model sits at out/demo/model
    monkeypatch.setattr(
        demo_scene, "ensure_demo_scene", functools.partial(demo_scene.ensure_demo_scene, size=256)
    )
    doc = change.run([f"--demo-cache={cache}", *TILES])
    out = root / change.DEFAULT_OUTPUT
    with rasterio.open(out / "changed.tif") as src:
        mapped = src.read(1) == 1
    with rasterio.open(scene.labels) as a, rasterio.open(scene.labels_after) as b:
        true = a.read(1) != b.read(1)
    tp = int((mapped & true).sum())
    truth = doc["truth"]
    assert truth["change_pixels"]["true_positive"] == tp
    assert truth["f1"] == pytest.approx(2 * tp / (mapped.sum() + true.sum()), abs=1e-4)
    assert truth["true_changed_ha"] == pytest.approx(true.sum() / 100, abs=0.01)
    # The scene's changes are there to be found: the simple model finds most of them.
    assert truth["recall"] > 0.5
    assert {t["transition"] for t in truth["transitions"]} >= {"crops_to_built"}


@pytest.fixture(scope="module")
def two_band_after(tiny_scene, tmp_path_factory) -> str:
    """The later date without its elevation band."""
    path = tmp_path_factory.mktemp("two-band") / "after.tif"
    with rasterio.open(tiny_scene.image) as src:
        profile = {**src.profile, "count": 2}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(src.read([1, 2]))
            for i, name in enumerate(src.descriptions[:2], start=1):
                dst.set_band_description(i, name)
    return str(path)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("one date", "--inputs names 1 date(s) (2019); change compares two."),
        ("plain paths", "--inputs takes DATE=VALUE per date, e.g. --inputs 2019=a.tif 2023=b.tif"),
        ("different bands", "The dates hold different bands: date 2023 lacks elevation (it has red, nir)"),
        ("model bands missing", "The model needs bands red, swir on every date, but date 2019 lacks swir"),
        ("stacked model, per-date method", "it maps change directly. Pass --method direct"),
        ("one-date model, direct method", "--method direct needs a model trained on two-date stacks"),
        ("confidence out of range", "--min-confidence is a probability in (0, 1], got 1.5."),
        ("both sources", "--inputs (local files) and --ee-image (Earth Engine) name the dates twice"),
        ("maps and inputs", "--maps compares finished predictions; --inputs would predict: drop it."),
        ("model without dates", "with --model, name each date's imagery: --inputs DATE=PATH"),
    ],
)
def test_bad_input_is_stopped_with_the_fix(
    case, expected, tiny_scene, after, two_band_after, bright_red_model, tmp_path, capsys
):
    model = f"--model={bright_red_model}"
    two = dates(tiny_scene, after)
    if case == "model bands missing":
        model = f"--model={export(change_model(['red', 'swir'], None, 'red', 0.0), tmp_path / 'm', bands=['red', 'swir'], classes=['a', 'b'])}"
    if case == "stacked model, per-date method":
        stacked = change_model(list(STACK), "red_before", "red_after", 1.0)
        model = f"--model={export(stacked, tmp_path / 'm', bands=STACK, classes=['a', 'b'])}"
        two = ["--inputs", f"before={tiny_scene.image}", f"after={after}"]
    argv = {
        "one date": [model, "--inputs", f"2019={tiny_scene.image}"],
        "plain paths": [model, "--inputs", tiny_scene.image, after],
        "different bands": [model, "--inputs", f"2019={tiny_scene.image}", f"2023={two_band_after}"],
        "model bands missing": [model, *two],
        "stacked model, per-date method": [model, *two],
        "one-date model, direct method": [model, "--method=direct", *two],
        "confidence out of range": [model, *two, "--min-confidence=1.5"],
        "both sources": [model, *two, "--ee-image", "2019=s2-sr:2019", "2023=s2-sr:2023"],
        "maps and inputs": ["--maps", "a", "b", *two],
        "model without dates": [model],
    }[case]
    out = tmp_path / "out"
    assert change.main([*argv, f"--output={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and not (out / "dates").exists()
