"""`python -m model.serving.eeify`: any image model in Earth Engine's Base64 TensorProto I/O, with its earthengine.json.

The talk's case is a pretrained classifier of 120x120 RGB patches into BigEarthNet's 43 classes; a small
model of that shape is built here. Earth Engine's side (the TensorProtos it sends and reads) is written
with TensorFlow's own protobuf API, not with project code.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from model.architecture import build_model
from model.export import export_model
from model.serving import eeify

NUM_CLASSES = 43
RGB = ["B4", "B3", "B2"]


def ee_encode(array: np.ndarray) -> str:
    """What Earth Engine sends for one tile: web-safe Base64 of a serialized TensorProto."""
    return base64.urlsafe_b64encode(tf.make_tensor_proto(array).SerializeToString()).decode("ascii")


def ee_decode(text: bytes) -> np.ndarray:
    proto = tf.make_tensor_proto(0.0)
    proto.ParseFromString(base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4)))
    return tf.make_ndarray(proto)


def call_eeified(path: Path, tiles: np.ndarray) -> dict[str, np.ndarray]:
    """Run the EE-ified signature as Vertex AI's TensorFlow container would; decode every output."""
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["array"]
    out = signature(array=tf.constant([ee_encode(t) for t in tiles]))
    return {name: np.stack([ee_decode(s) for s in column.numpy()]) for name, column in out.items()}


