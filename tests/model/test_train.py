"""Training end to end on a tiny synthetic extraction, and the model folder it writes.

One module-scoped run trains a tiny U-Net for two epochs; the tests read what it wrote. The exported
SavedModels are loaded with `tf.saved_model.load` only, and Earth Engine's side of the EE-ified model
is written here from TensorFlow's own protobuf API, not with project code.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model import evaluate, train, training
from model.architecture import build_model
from model.dataset import (
    PatchReader,
    load_data_manifest,
    make_batches,
    manifest_schema,
    read_patches,
    scan_statistics,
)
from model.errors import IncompatibleDataError, ModelError, ModelNotFoundError
from model.export import export_model, load_keras_model, load_model_metadata
from model.synthetic import write_synthetic_extraction
from tests.helpers.environment import run_command, run_python
from transforms.contracts.label_scheme import scheme_from_metadata
from transforms.contracts.schema import LABEL_NODATA

pytestmark = pytest.mark.slow

CLASSES = ("water", "trees", "built")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return write_synthetic_extraction(tmp_path_factory.mktemp("data"), classes=CLASSES)


@pytest.fixture(scope="module")
def model_dir(data, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("model")
    config = train.TrainConfig(data=data, output=str(output), epochs=2, filters=4, batch_size=8, verbose=0)
    train.train(config)
    return output


def _sample(height: int = 24, width: int = 20, count: int = 2) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(500, 3000, (count, height, width, 3)).astype(np.float32)


def test_a_few_training_steps_reduce_the_loss(data):
    keras.utils.set_random_seed(0)
    manifest = load_data_manifest(data)
    reader = PatchReader(manifest_schema(manifest), 3)
    patches = read_patches(manifest["splits"]["train"]["files"], reader, compression="GZIP")
    stats = scan_statistics(patches, 3, 3)
    x, y, w = next(iter(make_batches(patches, batch_size=16, class_weights=[1.0, 1.0, 1.0])))
    model = build_model("unet", 3, 3, filters=4, mean=stats.mean, variance=stats.variance)
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(ignore_class=LABEL_NODATA)
    )
    losses = [float(model.train_on_batch(x, y, sample_weight=w)) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]


def test_model_folder_follows_the_contract(model_dir, data):
    for name in (
        "model.json",
        "metrics.json",
        "confusion_matrix.png",
        "earthengine.json",
        "keras/model.keras",
    ):
        assert (model_dir / name).is_file(), name
    for name in ("saved_model", "eeified"):
        assert (model_dir / name / "saved_model.pb").is_file(), name
    info = load_model_metadata(str(model_dir))
    assert info["format"] == "terrabeam-model/1"
    assert info["mode"] == "segmentation"
    assert info["bands"] == ["b1", "b2", "b3"]
    assert info["classes"] == list(CLASSES)
    assert info["patch_size"] == 16
    assert (info["crs"], info["scale"]) == ("EPSG:32632", 10.0)
    assert info["receptive_field"] == 44
    assert info["architecture"].startswith("unet")
    assert 0.0 <= info["metrics"]["mean_iou"] <= 1.0
    assert info["training"]["epochs_run"] == 2


def test_metrics_cover_every_usable_validation_pixel(model_dir):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    # 16 validation patches, one fully masked, 3 unlabelled pixels in each of the others.
    assert metrics["pixels"] == 15 * (16 * 16 - 3)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == metrics["pixels"]
    assert metrics["overall_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-6)
    assert set(metrics["per_class_iou"]) == set(CLASSES)
    ious = [v for v in metrics["per_class_iou"].values() if v is not None]
    assert metrics["mean_iou"] == pytest.approx(np.mean(ious), abs=1e-6)
    with Image.open(model_dir / "confusion_matrix.png") as png:
        assert png.format == "PNG" and png.size[0] > 200


def test_training_history_shows_progress(model_dir):
    history = json.loads((model_dir / "history.json").read_text())
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert "val_loss" in history and "val_mean_iou" in history


def test_saved_model_matches_the_keras_model_on_any_tile_size(model_dir):
    keras_model = load_keras_model(str(model_dir))
    serving = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"]
    assert list(serving.structured_input_signature[1]) == ["image"]
    assert list(serving.structured_outputs) == ["probabilities"]
    for height, width in ((16, 16), (40, 28)):  # trained on 16x16
        x = _sample(height, width)
        out = serving(image=tf.constant(x))["probabilities"].numpy()
        assert out.shape == (2, height, width, 3)
        np.testing.assert_allclose(out, keras_model.predict(x, verbose=0), atol=1e-5)


def _ee_encode(array: np.ndarray) -> str:
    """What Earth Engine sends for one tile: web-safe Base64 of a serialized TensorProto."""
    return base64.urlsafe_b64encode(tf.make_tensor_proto(array).SerializeToString()).decode("ascii")


def _ee_decode(text: bytes) -> np.ndarray:
    proto = tf.make_tensor_proto(0.0)
    proto.ParseFromString(base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4)))
    return tf.make_ndarray(proto)


def test_eeified_model_round_trips_earth_engine_payloads(model_dir):
    keras_model = load_keras_model(str(model_dir))
    serving = tf.saved_model.load(str(model_dir / "eeified")).signatures["serving_default"]
    assert list(serving.structured_input_signature[1]) == ["array"]
    x = _sample(32, 32)
    expected = keras_model.predict(x, verbose=0)
    for dtype in (np.float32, np.float64, np.int16):  # what toArray() of float / double / int bands sends
        tiles = x.astype(dtype)
        out = serving(array=tf.constant([_ee_encode(t) for t in tiles]))
        assert sorted(out) == sorted(CLASSES)  # one output per class, named after it
        decoded = np.stack(
            [np.stack([_ee_decode(s) for s in out[name].numpy()]) for name in CLASSES], axis=-1
        )
        assert decoded.dtype == np.float32 and decoded.shape == (2, 32, 32, 3)
        reference = (
            expected if dtype != np.int16 else keras_model.predict(tiles.astype(np.float32), verbose=0)
        )
        np.testing.assert_allclose(decoded, reference, atol=1e-5)


def test_earthengine_json_matches_the_eeified_model(model_dir):
    config = json.loads((model_dir / "earthengine.json").read_text())
    info = load_model_metadata(str(model_dir))
    args = config["fromVertexAi"]
    border = math.ceil(info["receptive_field"] / 2)
    assert args["inputOverlapSize"] == [2 * border, 2 * border]
    assert args["inputTileSize"][0] > args["inputOverlapSize"][0]
    assert args["proj"] == {"crs": info["crs"], "scale": info["scale"]}
    assert args["fixInputProj"] is True and args["payloadFormat"] == "SERIALIZED_TF_TENSORS"
    serving = tf.saved_model.load(str(model_dir / "eeified")).signatures["serving_default"]
    assert sorted(args["outputBands"]) == sorted(serving.structured_outputs) == sorted(CLASSES)
    assert config["classes"] == list(CLASSES)
    assert config["inputBands"] == info["bands"]


def test_evaluate_cli_scores_a_model_folder(model_dir, data):
    # A fresh interpreter, as users run it: the folder's Keras model names the registered loss, which
    # loading must find without model.train having been imported.
    done = run_command([sys.executable, "-m", "model.evaluate", "--model", str(model_dir), "--data", data])
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    stored = json.loads((model_dir / "metrics.json").read_text())
    assert printed["mean_iou"] == pytest.approx(stored["mean_iou"], abs=1e-6)


def test_a_run_that_diverges_from_the_start_says_so_and_writes_no_model(data, tmp_path):
    # A learning rate of 1e30 overflows the weights in the first epoch: no epoch is worth keeping.
    config = train.TrainConfig(
        data=data, output=str(tmp_path / "m"), epochs=3, filters=4, batch_size=8, verbose=0, ema=0.0,
        learning_rate=1e30, schedule="plateau",
    )  # fmt: skip
    with pytest.raises(
        ModelError,
        match=r"Training diverged: no epoch had a finite val_loss \(the training loss was nan after epoch 1\)",
    ):
        train.train(config)
    assert not (tmp_path / "m" / "model.json").exists()


def test_continuing_from_a_model_needs_the_same_bands(model_dir, tmp_path):
    other = write_synthetic_extraction(tmp_path / "data", bands=("b1", "b2", "b4"), classes=CLASSES)
    config = train.TrainConfig(data=other, output=str(tmp_path / "m"), init_model=str(model_dir), verbose=0)
    with pytest.raises(IncompatibleDataError, match=r"expects bands \['b1', 'b2', 'b3'\]"):
        train.train(config)


def test_the_label_scheme_travels_into_the_model_folder_and_its_colours_into_the_plot(model_dir, data):
    manifest = json.loads((Path(data) / "manifest.json").read_text())
    info = load_model_metadata(str(model_dir))
    assert info["label_scheme"] == manifest["label_scheme"] and info["classes"] == list(CLASSES)
    scheme = scheme_from_metadata(info)
    plot = Image.open(model_dir / "confusion_matrix.png").convert("RGB")
    cell, left, top = 56, 170, 170  # the plot's layout: a colour swatch left of each row
    for i, rgb in enumerate(scheme.palette_rgb()):
        assert plot.getpixel((left - 9, top + i * cell + cell // 2)) == rgb


def test_continuing_from_a_model_needs_the_same_label_values(model_dir, data, tmp_path, capsys):
    manifest = json.loads((Path(data) / "manifest.json").read_text())
    manifest["label_scheme"]["classes"][1]["values"] = [21, 22]
    manifest["splits"] = {
        s: {**v, "files": [str(Path(data) / f) for f in v["files"]]} for s, v in manifest["splits"].items()
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    output = tmp_path / "m"
    argv = ["--data", str(tmp_path), "--output", str(output), "--init-model", str(model_dir)]
    assert train.run(argv) == 2
    err = capsys.readouterr().err
    assert "'trees' is values [1] for the model, [21, 22] in the data" in err
    assert not output.exists()


def test_cli_reports_bad_input_with_status_2(tmp_path, data, capsys):
    assert train.run(["--data", str(tmp_path), "--output", str(tmp_path / "m")]) == 2
    assert "error: No readable manifest" in capsys.readouterr().err
    manifest = json.loads((Path(data) / "manifest.json").read_text())
    manifest["classes"] = []
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert train.run(["--data", str(tmp_path), "--output", str(tmp_path / "m")]) == 2
    assert "has no 'classes'" in capsys.readouterr().err
    assert train.run(["--data", data, "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err


def test_records_that_do_not_match_the_manifest_are_explained(tmp_path, data):
    manifest = json.loads((Path(data) / "manifest.json").read_text())
    manifest["patch_size"] = 32
    manifest["splits"] = {
        s: {**v, "files": [str(Path(data) / f) for f in v["files"]]} for s, v in manifest["splits"].items()
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    config = train.TrainConfig(data=str(tmp_path), output=str(tmp_path / "m"), verbose=0)
    with pytest.raises(IncompatibleDataError, match="do not match the manifest's schema"):
        train.train(config)


def test_metadata_and_export_errors_are_explained(tmp_path):
    with pytest.raises(ModelNotFoundError, match="No readable model metadata"):
        load_model_metadata(str(tmp_path))
    model = build_model("minimal", 3, 2, filters=4)
    metadata = {
        "mode": "segmentation",
        "classes": ["a", "b"],
        "patch_size": 8,
        "crs": "EPSG:4326",
        "scale": 10,
    }
    with pytest.raises(ValueError, match="lacks \\['bands'\\]"):
        export_model(model, str(tmp_path), metadata)
    with pytest.raises(ValueError, match="metadata names 2 bands"):
        export_model(model, str(tmp_path), {**metadata, "bands": ["x", "y"]})


def test_classification_mode_trains_and_exports(data, tmp_path):
    config = train.TrainConfig(
        data=data, output=str(tmp_path), mode="classification", epochs=1, filters=4, batch_size=8, verbose=0
    )
    info = train.train(config)
    assert info["mode"] == "classification" and info["architecture"].startswith("classifier")
    assert info["receptive_field"] == 16  # the whole patch
    serving = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    assert serving(image=tf.constant(_sample(16, 16)))["probabilities"].shape == (2, 1, 1, 3)
    assert json.loads((tmp_path / "metrics.json").read_text())["pixels"] == 15


def test_scored_split_is_validation_and_selection_is_carved_from_training(model_dir):
    info = load_model_metadata(str(model_dir))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["split"] == "validation" and info["metrics"]["split"] == "validation"
    selection = info["training"]["selection"]
    assert selection["split"] == "0.1 of train by record hash" and selection["patches"] >= 1
    # 48 written, one masked: the carve and the fit set share them out.
    assert info["training"]["patches"] + selection["patches"] == 47
    assert metrics["selection"]["split"] == selection["split"]
    assert 0.0 <= metrics["selection"]["mean_iou"] <= 1.0
    assert info["training"]["cpu_seconds"] > 0


def _with_validation_of(data: str, other: str, folder: Path) -> str:
    """A copy of `data`'s manifest whose validation split is `other`'s (records elsewhere)."""
    manifest = json.loads((Path(data) / "manifest.json").read_text())
    donor = json.loads((Path(other) / "manifest.json").read_text())

    def absolute(root: str, files: list[str]) -> list[str]:
        return [f if Path(f).is_absolute() else str(Path(root) / f) for f in files]

    manifest["splits"]["train"]["files"] = absolute(data, manifest["splits"]["train"]["files"])
    manifest["splits"]["validation"] = {
        **donor["splits"]["validation"],
        "files": absolute(other, donor["splits"]["validation"]["files"]),
    }
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


def test_the_validation_split_plays_no_part_in_training_or_selection(data, tmp_path):
    """Training's own stages up to the scores (the model folder they export is tested above)."""
    other = write_synthetic_extraction(tmp_path / "other", classes=CLASSES, seed=5)
    swapped = _with_validation_of(data, other, tmp_path / "swapped")
    runs = {}
    for name, source in (("original", data), ("swapped", swapped)):
        config = train.TrainConfig(
            data=source, output=str(tmp_path / name), architecture="minimal", epochs=1, filters=4,
            batch_size=8, deterministic=True, verbose=0,
        )  # fmt: skip
        run = training.start(config)
        loaded = training.load_training_data(config)
        fitted = training.fit(config, loaded, training.build_model(config, loaded), run)
        runs[name] = (fitted.history, training.score(loaded, fitted).metrics, fitted.model.get_weights())
    (history_a, metrics_a, weights_a), (history_b, metrics_b, weights_b) = runs.values()
    assert history_a == history_b  # losses and selection losses, epoch by epoch
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b))
    assert metrics_a["selection"] == metrics_b["selection"]
    assert metrics_a["confusion_matrix"] != metrics_b["confusion_matrix"]  # scored on other pixels


