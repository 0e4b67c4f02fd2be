"""The prediction server over real HTTP on 127.0.0.1, with a tiny exported model."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf

from model.architecture import build_model
from model.export import export_model
from model.serving import serve
from model.serving import server as prediction_server
from tests.helpers.environment import ROOT as REPO
from tests.helpers.environment import env, run_python
from tests.helpers.imports import hiding, only_installed

BANDS = ["red", "nir", "elevation"]
CLASSES = ["water", "trees", "crops", "built"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    keras_model = build_model(
        "minimal",
        len(BANDS),
        len(CLASSES),
        filters=4,
        mean=[150.0, 60.0, 300.0],
        variance=[2500.0, 900.0, 4e4],
    )
    folder = tmp_path_factory.mktemp("serve") / "model"
    metadata = {
        "mode": "segmentation",
        "bands": BANDS,
        "classes": CLASSES,
        "patch_size": 32,
        "crs": "EPSG:32632",
        "scale": 10.0,
    }
    export_model(keras_model, str(folder), metadata)
    return folder


@pytest.fixture(scope="module")
def direct(model_dir):
    """The model's own prediction: the exported serving signature called in-process."""
    signature = tf.saved_model.load(str(model_dir / "saved_model")).signatures["serving_default"]
    return lambda batch: signature(image=tf.constant(batch, tf.float32))["probabilities"].numpy()


@pytest.fixture(scope="module")
def server(model_dir):
    app = prediction_server.create_app(lambda: prediction_server.Predictor.load(str(model_dir)))
    with prediction_server.running_server(app) as url:
        info = prediction_server.wait_until_ready(url, timeout=60)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client, info


