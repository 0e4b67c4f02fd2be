"""The prediction job end to end on tiny rasters and tiny models: seams, georeferencing, outputs, errors.

Models are saved in the model-folder layout with `model.export.export_model`, the same code training
uses. A whole-image prediction is the reference: the scene is predicted in one call, after padding it
with the tiles' border of zeros (the fill a tile sees beyond the imagery), so that only tiling can make
the two differ.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import apache_beam as beam
import keras
import numpy as np
import pytest
import rasterio
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as transform_coords
from rio_cogeo.cogeo import cog_validate

from model.architecture import build_unet
from pipelines import predict
from pipelines.predict import PredictOptions, build_pipeline, main, run, validate
from tests.helpers.environment import run_python
from tests.helpers.models import CLASSES, conv_model, export, image_of
from tests.helpers.scenes import ORIGIN, utm_box_to_lonlat
from transforms.geometry.tta import predict_with_tta
from transforms.io.rasters import SourceError, TransientSourceError
from transforms.io.retry import RetryConfig

CONV_RECEPTIVE_FIELD = 5  # two 3×3 convolutions


def threshold_model(band: int, num_bands: int, threshold: float) -> keras.Model:
    """Class 1 where `band` exceeds `threshold`, else class 0: a 1×1 convolution with set weights."""
    inputs = keras.Input((None, None, num_bands), name="image")
    conv = keras.layers.Conv2D(2, 1)
    outputs = keras.layers.Softmax(name="probabilities")(conv(inputs))
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((1, 1, num_bands, 2), np.float32)
    kernel[0, 0, band, 1] = 1.0
    conv.set_weights([kernel, np.array([0.0, -threshold], np.float32)])
    return model


# A tile and the whole image go through convolution kernels picked for their shapes (and the CPU's
# vector width), whose sums may round differently: the two may differ by float32 rounding, no more.
ROUNDING = 1e-6


def assert_same_prediction(
    probabilities: np.ndarray, reference: np.ndarray, classes: np.ndarray | None = None
):
    """Probabilities equal up to rounding; classes equal wherever rounding cannot flip the argmax."""
    np.testing.assert_allclose(probabilities, reference, rtol=0, atol=ROUNDING)
    if classes is not None:
        top = np.sort(reference, axis=-1)[..., -2:]
        decided = top[..., 1] - top[..., 0] > 2 * ROUNDING
        assert decided.mean() > 0.99
        np.testing.assert_array_equal(classes[decided], reference.argmax(-1)[decided])


def whole_image_probabilities(model_dir: str, image: np.ndarray, border: int) -> np.ndarray:
    signature = tf.saved_model.load(f"{model_dir}/saved_model").signatures["serving_default"]
    padded = np.pad(image, ((border, border), (border, border), (0, 0)))
    out = signature(image=tf.constant(padded[None]))["probabilities"].numpy()[0]
    return out[border : border + image.shape[0], border : border + image.shape[1]]


def read(path: Path, band: int | None = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band) if band else np.moveaxis(src.read(), 0, -1)


# --- seams ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tile_size", "overlap"), [(64, 8), (48, 16), (100, 20), (45, 6)])
def test_tiled_prediction_equals_a_whole_image_prediction(
    tiny_scene, conv_model_dir, tmp_path, tile_size, overlap
):
    # 200 pixels is not a multiple of any of these steps (56, 32, 80, 39): edge tiles are partial.
    out = tmp_path / "out"
    summary = run(
        [
            f"--model={conv_model_dir}",
            "--inputs",
            tiny_scene.image,
            f"--tile-size={tile_size}",
            f"--overlap={overlap}",
            "--probabilities=float32",
            f"--output={out}",
        ]
    )
    assert (
        summary["tiles_written"] == summary["tiling"]["tiles"] == math.ceil(200 / (tile_size - overlap)) ** 2
    )
    image = image_of(tiny_scene)
    reference = whole_image_probabilities(conv_model_dir, image, overlap // 2)
    probabilities = read(out / "probabilities.vrt", None)
    assert_same_prediction(probabilities, reference, read(out / "classes.vrt"))
    # Away from the scene edge (where tiles see zeros beyond the imagery, a whole-image call sees each
    # layer's own padding) the prediction is also the plain whole-image one.
    plain = whole_image_probabilities(conv_model_dir, image, 0)
    m = CONV_RECEPTIVE_FIELD // 2
    assert_same_prediction(probabilities[m:-m, m:-m], plain[m:-m, m:-m])


@pytest.mark.slow
def test_unet_tiles_are_identical_to_the_whole_image_when_pooling_grids_align(tiny_scene, tmp_path, caplog):
    image = image_of(tiny_scene)
    flat = image.reshape(-1, 3)
    keras.utils.set_random_seed(0)
    unet = build_unet(3, len(CLASSES), mean=flat.mean(0).tolist(), variance=flat.var(0).tolist())
    model_dir = export(unet, tmp_path / "unet")
    assert json.loads((tmp_path / "unet" / "model.json").read_text())["receptive_field"] == 44
    for tile_size, overlap in [(128, 64), (96, 48)]:  # borders ≥ 22, steps and borders multiples of 4
        out = tmp_path / f"out{tile_size}"
        run([f"--model={model_dir}", "--inputs", tiny_scene.image, f"--tile-size={tile_size}"]
            + [f"--overlap={overlap}", "--probabilities=float32", f"--output={out}"])  # fmt: skip
        reference = whole_image_probabilities(model_dir, image, overlap // 2)
        assert_same_prediction(read(out / "probabilities.vrt", None), reference, read(out / "classes.vrt"))
    caplog.set_level(logging.WARNING)
    with pytest.raises(predict.UsageError, match="already holds"):  # (validation only: stop early)
        run([f"--model={model_dir}", "--inputs", tiny_scene.image, "--tile-size=100", "--overlap=46"]
            + [f"--output={out}"])  # fmt: skip
    assert "pools by 4" in caplog.text


def test_test_time_augmentation_averages_the_eight_symmetries_tile_by_tile(
    tiny_scene, conv_model_dir, tmp_path
):
    out = tmp_path / "out"
    run(
        [f"--model={conv_model_dir}", "--inputs", tiny_scene.image, "--tile-size=64", "--overlap=8"]
        + ["--probabilities=float32", "--tta", f"--output={out}"]
    )
    image = image_of(tiny_scene)
    signature = tf.saved_model.load(f"{conv_model_dir}/saved_model").signatures["serving_default"]
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))[None]
    reference = predict_with_tta(lambda x: signature(image=tf.constant(x))["probabilities"].numpy(), padded)
    reference = reference[0, 4:-4, 4:-4]
    probabilities = read(out / "probabilities.vrt", None)
    np.testing.assert_allclose(probabilities, reference, atol=1e-6)  # seamless, like the plain prediction
    assert not np.allclose(probabilities, whole_image_probabilities(conv_model_dir, image, 4), atol=1e-3)


# --- georeferencing -------------------------------------------------------------------------------


def test_output_grid_is_the_input_grid_and_a_known_feature_lands_on_its_pixel(tiny_scene, tmp_path):
    image = image_of(tiny_scene).copy()
    row, col = 37, 101
    image[row, col, 0] = 5000.0  # a bright target in "red"
    path = tmp_path / "target.tif"
    with rasterio.open(tiny_scene.image) as src:
        profile = src.profile
        descriptions = src.descriptions
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(image, -1, 0))
        dst.descriptions = descriptions
    model_dir = export(threshold_model(0, 3, 2500.0), tmp_path / "model", classes=["water", "built"])
    out = tmp_path / "out"
    run(
        [
            f"--model={model_dir}",
            "--inputs",
            str(path),
            "--tile-size=64",
            "--overlap=8",
            f"--output={out}",
            "--mosaic",
        ]
    )
    with rasterio.open(out / "classes.tif") as result, rasterio.open(path) as source:
        assert result.crs == source.crs
        assert result.transform == source.transform
        assert (result.width, result.height) == (source.width, source.height)
        classes = result.read(1)
        assert np.argwhere(classes == 1).tolist() == [[row, col]]
        assert result.xy(row, col) == source.xy(row, col)


def test_reprojection_from_lonlat_imagery_onto_the_models_utm_grid(tmp_path):
    lon0, lat0, step = 10.30, 46.22, 0.0001  # ~8 × 11 m pixels, inside UTM zone 32N
    size = 300
    pixels = np.full((2, size, size), 100.0, np.float32)
    # A bright square of 40 × 40 lon/lat pixels whose centre is known.
    pixels[0, 100:140, 150:190] = 5000.0
    centre_lon, centre_lat = lon0 + 170 * step, lat0 - 120 * step
    path = tmp_path / "lonlat.tif"
    profile = dict(driver="GTiff", width=size, height=size, count=2, dtype="float32", crs="EPSG:4326")
    with rasterio.open(path, "w", transform=from_origin(lon0, lat0, step, step), **profile) as dst:
        dst.write(pixels)
        dst.descriptions = ("red", "nir")
    model_dir = export(
        threshold_model(0, 2, 2500.0), tmp_path / "model", bands=["red", "nir"], classes=["a", "b"]
    )
    out = tmp_path / "out"
    aoi = f"{lon0 + 0.005},{lat0 - 0.025},{lon0 + 0.025},{lat0 - 0.005}"
    summary = run(
        [f"--model={model_dir}", "--inputs", str(path), f"--aoi={aoi}", f"--output={out}", "--mosaic"]
    )
    with rasterio.open(out / "classes.tif") as result:
        assert result.crs == CRS.from_epsg(32632)
        a, _, c, _, e, f = tuple(result.transform)[:6]
        assert (a, e) == (10.0, -10.0)
        assert c % 10 == 0 and f % 10 == 0  # on the model's 10 m lattice
        classes = result.read(1)
        rows, cols = np.nonzero(classes == 1)
        x, y = result.xy(rows.mean(), cols.mean())
    (lon,), (lat,) = transform_coords("EPSG:32632", "EPSG:4326", [x], [y])
    assert abs(lon - centre_lon) < 1.5e-4 and abs(lat - centre_lat) < 1.0e-4  # within ~1 pixel
    square_m2 = (40 * step * 111_320 * np.cos(np.radians(centre_lat))) * (40 * step * 111_320)
    assert len(rows) * 100 == pytest.approx(square_m2, rel=0.1)
    assert summary["grid"]["crs"] == "EPSG:32632"


# --- outputs --------------------------------------------------------------------------------------


def test_mosaic_probabilities_quicklook_and_summary(tiny_scene, conv_model_dir, tmp_path):
    out = tmp_path / "out"
    summary = run(
        [f"--model={conv_model_dir}", "--inputs", tiny_scene.image, "--tile-size=64", "--overlap=8"]
        + ["--mosaic", "--probabilities=uint8", f"--output={out}"]
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.png",
        "classes.tif",
        "prediction-plan.json",
        "prediction.json",
        "probabilities.tif",
    ]
    for name in ("classes.tif", "probabilities.tif"):
        is_valid, errors, _ = cog_validate(str(out / name), strict=False)
        assert is_valid, errors
    with rasterio.open(out / "probabilities.tif") as src:
        assert src.count == 4 and src.dtypes[0] == "uint8" and src.descriptions == tuple(CLASSES)
        assert src.scales[0] == pytest.approx(1 / 254)
    classes = read(out / "classes.tif")
    counts = np.bincount(classes.ravel(), minlength=4)
    assert summary["class_counts"] == dict(zip(CLASSES, counts.tolist()))
    assert json.loads((out / "prediction.json").read_text())["files"]["classes"] == "classes.tif"
    assert (out / "classes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_polygon_region_is_predicted_and_the_rest_is_nodata(tiny_scene, conv_model_dir, tmp_path):
    x0, y0 = ORIGIN
    box = utm_box_to_lonlat(x0 + 505, y0 - 1495, x0 + 1495, y0 - 505)  # pixels 50..150 (edges inside)
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": box}))
    out = tmp_path / "out"
    summary = run(
        [f"--model={conv_model_dir}", "--inputs", tiny_scene.image, "--tile-size=48", "--overlap=16"]
        + [f"--region={aoi}", f"--output={out}"]  # --region with a GeoJSON path means the area
    )
    with rasterio.open(out / "classes.vrt") as src:
        col, row = ~src.transform * (x0 + 1000, y0 - 1000)
        classes = src.read(1)
        assert src.transform.c >= x0 + 490 and src.width <= 102
    assert classes[int(row), int(col)] != 255
    assert summary["nodata_pixels"] == int((classes == 255).sum())
    assert (classes != 255).sum() == pytest.approx(99 * 99, rel=0.05)


class FlakySource:
    """A source that fails for some tiles, permanently or once, around a real source."""

    def __init__(self, inner, broken: set, flaky: set) -> None:
        self.inner, self.broken, self.flaky = inner, broken, flaky
        self.failed: set = set()

    def read(self, grid, bands, **kwargs):
        if grid.transform in self.broken:
            raise SourceError("this tile is corrupt")
        if grid.transform in self.flaky and grid.transform not in self.failed:
            self.failed.add(grid.transform)
            raise TransientSourceError("connection reset")
        return self.inner.read(grid, bands, **kwargs)


def test_failed_tiles_go_to_dead_letters_and_transient_ones_are_retried(tiny_scene, conv_model_dir, tmp_path):
    out = tmp_path / "out"
    args = [f"--model={conv_model_dir}", "--inputs", tiny_scene.image, "--tile-size=64", "--overlap=8"]
    options = PipelineOptions(args + [f"--output={out}"])
    job = validate(options.view_as(PredictOptions))
    broken, flaky = job.plan.tile(0, 1), job.plan.tile(2, 2)
    source = FlakySource(job.source, {broken.grid.transform}, {flaky.grid.transform})
    job = dataclasses.replace(job, source=source, retry=RetryConfig(attempts=2, delay=0.01))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, job)
    summary = json.loads((out / "prediction.json").read_text())
    assert (summary["tiles_written"], summary["tiles_failed"]) == (15, 1)
    letters = [json.loads(line) for line in (out / "errors" / summary["errors"][0]).read_text().splitlines()]
    assert [(d["stage"], d["error_type"], d["tile"]["id"]) for d in letters] == [
        ("fetch", "SourceError", broken.id)
    ]
    assert letters[0]["tile"]["grid"]["transform"] == list(broken.grid.transform)
    classes = read(out / "classes.vrt")
    assert (classes[0:56, 56:112] == 255).all() and (classes[112:168, 112:168] != 255).all()


def test_earth_engine_source_gives_the_local_prediction(tiny_scene, conv_model_dir, tmp_path, monkeypatch):
    import ee
    from google.auth.credentials import AnonymousCredentials

    from tests.helpers.fake_earthengine import FakeEarthEngine
    from transforms.io.earthengine import client as earthengine

    monkeypatch.setattr(ee.data, "get_persistent_credentials", lambda: AnonymousCredentials())
    earthengine._gates.clear()
    x0, y0 = ORIGIN
    box = utm_box_to_lonlat(x0 + 305, y0 - 1795, x0 + 1795, y0 - 305)["coordinates"][0]
    lons, lats = [p[0] for p in box], [p[1] for p in box]
    aoi = f"--aoi={min(lons)},{min(lats)},{max(lons)},{max(lats)}"
    args = [f"--model={conv_model_dir}", "--tile-size=64", "--overlap=8", aoi]
    with FakeEarthEngine([tiny_scene.image], tiny_scene.labels) as fake:
        summary = run(
            args
            + ["--source=earthengine", f"--ee-project={fake.project}", f"--ee-endpoint={fake.url}"]
            + ["--ee-image=fake/image:red,nir,elevation", f"--output={tmp_path / 'ee'}"]
        )
        assert len(fake.requests) >= summary["tiles_written"]
    run(args + ["--inputs", tiny_scene.image, f"--output={tmp_path / 'local'}"])
    assert summary["source"]["kind"] == "earthengine"
    with (
        rasterio.open(tmp_path / "ee" / "classes.vrt") as ee_map,
        rasterio.open(tmp_path / "local" / "classes.vrt") as local,
    ):
        assert ee_map.transform == local.transform and ee_map.shape == local.shape
        assert np.array_equal(ee_map.read(1), local.read(1))


# --- bad input ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swir_model_dir(tiny_scene, tmp_path_factory) -> str:
    model = conv_model(image_of(tiny_scene))
    return export(model, tmp_path_factory.mktemp("swir") / "model", bands=["red", "swir", "elevation"])


def _bad(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    return err


def test_bad_input_stops_with_a_clear_message(tiny_scene, conv_model_dir, swir_model_dir, tmp_path, capsys):
    base = ["--inputs", tiny_scene.image, f"--output={tmp_path / 'out'}"]
    model = [f"--model={conv_model_dir}"]
    assert "needs bands ['red', 'swir', 'elevation']" in _bad(capsys, [f"--model={swir_model_dir}"] + base)
    assert "swir" in _bad(capsys, [f"--model={swir_model_dir}"] + base)
    assert "lies outside the imagery" in _bad(capsys, model + base + ["--aoi=0,0,0.1,0.1"])
    assert "must be smaller than --tile-size" in _bad(
        capsys, model + base + ["--tile-size=64", "--overlap=64"]
    )
    assert "must be even" in _bad(capsys, model + base + ["--overlap=7"])
    assert "W,S,E,N" in _bad(capsys, model + base + ["--aoi=10,50,9,51"])
    nothing = _bad(capsys, [f"--model={tmp_path / 'nothing'}"] + base)
    assert f"--model '{tmp_path / 'nothing'}' holds no model (no model.json in it)" in nothing
    assert f"`terrabeam train --output {tmp_path / 'nothing'}`" in nothing
    assert "did you mean --tile-size" in _bad(capsys, model + base + ["--tile-szie=64"])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert "is not writable" in _bad(capsys, model + base + [f"--output={blocker}/out"])
    assert not (tmp_path / "out" / "prediction.json").exists()


def test_a_model_folder_without_a_model_says_how_to_make_one(tmp_path):
    """In TensorFlow's place (its NotFoundError named the problem before), the folder and `terrabeam
    train`; the check reads no TensorFlow."""
    missing = str(tmp_path / "nonexistent")
    code = (
        "import sys; from pipelines.predict import main; status = main(sys.argv[1:]); "
        "print('tensorflow' in sys.modules, file=sys.stderr); sys.exit(status)"
    )
    done = run_python(code, "--model", missing, timeout=120)
    assert done.returncode == 2
    assert done.stderr == (
        f"error: --model {missing!r} holds no model (no model.json in it). Train one into it with "
        f"`terrabeam train --output {missing}` (`terrabeam train --help` lists the training options), or "
        "point --model at a folder that `terrabeam train` wrote.\nFalse\n"
    )


def test_the_model_folder_is_recognised_by_the_file_that_training_writes():
    from model.export import MODEL_JSON
    from pipelines.checks import model_folder

    assert model_folder.MODEL_JSON == MODEL_JSON


def test_an_earlier_prediction_is_kept_unless_overwrite(tiny_scene, conv_model_dir, tmp_path, capsys):
    args = [
        f"--model={conv_model_dir}",
        "--inputs",
        tiny_scene.image,
        f"--output={tmp_path}",
        "--tile-size=128",
    ]
    assert main(args) == 0
    assert "Prediction of 16 tiles written" in capsys.readouterr().out
    assert "already holds a prediction" in _bad(capsys, args)
    assert main(args + ["--overwrite", "--mosaic"]) == 0
    assert not (tmp_path / "tiles").exists() and (tmp_path / "classes.tif").exists()