@pytest.mark.parametrize("dropout, rate", [(None, 0.1), (0.3, 0.3), (0.0, None)])
def test_dropout_shapes_the_unet_it_builds(data, tmp_path, dropout, rate):
    config = train.TrainConfig(data=data, output=str(tmp_path), filters=4, dropout=dropout, verbose=0)
    model = training.build_model(config, training.load_training_data(config))
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.SpatialDropout2D)]
    assert rates == ([] if rate is None else [pytest.approx(rate)])


@pytest.mark.parametrize("roles, guessed", [("green=b3,red=b1,nir=b2", False), ("nir=b2", True)])
def test_the_log_says_which_bands_each_index_reads(data, tmp_path, caplog, roles, guessed):
    config = train.TrainConfig(data=data, output=str(tmp_path), filters=4, band_roles=roles, verbose=0)
    with caplog.at_level("INFO", logger="terrabeam.train"):
        training.build_model(config, training.load_training_data(config))
    said = "\n".join(r.getMessage() for r in caplog.records if "Spectral indices" in r.getMessage())
    if guessed:  # NDWI's green is the synthetic data's b3, read by its Sentinel-2 name
        assert "ndwi = (b3, b2)" in said and "Bands b3 were read by name" in said and "--band-roles" in said
    else:
        assert "ndvi = (b2, b1)" in said and "read by name" not in said