def tiles(count: int, side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal([150.0, 60.0, 300.0], [50.0, 30.0, 200.0], (count, side, side, len(BANDS))).astype(
        np.float32
    )


def ee_encode(array: np.ndarray, *, pad: bool = True) -> str:
    """As Earth Engine sends a tile: web-safe Base64 of a serialized TensorProto of the array band."""
    encoded = base64.urlsafe_b64encode(tf.make_tensor_proto(array).SerializeToString()).decode()
    return encoded if pad else encoded.rstrip("=")


def decode_prediction(prediction: dict, classes=CLASSES) -> np.ndarray:
    """One tile's answer in Earth Engine's format, one (H, W) band per class -> (H, W, classes)."""
    assert list(prediction) == list(classes)
    return np.stack([prediction_server.decode_tensor(prediction[name]) for name in classes], axis=-1)


def decode_predictions(response: httpx.Response, classes=CLASSES) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.stack([decode_prediction(p, classes) for p in response.json()["predictions"]])


def predict(client: httpx.Client, instances: list) -> httpx.Response:
    return client.post("/predict", json={"instances": instances})


# -- Earth Engine's wire format -------------------------------------------------------------------


def test_earth_engine_tiles_give_the_models_own_prediction(server, direct):
    client, _ = server
    batch = tiles(3, 40)
    float_val = tf.make_tensor_proto(batch[2]).SerializeToString()
    float_val_proto = tf.make_tensor_proto(batch[2])
    float_val_proto.ClearField("tensor_content")
    float_val_proto.float_val.extend(batch[2].ravel().tolist())
    assert float_val_proto.SerializeToString() != float_val
    instances = [
        {"array": ee_encode(batch[0])},
        {"array": ee_encode(batch[1], pad=False)},
        {"array": base64.urlsafe_b64encode(float_val_proto.SerializeToString()).decode()},
    ]
    got = decode_predictions(predict(client, instances))
    assert got.shape == (3, 40, 40, len(CLASSES)) and got.dtype == np.float32
    np.testing.assert_allclose(got, direct(batch), rtol=1e-5, atol=1e-6)


def test_integer_pixel_types_are_cast_to_float_as_the_eeified_model_does(server, direct):
    client, _ = server
    batch = np.rint(tiles(1, 24, seed=3)).astype(np.int16)
    got = decode_predictions(predict(client, [{"array": ee_encode(batch[0])}]))
    np.testing.assert_allclose(got, direct(batch.astype(np.float32)), rtol=1e-5, atol=1e-6)


def test_answers_are_byte_for_byte_those_of_the_eeified_savedmodel(server, model_dir):
    client, _ = server
    batch = tiles(2, 32, seed=1)
    strings = [ee_encode(t) for t in batch]
    response = predict(client, [{"array": s} for s in strings])
    eeified = tf.saved_model.load(str(model_dir / "eeified")).signatures["serving_default"]
    expected = {name: column.numpy() for name, column in eeified(array=tf.constant(strings)).items()}
    assert sorted(expected) == sorted(CLASSES)
    for row, prediction in enumerate(response.json()["predictions"]):
        assert prediction == {name: expected[name][row].decode() for name in CLASSES}


def test_answers_say_where_the_time_went(server):
    client, _ = server
    response = predict(client, [{"array": ee_encode(_GOOD)}])
    steps = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    assert set(steps) == {"read", "queue", "decode", "model", "encode", "total"}
    assert 0 < float(steps["model"]) <= float(steps["total"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_malloc_tuning_applies_on_linux():
    assert prediction_server.tune_malloc() is True


@pytest.mark.parametrize(
    "shape",
    [None, (256, 256), (300, 7), (2, 129, 131), (1,), (), (0, 5), (4, 0), (1000, 1000)]
    + [(16384 + n,) for n in range(3)],  # encoded in two pieces: each length mod 3 where they meet
)
def test_encode_tensor_matches_tensorflows_serialize_and_encode_base64(shape):
    """The hand-written TensorProto is TensorFlow's, byte for byte: multi-byte lengths and sizes, a
    scalar, empty tensors (proto3 leaves zeros out), a plane sliced out of a tile (not contiguous), and
    tensors large enough to be encoded in two pieces."""
    rng = np.random.default_rng(1)
    array = tiles(1, 7)[0] if shape is None else rng.random(shape).astype(np.float32)
    for value in (array, array[..., ::2] if array.ndim else array):
        expected = tf.io.encode_base64(tf.io.serialize_tensor(tf.constant(value))).numpy().decode()
        assert prediction_server.encode_tensor(value) == expected, value.shape
        np.testing.assert_array_equal(prediction_server.decode_tensor(expected), value)


def test_earthengine_json_agrees_with_what_the_server_accepts(server, model_dir, direct):
    client, info = server
    config = json.loads((model_dir / "earthengine.json").read_text())
    args = config["fromVertexAi"]
    eeified = tf.saved_model.load(str(model_dir / "eeified")).signatures["serving_default"]
    input_names = list(eeified.structured_input_signature[1])
    output_names = sorted(eeified.structured_outputs)

    assert args["payloadFormat"] == "SERIALIZED_TF_TENSORS"
    assert config["inputBands"] == BANDS and config["classes"] == CLASSES
    assert list(info["inputs"]) == input_names == list(args["inputTypeOverride"])
    assert sorted(info["outputBands"]) == output_names == sorted(args["outputBands"])
    assert sorted(args["outputBands"]) == sorted(CLASSES)  # one band per class, named after it
    assert all(band == {"type": "float", "dimensions": 0} for band in args["outputBands"].values())
    assert info["inputs"][input_names[0]]["bands"] == BANDS

    # One tile of inputTileSize, as Earth Engine packs it, fits maxPayloadBytes and the server's limit.
    height, width = args["inputTileSize"]
    tile = tiles(1, height, seed=2)[0][:, :width]
    body = json.dumps({"instances": [{input_names[0]: ee_encode(tile)}]}).encode()
    assert len(body) <= args["maxPayloadBytes"] + prediction_server.ENVELOPE_BYTES <= info["maxRequestBytes"]
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    got = decode_predictions(response, config["classes"])
    out_height, out_width = args.get("outputTileSize", args["inputTileSize"])
    assert got.shape == (1, out_height, out_width, len(CLASSES))
    np.testing.assert_allclose(got, direct(tile[None]), rtol=1e-5, atol=1e-6)
    assert set(response.json()["predictions"][0]) == set(args["outputBands"])


def test_an_earth_engine_request_gets_the_expected_class_probabilities(tmp_path):
    """The exact body of a fromVertexAi request to a model whose answer numpy can compute by hand:
    a softmax of a 1x1 linear map of the bands. Both the server and the EE-ified SavedModel (what
    Google's prebuilt TensorFlow container serves) must give those probabilities, one band per class."""
    weights = np.array(
        [[0.02, -0.01, 0.0, 0.005], [-0.03, 0.02, 0.01, 0.0], [0.001, 0.0, -0.002, 0.003]], np.float32
    )
    bias = np.array([0.1, -0.2, 0.0, 0.3], np.float32)
    inputs = keras.Input((None, None, len(BANDS)))
    linear = keras.layers.Conv2D(len(CLASSES), 1, activation="softmax")
    keras_model = keras.Model(inputs, linear(inputs))
    linear.set_weights([weights[None, None], bias])
    folder = tmp_path / "linear"
    metadata = {"mode": "segmentation", "bands": BANDS, "classes": CLASSES, "patch_size": 16}
    export_model(keras_model, str(folder), {**metadata, "crs": "EPSG:32632", "scale": 10.0})
    args = json.loads((folder / "earthengine.json").read_text())["fromVertexAi"]
    height, width = args["inputTileSize"]
    tile = tiles(1, height, seed=11)[0][:, :width]
    logits = tile.astype(np.float64) @ weights + bias
    expected = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    # What Earth Engine posts: one instance per tile, the tile of image.toArray() under the input name.
    body = json.dumps({"instances": [{"array": ee_encode(tile)}]}).encode()
    assert len(body) <= args["maxPayloadBytes"] + prediction_server.ENVELOPE_BYTES

    app = prediction_server.create_app(lambda: prediction_server.Predictor.load(str(folder)))
    with prediction_server.running_server(app) as url:
        prediction_server.wait_until_ready(url, timeout=60)
        response = httpx.post(
            url + "/predict", content=body, headers={"content-type": "application/json"}, timeout=30
        )
    (prediction,) = response.json()["predictions"]
    assert list(prediction) == CLASSES and sorted(args["outputBands"]) == sorted(CLASSES)
    np.testing.assert_allclose(decode_prediction(prediction), expected, atol=1e-6)

    eeified = tf.saved_model.load(str(folder / "eeified")).signatures["serving_default"]
    answer = eeified(array=tf.constant([ee_encode(tile)]))
    by_class = np.stack(
        [prediction_server.decode_tensor(answer[name].numpy()[0]) for name in CLASSES], axis=-1
    )
    np.testing.assert_allclose(by_class, expected, atol=1e-6)


def test_a_classification_model_answers_one_pixel_per_tile(tmp_path):
    keras_model = build_model("classifier", len(BANDS), len(CLASSES), filters=4, depth=2)
    folder = tmp_path / "classifier"
    metadata = {"mode": "classification", "bands": BANDS, "classes": CLASSES, "patch_size": 16}
    export_model(keras_model, str(folder), {**metadata, "crs": "EPSG:32632", "scale": 10.0})
    args = json.loads((folder / "earthengine.json").read_text())["fromVertexAi"]
    signature = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    batch = tiles(2, args["inputTileSize"][0], seed=10)
    app = prediction_server.create_app(lambda: prediction_server.Predictor.load(str(folder)))
    with prediction_server.running_server(app) as url:
        prediction_server.wait_until_ready(url, timeout=60)
        response = httpx.post(
            url + "/predict", json={"instances": [{"array": ee_encode(t)} for t in batch]}, timeout=30
        )
    got = decode_predictions(response)
    assert got.shape == (2, *args["outputTileSize"], len(CLASSES))
    np.testing.assert_allclose(
        got, signature(image=tf.constant(batch))["probabilities"].numpy(), rtol=1e-5, atol=1e-6
    )


# -- Plain JSON arrays -----------------------------------------------------------------------------


def test_nd_arrays_and_named_json_arrays(server, direct):
    client, _ = server
    batch = tiles(2, 12, seed=4)
    nd = predict(client, [t.tolist() for t in batch])
    assert nd.status_code == 200, nd.text
    np.testing.assert_allclose(np.array(nd.json()["predictions"]), direct(batch), rtol=1e-5, atol=1e-6)
    named = predict(client, [{"array": t.tolist()} for t in batch])
    assert named.status_code == 200, named.text
    got = np.array([[p[name] for name in CLASSES] for p in named.json()["predictions"]]).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, direct(batch), rtol=1e-5, atol=1e-6)


def test_tiles_of_different_sizes_in_one_request(server, direct):
    client, _ = server
    small, large = tiles(1, 16, seed=5)[0], tiles(1, 24, seed=6)[0]
    response = predict(client, [{"array": ee_encode(small)}, {"array": ee_encode(large)}])
    first, second = (decode_prediction(p) for p in response.json()["predictions"])
    np.testing.assert_allclose(first, direct(small[None])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second, direct(large[None])[0], rtol=1e-5, atol=1e-6)


# -- Parsing ---------------------------------------------------------------------------------------

_LONG = ee_encode(tiles(1, 24, seed=9)[0])  # > LONG_STRING_BYTES


def plain(value):
    """`value` with the memoryviews of parse_request turned back into str, to compare with orjson."""
    if isinstance(value, memoryview):
        return bytes(value).decode()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    "request_",
    [
        {"instances": [{"array": _LONG}, {"array": _LONG[:-1]}], "parameters": {"k": 'a "quoted" \\ value'}},
        {"instances": [{"array": "short"}], "note": "x" * 5000},  # a long string that is not an input
        {"instances": [{"array": _LONG}], "note": "ends in backslash \\"},
        {"instances": [{"array": "\\" + "A" * 5000}]},  # a long string with an escape is parsed as usual
        {"instances": [{_LONG: 1}]},  # a long key
        {"instances": [_LONG]},
    ],
)
def test_parse_request_agrees_with_a_json_parser(request_):
    body = json.dumps(request_).encode()
    assert plain(prediction_server.parse_request(body)) == json.loads(body)
    spaced = json.dumps(request_, indent=2).encode()
    assert plain(prediction_server.parse_request(spaced)) == json.loads(spaced)


def _protos_a_client_may_send() -> list[tuple[str, bytes]]:
    """Serialized TensorProtos: dense ones TensorFlow writes, and ones the header reader must leave
    to protobuf (values in repeated fields, named or unknown dimensions, extra fields, broken bytes)."""
    from tensorflow.core.framework import tensor_pb2

    rng = np.random.default_rng(3)
    protos = []
    for dtype, shape in [
        (np.float32, (256, 256, 13)),
        (np.float32, (3, 1, 2)),
        (np.float64, (4, 5, 2)),
        (np.int16, (130, 2)),
        (np.uint8, (2, 2, 2)),
    ]:
        value = (rng.random(shape) * 100).astype(dtype)
        protos.append(
            (f"dense {np.dtype(dtype).name} {shape}", tf.make_tensor_proto(value).SerializeToString())
        )
    # TensorFlow writes a scalar's value in float_val and an empty tensor without content.
    protos.append(("a scalar", tf.make_tensor_proto(np.float32(2.5)).SerializeToString()))
    protos.append(("an empty tensor", tf.make_tensor_proto(np.zeros((0, 3), np.float32)).SerializeToString()))
    dense = tf.make_tensor_proto(np.arange(6, dtype=np.float32).reshape(2, 3))
    in_values = tensor_pb2.TensorProto(dtype=dense.dtype, tensor_shape=dense.tensor_shape)
    in_values.float_val.extend(range(6))
    named = tensor_pb2.TensorProto.FromString(dense.SerializeToString())
    named.tensor_shape.dim[0].name = "rows"
    versioned = tensor_pb2.TensorProto.FromString(dense.SerializeToString())
    versioned.version_number = 7
    unknown = tensor_pb2.TensorProto.FromString(dense.SerializeToString())
    unknown.tensor_shape.dim[1].size = -1
    with_string = tensor_pb2.TensorProto.FromString(dense.SerializeToString())
    with_string.string_val.append(b"x")
    raw = dense.SerializeToString()
    protos += [
        ("values in float_val", in_values.SerializeToString()),
        ("a named dimension", named.SerializeToString()),
        ("a version number", versioned.SerializeToString()),
        ("an unknown dimension", unknown.SerializeToString()),
        ("an extra field", with_string.SerializeToString()),
        ("the content given twice", raw + raw[raw.index(b"\x22") :]),
        ("truncated", raw[:-5]),
        ("too few bytes of content", raw.replace(b"\x22\x18", b"\x22\x14")[:-4]),
        ("not a protobuf", b"\xff" * 40),
    ]
    return protos


@pytest.mark.parametrize(
    "name,raw", _protos_a_client_may_send(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_tensors_read_by_hand_are_what_protobuf_reads(name, raw):
    """decode_tensor reads dense TensorProtos' headers itself and takes the pixels where they lie; on
    every other proto it agrees with protobuf's parse (values, or the BadRequest)."""
    from tensorflow.core.framework import tensor_pb2

    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    if name.startswith("dense"):
        assert prediction_server._dense_tensor(raw) is not None  # the fast path is taken
    try:
        expected = tf.make_ndarray(tensor_pb2.TensorProto.FromString(raw))
    except Exception:
        expected = None
    try:
        got = prediction_server.decode_tensor(encoded)
    except prediction_server.BadRequest:
        got = None
    if expected is None or got is None:
        assert got is None, name  # protobuf cannot read it (or it is inconsistent): a BadRequest
        return
    assert got.shape == expected.shape and got.dtype == expected.dtype, name
    np.testing.assert_array_equal(got, expected)


def test_long_base64_strings_are_read_in_place():
    request = prediction_server.parse_request(json.dumps({"instances": [{"array": _LONG}]}).encode())
    assert isinstance(request["instances"][0]["array"], memoryview)


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [{"array": "' + b"A" * 5000 + b"}]}",  # unterminated string
        b'{"instances": [{"array": "' + b"A" * 5000 + b'"}]',  # unbalanced
        b'{"instances": [{"array": "' + b"A" * 5000 + b'" "x"}]}',
    ],
)
def test_malformed_bodies_with_long_strings_are_not_json(body):
    with pytest.raises(prediction_server.BadRequest, match="not JSON"):
        prediction_server.parse_request(body)