@pytest.fixture(scope="module")
def bigearthnet_like() -> keras.Model:
    """120x120x3 -> 43 class probabilities, one per patch, as the talk's pretrained model."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((120, 120, 3))
    x = keras.layers.Rescaling(1 / 3000.0)(inputs)
    x = keras.layers.Conv2D(8, 5, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="bigearthnet_like")


def patches(count: int, side: int = 120, bands: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 3000, (count, side, side, bands)).astype(np.float32)


def test_a_pretrained_patch_classifier_savedmodel_becomes_earth_engine_ready(bigearthnet_like, tmp_path):
    src = tmp_path / "pretrained"
    bigearthnet_like.export(str(src), verbose=False)  # a plain SavedModel, as downloaded
    names = [f"label_{i:02d}" for i in range(NUM_CLASSES)]
    out = tmp_path / "ee"
    code = eeify.main(
        [str(src), str(out), "--bands", ",".join(RGB), "--classes", ",".join(names), "--crs", "EPSG:32633"]
        + ["--scale", "10"]
    )
    assert code == 0
    config = json.loads((out / "earthengine.json").read_text())
    args = config["fromVertexAi"]
    assert config["inputBands"] == RGB and config["classes"] == names
    assert args["inputTileSize"] == [120, 120] and args["inputOverlapSize"] == [0, 0]
    assert args["outputTileSize"] == [1, 1]  # one prediction per patch
    assert sorted(args["outputBands"]) == sorted(names)
    assert args["proj"] == {"crs": "EPSG:32633", "scale": 10.0} and args["fixInputProj"] is True
    assert args["payloadFormat"] == "SERIALIZED_TF_TENSORS"

    tiles = patches(3)
    expected = bigearthnet_like.predict(tiles, verbose=0)
    for dtype in (np.float32, np.float64, np.uint16):  # what toArray() of float / double / int bands sends
        got = call_eeified(out / "eeified", tiles.astype(dtype))
        assert sorted(got) == sorted(names)
        assert all(got[name].shape == (3, 1, 1) and got[name].dtype == np.float32 for name in names)
        by_class = np.stack([got[name][:, 0, 0] for name in names], axis=-1)
        reference = (
            expected if dtype != np.uint16 else bigearthnet_like.predict(tiles.astype(np.uint16), verbose=0)
        )
        np.testing.assert_allclose(by_class, reference, atol=1e-6)


def test_a_keras_file_works_too_and_class_names_default(bigearthnet_like, tmp_path):
    src = tmp_path / "pretrained.keras"
    bigearthnet_like.save(src)
    out = tmp_path / "ee"
    assert eeify.main([str(src), str(out), "--bands", ",".join(RGB)]) == 0
    config = json.loads((out / "earthengine.json").read_text())
    assert config["classes"] == [f"class_{i}" for i in range(NUM_CLASSES)]
    assert "proj" not in config["fromVertexAi"]  # no grid given: Earth Engine samples the image's own
    tiles = patches(2, seed=1)
    got = call_eeified(out / "eeified", tiles)
    by_class = np.stack([got[f"class_{i}"][:, 0, 0] for i in range(NUM_CLASSES)], axis=-1)
    np.testing.assert_allclose(by_class, bigearthnet_like.predict(tiles, verbose=0), atol=1e-6)


def test_a_per_pixel_model_of_any_size_gets_the_largest_tile_that_fits(tmp_path):
    inputs = keras.Input((None, None, 4))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(5, 3, padding="same", activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    src = tmp_path / "pixels"
    model.export(str(src), verbose=False)
    out = tmp_path / "ee"
    bands = ["B2", "B3", "B4", "B8"]
    code = eeify.main([str(src), str(out), "--bands", ",".join(bands), "--classes", "dynamic-world"])
    assert code == 2  # dynamic-world has 9 classes, the model 5
    classes = "water,trees,grass,crops,built"
    assert (
        eeify.main([str(src), str(out), "--bands", ",".join(bands), "--classes", classes, "--overlap", "8"])
        == 0
    )
    args = json.loads((out / "earthengine.json").read_text())["fromVertexAi"]
    side = args["inputTileSize"][0]
    assert side % eeify.EE_TILE_MULTIPLE == 0 and args["inputOverlapSize"] == [8, 8]
    assert "outputTileSize" not in args
    assert 4 * side * side * 5 * 4 / 3 <= eeify.VERTEX_AI_MAX_REQUEST_BYTES  # one tile fits a request
    tiles = patches(2, side=40, bands=4, seed=2)
    got = call_eeified(out / "eeified", tiles)
    by_class = np.stack([got[name] for name in classes.split(",")], axis=-1)
    np.testing.assert_allclose(by_class, model.predict(tiles, verbose=0), atol=1e-6)


def test_the_projects_export_is_the_same_code_path(tmp_path):
    """EE-ifying a terrabeam model folder again reproduces what export_model wrote, byte for byte."""
    classes = ["water", "trees", "built"]
    keras_model = build_model("unet", 3, len(classes), filters=4, depth=2)
    folder = tmp_path / "model"
    metadata = {"mode": "segmentation", "bands": ["b1", "b2", "b3"], "classes": classes, "patch_size": 32}
    export_model(keras_model, str(folder), {**metadata, "crs": "EPSG:32632", "scale": 10.0})
    again = tmp_path / "again"
    config = eeify.eeify(str(folder), str(again))  # bands, classes, grid and receptive field from model.json
    assert config == json.loads((folder / "earthengine.json").read_text())
    tiles = patches(2, side=48, seed=4)
    ours, theirs = call_eeified(folder / "eeified", tiles), call_eeified(again / "eeified", tiles)
    assert sorted(ours) == sorted(classes)
    for name in classes:
        np.testing.assert_array_equal(ours[name], theirs[name])


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "--bands"),
        (["--bands", "B4,B3"], "takes 3 bands but 2 band names"),
        (["--bands", "B4,B3,B2", "--classes", "a,b,c"], "outputs 43 classes but 3 class names"),
        (["--bands", "B4,B3,B2", "--tile-size", "64"], "only takes 120x120 tiles"),
        (["--bands", "B4,B3,B2", "--overlap", "8"], "--overlap does not apply"),
        (["--bands", "B4,B3,B2", "--crs", "EPSG:4326"], "--crs and --scale together"),
        (
            ["--bands", "B4,B3,B2", "--classes", "1st," + ",".join(f"c{i}" for i in range(42))],
            "must start with a letter",
        ),
    ],
)
def test_bad_input_says_what_to_change(bigearthnet_like, tmp_path, capsys, extra, message):
    src = tmp_path / "pretrained"
    bigearthnet_like.export(str(src), verbose=False)
    assert eeify.main([str(src), str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_not_a_model_and_an_existing_output(tmp_path, capsys):
    assert eeify.main([str(tmp_path), str(tmp_path / "out"), "--bands", "a"]) == 2
    assert "neither a SavedModel folder" in capsys.readouterr().err
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    src = tmp_path / "any_size_classifier"
    model.export(str(src), verbose=False)
    assert eeify.main([str(src), str(tmp_path / "out"), "--bands", "a,b"]) == 2
    assert "pass --tile-size" in capsys.readouterr().err
    assert eeify.main([str(src), str(tmp_path / "out"), "--bands", "a,b", "--tile-size", "8"]) == 0
    assert eeify.main([str(src), str(tmp_path / "out"), "--bands", "a,b", "--tile-size", "8"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_a_tile_too_large_for_one_vertex_ai_request_is_refused(tmp_path, capsys):
    inputs = keras.Input((512, 512, 13))  # 13.6 MB of float32 per tile, ~18 MB in Base64
    model = keras.Model(
        inputs, keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    )
    src = tmp_path / "big.keras"
    model.save(src)
    bands = ",".join(f"B{i}" for i in range(13))
    assert eeify.main([str(src), str(tmp_path / "out"), "--bands", bands]) == 2
    assert "over Vertex AI's 1.5 MB per request" in capsys.readouterr().err
    assert not (tmp_path / "out" / "eeified").exists()