def _roles(data: str, tmp_path: Path, splits: dict[str, str], **settings):
    """model.train's choice of fit / selection / scored records for a manifest with these splits."""
    manifest = json.loads((Path(data) / "manifest.json").read_text())
    files = {k: [str(Path(data) / f) for f in v["files"]] for k, v in manifest["splits"].items()}
    manifest["splits"] = {new: {"files": files[old]} for new, old in splits.items()}
    folder = tmp_path / "-".join(splits)
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    config = train.TrainConfig(data=str(folder), **settings)
    reader = PatchReader(manifest_schema(manifest), len(CLASSES))
    fit, _, selection, score = training.data_roles(config, manifest, reader)
    return [(role.name, role.count) if role else None for role in (fit, selection, score)]


def test_what_fits_selects_and_scores_for_each_kind_of_data(data, tmp_path, caplog):
    # 48 training patches (one masked), 16 validation patches (one masked).
    carve = "0.1 of train by record hash"
    fit, selection, score = _roles(data, tmp_path, {"train": "train", "validation": "validation"})
    assert fit[0] == "train without the 0.1 selection carve" and selection[0] == carve
    assert fit[1] + selection[1] == 47 and score == ("validation", 15)
    # A selection split of its own: nothing is carved.
    roles = _roles(data, tmp_path, {"train": "train", "selection": "validation", "validation": "train"})
    assert roles == [("train", 47), ("selection", 15), ("validation", 47)]
    # No validation split: the carve is selected on and scored.
    fit, selection, score = _roles(data, tmp_path, {"train": "train"})
    assert selection[0] == carve and score is None
    # --selection-fraction 0: the old way, selection on the scored split, with a warning.
    caplog.set_level("WARNING", logger="terrabeam.train")
    roles = _roles(
        data,
        tmp_path,
        {"train": "train", "validation": "validation", "x": "validation"},
        selection_fraction=0.0,
    )
    assert roles == [("train", 47), ("validation", 15), ("validation", 15)]
    assert "metrics are optimistic" in caplog.text