# -- Bad requests ----------------------------------------------------------------------------------

_GOOD = tiles(1, 8, seed=7)[0]
_STRING_PROTO = base64.urlsafe_b64encode(
    tf.make_tensor_proto(np.array([b"a", b"b"])).SerializeToString()
).decode()
_SHORT_PROTO = tf.make_tensor_proto(_GOOD)
_SHORT_PROTO.tensor_content = _SHORT_PROTO.tensor_content[:-4]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not JSON"),
        (b'{"inputs": []}', '{"instances": [...]}'),
        (b'{"instances": []}', "non-empty list"),
        (json.dumps({"instances": [{"image": ee_encode(_GOOD)}]}).encode(), "lacks the input 'array'"),
        (json.dumps({"instances": [{"array": ee_encode(_GOOD), "B2": 1}]}).encode(), "unknown inputs ['B2']"),
        (b'{"instances": [{"array": "not*base64!"}]}', "not web-safe Base64"),
        (b'{"instances": [{"array": "' + b"AAA*" * 2000 + b'"}]}', "not web-safe Base64"),
        (b'{"instances": [{"array": "' + "\u00e9".encode() * 3000 + b'"}]}', "not web-safe Base64"),
        (
            json.dumps(
                {"instances": [{"array": base64.urlsafe_b64encode(b"\xff\xfe garbage").decode()}]}
            ).encode(),
            "not a serialized TensorProto",
        ),
        (json.dumps({"instances": [{"array": _STRING_PROTO}]}).encode(), "dtype DT_STRING"),
        (
            json.dumps(
                {
                    "instances": [
                        {"array": base64.urlsafe_b64encode(_SHORT_PROTO.SerializeToString()).decode()}
                    ]
                }
            ).encode(),
            "tensor_content holds",
        ),
        (json.dumps({"instances": [{"array": ee_encode(_GOOD[..., :2])}]}).encode(), "has 2 bands"),
        (json.dumps({"instances": [{"array": ee_encode(_GOOD[..., 0])}]}).encode(), "has shape (8, 8)"),
        (json.dumps({"instances": [{"array": ee_encode(_GOOD[:0])}]}).encode(), "empty tile"),
        (json.dumps({"instances": [{"array": 3}]}).encode(), "is a JSON int"),
        (json.dumps({"instances": ["abc"]}).encode(), "is a JSON str"),
        (json.dumps({"instances": [[[1.0, 2.0, 3.0], [1.0]]]}).encode(), "not a rectangular array"),
        (
            json.dumps({"instances": [{"array": ee_encode(_GOOD)}, _GOOD.tolist()]}).encode(),
            "Instance 1 is ND_ARRAYS but instance 0 is SERIALIZED_TF_TENSORS",
        ),
    ],
)
def test_bad_payloads_get_400_naming_the_problem_and_the_server_keeps_serving(server, direct, body, message):
    client, _ = server
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    good = decode_predictions(predict(client, [{"array": ee_encode(_GOOD)}]))
    np.testing.assert_allclose(good, direct(_GOOD[None]), rtol=1e-5, atol=1e-6)