def test_weight_decay_shrinks_kernels_only():
    model = build_model("unet", 3, 4, filters=4, mean=[0.0] * 3, variance=[1.0] * 3)
    config = train.TrainConfig(data="d", output="o", schedule="plateau")
    assert type(training.optimizer(config, model, 10, 0.99)) is keras.optimizers.Adam
    decayed = training.optimizer(dataclasses.replace(config, weight_decay=0.05), model, 10, 0.99)
    assert isinstance(decayed, keras.optimizers.AdamW) and decayed.use_ema
    decayed.build(model.trainable_variables)
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    rest = [v for v in model.trainable_variables if not v.path.endswith("kernel")]
    assert kernels and rest
    assert {v.path.rsplit("/", 1)[-1] for v in rest} == {"bias", "gamma", "beta"}
    assert all(decayed._use_weight_decay(v) for v in kernels)
    assert not any(decayed._use_weight_decay(v) for v in rest)
    # One step with zero gradients: Adam leaves the weights, AdamW shrinks the kernels alone.
    before = [np.array(v) for v in model.trainable_variables]
    decayed.apply([tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)
    for v, b in zip(model.trainable_variables, before):
        shrunk = v.path.endswith("kernel") and np.any(b)
        assert (np.abs(np.array(v)).sum() < np.abs(b).sum()) == shrunk, v.path


def test_weight_averaging_window_is_at_most_a_tenth_of_the_run():
    assert training.ema_momentum(0.99, 80 * 178) == 0.99  # Google's sample: 80 epochs of 178 steps
    assert training.ema_momentum(0.99, 3 * 150) == pytest.approx(1 - 10 / 450)  # the demo: 3 short epochs
    assert training.ema_momentum(0.99, 10) == 0.0  # too short to average at all
    assert training.ema_momentum(0.0, 10_000) == 0.0


def test_training_levers_export_predict_and_continue(tmp_path):
    bands = ("B3", "B4", "B8", "B11")
    data = write_synthetic_extraction(tmp_path / "d", bands=bands, classes=CLASSES)
    config = train.TrainConfig(
        data=data, output=str(tmp_path / "m"), epochs=2, filters=4, batch_size=8, verbose=0,
        schedule="cosine", ema=0.9, loss="focal", region_loss="lovasz", label_smoothing=0.1,
        spectral_indices="auto", radiometric_augmentation=0.05,
    )  # fmt: skip
    info = train.train(config)
    assert info["training"]["radiometric_augmentation"] == 0.05
    assert info["spectral_indices"] == {
        "ndvi": ["B8", "B4"], "ndwi": ["B3", "B8"], "mndwi": ["B3", "B11"], "ndbi": ["B11", "B8"]
    }  # fmt: skip
    assert info["training"]["loss"] == "class-weighted focal loss with label smoothing 0.1 + Lovász-softmax"
    # A few full batches of 8 for 2 epochs: too few steps for an averaging window of 10 (momentum 0.9).
    steps = 2 * (info["training"]["patches"] // 8)
    assert info["training"]["schedule"] == "cosine"
    assert steps < 100 and info["training"]["ema"] == pytest.approx(max(0.0, 1 - 10 / steps))
    assert info["training"]["epochs_run"] == 2  # no early stopping under the cosine schedule
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert history["learning_rate"][-1] < history["learning_rate"][0]
    keras_model = load_keras_model(str(tmp_path / "m"))
    serving = tf.saved_model.load(str(tmp_path / "m" / "saved_model")).signatures["serving_default"]
    x = np.random.default_rng(3).uniform(500, 3000, (2, 20, 24, 4)).astype(np.float32)
    np.testing.assert_allclose(
        serving(image=tf.constant(x))["probabilities"].numpy(), keras_model.predict(x, verbose=0), atol=1e-5
    )
    # The exported weights are the checkpoint of the best epoch (the averaged weights under --ema).
    best = keras.models.clone_model(keras_model)  # same layers and normalization statistics
    best.load_weights(tmp_path / "m" / "checkpoints" / "best.weights.h5")
    np.testing.assert_allclose(best.predict(x, verbose=0), keras_model.predict(x, verbose=0), atol=1e-6)
    again = train.TrainConfig(
        data=data,
        output=str(tmp_path / "m2"),
        init_model=str(tmp_path / "m"),
        epochs=1,
        batch_size=8,
        verbose=0,
    )
    continued = train.train(again)
    assert continued["spectral_indices"] == info["spectral_indices"]
    assert info["training"]["xla"] is False  # --xla off, the default: traced steps
    tta = evaluate.evaluate_model_dir(str(tmp_path / "m2"), data, tta=True)
    plain = evaluate.evaluate_model_dir(str(tmp_path / "m2"), data)
    assert tta["tta"] and tta["pixels"] == plain["pixels"] == 15 * (16 * 16 - 3)
    assert tta["confusion_matrix"] != plain["confusion_matrix"]


@pytest.mark.filterwarnings("ignore:Model doesn't support `jit_compile=True`:UserWarning")  # said in the log
def test_xla_compiled_steps_train_as_the_traced_ones_do(data, tmp_path, caplog):
    """The talk's small model for an epoch from the same seed, its steps traced and XLA-compiled (with the
    Lovász term, whose masking XLA needs static): the same losses. Deterministic ops rule XLA out (Keras
    turns it off), which the run says and records, and they end with the run that asked for them."""
    from tensorflow.python.framework.config import is_op_determinism_enabled

    runs = {}
    for name, settings in {
        "deterministic": {"xla": "on", "deterministic": True},
        "off": {"xla": "off"},
        "on": {"xla": "on"},
    }.items():
        config = train.TrainConfig(
            data=data, output=str(tmp_path / name), architecture="minimal", filters=4, epochs=1,
            batch_size=8, ema=0.0, region_loss="lovasz", verbose=0, **settings,
        )  # fmt: skip
        run = training.start(config)  # seeds, as train() does
        assert is_op_determinism_enabled() == config.deterministic
        loaded = training.load_training_data(config)
        runs[name] = training.fit(config, loaded, training.build_model(config, loaded), run)
    assert (runs["deterministic"].xla, runs["off"].xla, runs["on"].xla) == (False, False, True)
    assert "XLA compilation is off for this run: --deterministic ops" in caplog.text
    for name in ("loss", "val_loss"):  # threaded CPU kernels alone move the traced run's loss by ~0.3 %
        assert runs["on"].history[name] == pytest.approx(runs["off"].history[name], rel=1e-2)


def test_xla_auto_compiles_runs_long_enough_to_pay_for_it():
    assert not training.use_xla("auto", training.XLA_AUTO_STEPS - 1)
    assert training.use_xla("auto", training.XLA_AUTO_STEPS)
    assert training.use_xla("on", 1) and not training.use_xla("off", 10**6)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--selection-fraction", "1"], "--selection-fraction must be at least 0 and below 1"),
        (["--spectral-indices", "evi"], "--spectral-indices takes auto, none or names"),
        (["--band-roles", "nir"], "--band-roles takes role=band pairs"),
        (["--ema", "1.5"], "--ema must be at least 0"),
        (["--weight-decay", "-0.1"], "--weight-decay must be at least 0"),
        (["--spectral-indices", "ndbi"], "ndbi needs the swir1 and nir band"),
    ],
)
def test_bad_training_settings_are_explained(data, tmp_path, flags, message, capsys):
    argv = [
        "--data",
        data,
        "--output",
        str(tmp_path / "m"),
        "--epochs",
        "1",
        "--filters",
        "4",
        "--verbose",
        "0",
    ]
    assert train.run(argv + flags) == 2
    assert message in capsys.readouterr().err


# --- the command line ----------------------------------------------------------------------------------


def test_a_misspelt_option_is_answered_with_the_closest_one(capsys):
    assert train.run(["--epoch", "5"]) == 2
    err = capsys.readouterr().err
    assert "error: Unknown option(s): --epoch (did you mean --epochs?)" in err
    assert train.run(["--learning_rate=0.1", "--seeed", "3"]) == 2
    err = capsys.readouterr().err
    assert (
        "--learning_rate (did you mean --learning-rate?)" in err and "--seeed (did you mean --seed?)" in err
    )
    assert train.run(["stray"]) == 2
    assert "unrecognized arguments: stray" in capsys.readouterr().err


def test_without_the_demo_extraction_the_default_data_says_how_to_make_it(tmp_path, monkeypatch, capsys):
    from transforms.contracts.manifest import MANIFEST_NAME

    assert train.DEMO_MANIFEST.endswith("/" + MANIFEST_NAME)
    monkeypatch.chdir(tmp_path)  # no out/demo/data here
    assert train.run([]) == 2
    err = capsys.readouterr().err
    assert (
        "error: No demo extraction at 'out/demo/data': run `make demo` (or `terrabeam extract`) first" in err
    )
    assert not (tmp_path / "out").exists()


def test_help_loads_no_tensorflow():
    """Each form of the command answers --help from the configuration's declarations alone."""
    code = """
import runpy, sys
from pipelines import cli
from model import train
assert cli.main(["train", "--help"]) == 0
assert train.run(["--help"]) == 0
sys.argv = ["model.train", "--help"]
try:
    runpy.run_module("model.train", run_name="__main__")  # as `python -m model.train --help`
except SystemExit as e:
    assert e.code == 0, e.code
print(sorted(m for m in ("tensorflow", "keras", "model.training") if m in sys.modules))
"""
    done = run_python(code, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_mixed_bfloat16_trains_in_bfloat16_and_exports_a_float32_model(tmp_path):
    """--precision mixed_bfloat16: the layers that learn compute in bfloat16 during the fit; the band
    statistics, indices and output stay float32; the model folder computes in float32 throughout."""
    bands = ("B3", "B4", "B8", "B11")
    data = write_synthetic_extraction(tmp_path / "d", bands=bands, classes=CLASSES)
    config = train.TrainConfig(
        data=data, output=str(tmp_path / "m"), epochs=2, filters=4, batch_size=8, verbose=0,
        spectral_indices="auto", precision="mixed_bfloat16",
    )  # fmt: skip
    training.start(config)
    fitting = training.build_model(config, training.load_training_data(config))
    policies = {layer.name: layer.dtype_policy.name for layer in fitting.layers}
    assert policies["normalization"] == policies["spectral_indices"] == policies["pad"] == "float32"
    assert policies["probabilities"] == "float32"
    assert policies["down0_conv1"] == policies["logits"] == "mixed_bfloat16"
    info = train.train(config)
    assert info["training"]["precision"] == "mixed_bfloat16"
    keras_model = load_keras_model(str(tmp_path / "m"))
    assert {layer.dtype_policy.name for layer in keras_model.layers} == {"float32"}
    serving = tf.saved_model.load(str(tmp_path / "m" / "saved_model")).signatures["serving_default"]
    x = np.random.default_rng(3).uniform(500, 3000, (2, 20, 24, 4)).astype(np.float32)
    served = serving(image=tf.constant(x))["probabilities"]
    assert served.dtype == tf.float32
    np.testing.assert_allclose(served.numpy(), keras_model.predict(x, verbose=0), atol=1e-5)
    # The metrics are the float32 model's: scoring the folder again gives the same matrix.
    rescored = evaluate.evaluate_model_dir(str(tmp_path / "m"), data)
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert rescored["confusion_matrix"] == metrics["confusion_matrix"]


@pytest.mark.parametrize(
    ("native", "deterministic", "expected"),
    [(True, False, "mixed_bfloat16"), (False, False, "float32"), (True, True, "float32")],
)
def test_auto_precision_is_mixed_bfloat16_only_where_the_cpu_has_it(
    monkeypatch, native, deterministic, expected
):
    monkeypatch.setattr(training, "has_native_bfloat16", lambda: native)
    config = train.TrainConfig(data="d", output="o", deterministic=deterministic)
    assert config.precision == "auto" and training.resolve_precision(config) == expected
    for asked in ("float32", "mixed_bfloat16"):  # asked for by name, it is what it says
        assert training.resolve_precision(dataclasses.replace(config, precision=asked)) == asked