def test_oversized_requests_get_413(server):
    client, info = server
    limit = info["maxRequestBytes"]
    # Larger than the socket buffers: the client still gets the 413, not a reset connection.
    big = json.dumps({"instances": [{"array": "A" * (8 * limit)}]}).encode()
    response = client.post("/predict", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and str(limit) in response.json()["error"]

    def chunked():  # no Content-Length: the limit applies while reading
        for start in range(0, len(big), 256 * 1024):
            yield big[start : start + 256 * 1024]

    response = client.post("/predict", content=chunked(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert predict(client, [{"array": ee_encode(_GOOD)}]).status_code == 200


def test_limits_can_be_set_per_server(model_dir):
    app = prediction_server.create_app(
        lambda: prediction_server.Predictor.load(str(model_dir)), max_request_bytes=2000
    )
    with prediction_server.running_server(app) as url:
        assert prediction_server.wait_until_ready(url, timeout=60)["maxRequestBytes"] == 2000
        body = {"instances": [{"array": ee_encode(tiles(1, 16)[0])}]}
        response = httpx.post(url + "/predict", json=body, timeout=30)
        assert response.status_code == 413 and "--max-request-bytes" in response.json()["error"]


# -- Health and loading ----------------------------------------------------------------------------


def test_health_answers_only_once_the_model_is_loaded(model_dir):
    release = threading.Event()

    def slow_load() -> prediction_server.Predictor:
        assert release.wait(timeout=60)
        return prediction_server.Predictor.load(str(model_dir))

    app = prediction_server.create_app(slow_load, health_route="/ping", predict_route="/v1/models/m:predict")
    with prediction_server.running_server(app) as url:
        loading = httpx.get(url + "/ping", timeout=10)
        assert loading.status_code == 503 and loading.json() == {"status": "loading"}
        early = httpx.post(url + "/v1/models/m:predict", json={"instances": [_GOOD.tolist()]}, timeout=10)
        assert early.status_code == 503 and "not loaded" in early.json()["error"]
        release.set()
        assert prediction_server.wait_until_ready(url, "/ping", timeout=60)["status"] == "ready"
        response = httpx.post(url + "/v1/models/m:predict", json={"instances": [_GOOD.tolist()]}, timeout=30)
        assert response.status_code == 200


def test_a_model_that_fails_to_load_is_reported(tmp_path):
    (tmp_path / "model.json").write_text(
        json.dumps(
            {"format": "terrabeam-model/1", "bands": BANDS, "classes": CLASSES, "mode": "segmentation"}
        )
    )
    errors = []
    app = prediction_server.create_app(
        lambda: prediction_server.Predictor.load(str(tmp_path)), on_load_error=errors.append
    )
    with prediction_server.running_server(app) as url:
        with pytest.raises(RuntimeError, match="SavedModel"):
            prediction_server.wait_until_ready(url, timeout=60)
        assert httpx.get(url + "/health", timeout=10).json()["status"] == "failed"
    assert len(errors) == 1 and "re-export" in str(errors[0])


# -- Load ------------------------------------------------------------------------------------------


def test_a_burst_of_concurrent_requests_is_answered_correctly(server, direct):
    client, _ = server
    count = 200
    batch = tiles(count, 16, seed=8)
    expected = direct(batch)
    bodies = [json.dumps({"instances": [{"array": ee_encode(t)}]}).encode() for t in batch]
    deadline = time.monotonic() + 60

    def call(i: int) -> tuple[int, int, np.ndarray | str]:
        assert time.monotonic() < deadline
        response = client.post("/predict", content=bodies[i], headers={"content-type": "application/json"})
        if response.status_code != 200:
            return i, response.status_code, response.text
        return i, 200, decode_prediction(response.json()["predictions"][0])

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, range(count), timeout=90))
    assert [status for _, status, _ in results] == [200] * count, [r for r in results if r[1] != 200][:3]
    for i, _, got in results:
        np.testing.assert_allclose(got, expected[i], rtol=1e-5, atol=1e-6)


# -- Command line ----------------------------------------------------------------------------------


def test_vertex_ai_environment_sets_port_routes_and_model():
    env = {
        "AIP_HTTP_PORT": "7080",
        "AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2",
        "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict",
        "AIP_STORAGE_URI": "gs://bucket/model",
        "PORT": "9999",
    }
    args = serve.parse_args([], env)
    assert (args.model, args.port, args.host) == ("gs://bucket/model", 7080, "0.0.0.0")
    assert args.health_route == env["AIP_HEALTH_ROUTE"] and args.predict_route == env["AIP_PREDICT_ROUTE"]
    cloud_run = serve.parse_args(["--model", "m"], {"PORT": "9999"})
    assert (cloud_run.port, cloud_run.health_route, cloud_run.predict_route) == (9999, "/health", "/predict")
    assert serve.parse_args(["--model", "m", "--port", "1234"], env).port == 1234
    with pytest.raises(SystemExit):
        serve.parse_args([], {})


def test_missing_model_folder_exits_with_status_2(tmp_path, capsys):
    assert serve.main(["--model", str(tmp_path / "nowhere"), "--host", "127.0.0.1", "--port", "0"]) == 2
    assert "error:" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_python_dash_m_model_serve_under_vertex_ai_variables(model_dir, direct):
    port = free_port()
    env = {
        **os.environ,
        "AIP_HTTP_PORT": str(port),
        "AIP_HEALTH_ROUTE": "/v1/endpoints/1/deployedModels/2",
        "AIP_PREDICT_ROUTE": "/v1/endpoints/1/deployedModels/2:predict",
        "AIP_STORAGE_URI": str(model_dir),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "model.serving.serve", "--host", "127.0.0.1"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        prediction_server.wait_until_ready(url, env["AIP_HEALTH_ROUTE"], timeout=90)
        response = httpx.post(
            url + env["AIP_PREDICT_ROUTE"], json={"instances": [{"array": ee_encode(_GOOD)}]}, timeout=30
        )
        np.testing.assert_allclose(decode_predictions(response), direct(_GOOD[None]), rtol=1e-5, atol=1e-6)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode(errors="replace")
    # uvicorn shuts down gracefully, then lets the signal end the process (as Cloud Run expects).
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "loaded in" in output and "Prediction server stopped." in output


def test_the_command_keeps_the_servers_names():
    """`serve.Predictor` and the rest still work (benchmarks and scripts use them), loaded on first use."""
    assert serve.Predictor is prediction_server.Predictor and serve.create_app is prediction_server.create_app
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        serve.nothing  # noqa: B018


def test_without_the_serve_extra_help_works_and_serving_says_what_to_install():
    code = hiding(["orjson"]) + textwrap.dedent(
        """
        from pipelines.cli import main
        print("help:", main(["serve", "--help"]))
        print("serve:", main(["serve", "--model", "nowhere"]))
        """
    )
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: terrabeam serve") and "help: 0" in result.stdout
    assert "serve: 2" in result.stdout
    assert result.stderr.startswith(
        "error: the prediction server needs starlette, uvicorn, pybase64 and orjson"
    )
    assert "pip install 'terrabeam[serve]'" in result.stderr and "'orjson'" in result.stderr
    assert "Traceback" not in result.stderr


SERVING_IMAGE = REPO / "model" / "serving" / "Dockerfile.serve"


def serving_image() -> tuple[list[str], list[str]]:
    """(packages its pip line installs, repository folders it copies) of model/serving/Dockerfile.serve."""
    text = SERVING_IMAGE.read_text()
    pip = re.search(r"pip install -c requirements\.txt ([^\\&\n]+)", text)
    assert pip, "no 'pip install -c requirements.txt ...' line in Dockerfile.serve"
    return pip.group(1).split(), re.findall(r"^COPY (\w+) \1$", text, re.M)


@pytest.mark.slow
def test_the_serving_image_holds_everything_the_server_imports(model_dir, tmp_path):
    """The server runs from a copy of the folders the image copies, with only the packages its pip line
    installs (and their dependencies): every other package is hidden, Beam and rasterio included."""
    packages, folders = serving_image()
    assert sorted(folders) == ["model", "transforms"]
    assert {"tensorflow-cpu", "orjson", "pybase64", "starlette", "uvicorn", "httptools", "uvloop"} <= set(
        packages
    )
    app = tmp_path / "app"
    for folder in folders:
        shutil.copytree(REPO / folder, app / folder, ignore=shutil.ignore_patterns("__pycache__"))
    body = json.dumps({"instances": [{"array": ee_encode(tiles(1, 32)[0])}]})
    code = only_installed(packages, folders) + textwrap.dedent(
        f"""
        import json, sys, time, urllib.error, urllib.request
        from model.serving import serve

        args = serve.parse_args(["--model", {str(model_dir)!r}])
        app = serve.create_app(lambda: serve.Predictor.load(args.model))
        with serve.running_server(app) as url:
            for _ in range(600):
                try:
                    urllib.request.urlopen(url + args.health_route)
                    break
                except urllib.error.HTTPError as e:  # 503 while the model loads
                    health = json.loads(e.read())
                    if health["status"] == "failed":
                        sys.exit(health["error"])
                    time.sleep(0.1)
            request = urllib.request.Request(url + args.predict_route, {body!r}.encode(), method="POST")
            answer = json.loads(urllib.request.urlopen(request).read())
        loaded = sorted(sys.modules)
        for absent in ("apache_beam", "rasterio", "google.cloud.storage", "pipelines"):  # the test hides them
            try:
                __import__(absent)
                sys.exit(absent + " is not hidden")
            except ModuleNotFoundError:
                pass
        print(json.dumps({{"file": serve.__file__, "predictions": len(answer["predictions"]), "modules": loaded}}))
        """
    )
    environment = {k: v for k, v in env().items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=app, env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["file"].startswith(str(app)) and seen["predictions"] == 1
    tops = {name.split(".")[0] for name in seen["modules"]}
    assert {"model", "transforms", "tensorflow", "starlette", "uvicorn", "orjson"} <= tops
    assert {"httptools", "uvloop"} <= tops  # uvicorn's C parser and event loop, which it takes when present
    assert not tops & {"apache_beam", "rasterio", "pipelines", "httpx", "ee"}
