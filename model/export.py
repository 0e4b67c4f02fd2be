"""Writing and reading a model folder: the contract between training and every kind of prediction.

`export_model(model, model_dir, metadata)` writes:

    model.json          what the model expects and produces (written last: its presence means complete)
    saved_model/        signature `serving_default`: `image` float32 (batch, H, W, bands), raw values
                        in model.json band order -> `probabilities` float32 (batch, H, W, classes)
    eeified/            the same model for Earth Engine (`ee.Model.fromVertexAi`, SERIALIZED_TF_TENSORS):
                        `array` string (batch,) -> `probabilities` string (batch,), each string the
                        web-safe Base64 of a serialized TensorProto, (H, W, bands) in, (H, W, classes) out
    earthengine.json    the matching `ee.Model.fromVertexAi` arguments
    keras/model.keras   the Keras model, for fine-tuning and evaluation

Both SavedModels are written with Keras 3's `ExportArchive`; loading them needs only TensorFlow.
Paths may be local or gs:// (everything goes through tf.io.gfile / TensorFlow's file systems).
"""

from __future__ import annotations

import json
import math
import posixpath
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from model.architecture import INPUT_NAME, MODES, OUTPUT_NAME, SEGMENTATION, receptive_field
from model.errors import ModelError, ModelNotFoundError

MODEL_FORMAT = "terrabeam-model/1"
MODEL_JSON = "model.json"
SAVED_MODEL_DIR = "saved_model"
EEIFIED_DIR = "eeified"
EARTHENGINE_JSON = "earthengine.json"
KERAS_MODEL = "keras/model.keras"
SIGNATURE = "serving_default"

# Earth Engine sends an image made with `toArray()` as one array band, named `array`, and reads each
# output of the signature into the `outputBands` entry of the same name.
EE_INPUT_NAME = "array"
EE_OUTPUT_NAME = OUTPUT_NAME

# Vertex AI online prediction rejects requests over 1.5 MB ("Quotas and limits" page of Vertex AI);
# Earth Engine batches tiles into requests up to maxPayloadBytes, so one Base64 tile must fit.
VERTEX_AI_MAX_REQUEST_BYTES = 1_500_000
# Tile sides are kept to multiples of this, a common U-Net pooling factor.
EE_TILE_MULTIPLE = 16

REQUIRED_METADATA = ("mode", "bands", "classes", "patch_size", "crs", "scale")

# TensorProto dtype enum values (tensorflow/core/framework/types.proto) of the pixel types Earth Engine
# can send; decoded tensors of any of them are cast to float32.
_EE_INPUT_DTYPES = (
    tf.float32,
    tf.float64,
    tf.int32,
    tf.uint8,
    tf.int16,
    tf.int8,
    tf.int64,
    tf.uint16,
    tf.uint32,
)


def join_path(*parts: str) -> str:
    """Join path parts of a local or gs:// location."""
    return posixpath.join(*parts) if "://" in parts[0] else "/".join(p.rstrip("/") for p in parts)


def write_json(path: str, value: Any) -> None:
    """Write `value` as indented JSON (local or gs://)."""
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def export_model(keras_model: keras.Model, model_dir: str, metadata: Mapping[str, Any]) -> None:
    """Write the model folder (see module docstring); `metadata` holds at least `REQUIRED_METADATA`.

    `format`, `receptive_field` and (unless given) `architecture` and `metrics` are filled in here.
    """
    info = _complete_metadata(keras_model, metadata)
    tf.io.gfile.makedirs(join_path(model_dir, posixpath.dirname(KERAS_MODEL)))
    keras_model.save(join_path(model_dir, KERAS_MODEL))
    _export_serving(keras_model, join_path(model_dir, SAVED_MODEL_DIR), len(info["bands"]))
    _export_eeified(keras_model, join_path(model_dir, EEIFIED_DIR), len(info["bands"]))
    write_json(join_path(model_dir, EARTHENGINE_JSON), earthengine_config(info))
    write_json(join_path(model_dir, MODEL_JSON), info)


def _complete_metadata(keras_model: keras.Model, metadata: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ModelError(f"Model metadata lacks {missing}; export_model needs {list(REQUIRED_METADATA)}.")
    info = dict(metadata)
    if info["mode"] not in MODES:
        raise ModelError(f"Model mode must be one of {list(MODES)}, got {info['mode']!r}.")
    bands, classes = list(info["bands"]), list(info["classes"])
    in_shape, out_shape = keras_model.input_shape, keras_model.output_shape
    if len(in_shape) != 4 or in_shape[-1] != len(bands):
        raise ModelError(
            f"The model takes input of shape {in_shape}, but the metadata names {len(bands)} bands "
            f"{bands}; export a model built for these bands."
        )
    if len(out_shape) != 4 or out_shape[-1] != len(classes):
        raise ModelError(
            f"The model outputs shape {out_shape}, but the metadata names {len(classes)} classes; "
            "export a model built for these classes."
        )
    rf = receptive_field(keras_model)
    info.update(
        format=MODEL_FORMAT,
        bands=bands,
        classes=classes,
        patch_size=int(info["patch_size"]),
        scale=float(info["scale"]),
        receptive_field=int(info["patch_size"]) if rf is None else rf,
    )
    info.setdefault("architecture", keras_model.name)
    info.setdefault("metrics", {})
    return info


def _export_serving(keras_model: keras.Model, path: str, num_bands: int) -> None:
    archive = keras.export.ExportArchive()
    archive.track(keras_model)

    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: keras_model(image, training=False)}

    archive.add_endpoint(
        SIGNATURE,
        serve,
        input_signature=[tf.TensorSpec((None, None, None, num_bands), tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(path, verbose=False)


def decode_ee_tensor(encoded: tf.Tensor, num_bands: int) -> tf.Tensor:
    """One Earth Engine tile: web-safe Base64 of a serialized TensorProto -> float32 (H, W, bands).

    parse_tensor needs the dtype up front, so it is read from the proto: a serialized TensorProto
    starts with field 1 (dtype) as tag byte 0x08 then the enum value (one byte for all pixel types).
    """
    proto = tf.io.decode_base64(encoded)
    dtype_enum = tf.cast(tf.io.decode_raw(tf.strings.substr(proto, 1, 1), tf.uint8)[0], tf.int32)
    # switch_case wants branch indices 0..n-1: map each enum value to its position (others to n, the
    # default branch, which parses as float32 and so reports the type mismatch).
    positions = [len(_EE_INPUT_DTYPES)] * 256
    for i, dtype in enumerate(_EE_INPUT_DTYPES):
        positions[dtype.as_datatype_enum] = i

    def parser(dtype: tf.DType):
        return lambda: tf.cast(tf.io.parse_tensor(proto, dtype), tf.float32)

    branch = tf.gather(tf.constant(positions, tf.int32), dtype_enum)
    tile = tf.switch_case(branch, [parser(d) for d in _EE_INPUT_DTYPES], default=parser(tf.float32))
    return tf.ensure_shape(tile, (None, None, num_bands))


def encode_ee_tensor(tensor: tf.Tensor) -> tf.Tensor:
    """The inverse for outputs: a float32 tensor -> web-safe Base64 of its serialized TensorProto."""
    return tf.io.encode_base64(tf.io.serialize_tensor(tensor))


def _export_eeified(keras_model: keras.Model, path: str, num_bands: int) -> None:
    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    tile_spec = tf.TensorSpec((None, None, num_bands), tf.float32)

    def serve(array: tf.Tensor) -> dict[str, tf.Tensor]:
        tiles = tf.map_fn(lambda s: decode_ee_tensor(s, num_bands), array, fn_output_signature=tile_spec)
        probabilities = keras_model(tiles, training=False)
        encoded = tf.map_fn(encode_ee_tensor, probabilities, fn_output_signature=tf.string)
        return {EE_OUTPUT_NAME: encoded}

    archive.add_endpoint(
        SIGNATURE, serve, input_signature=[tf.TensorSpec((None,), tf.string, name=EE_INPUT_NAME)]
    )
    archive.write_out(path, verbose=False)


def earthengine_config(info: Mapping[str, Any]) -> dict[str, Any]:
    """The `ee.Model.fromVertexAi` arguments that match the EE-ified model (JSON-ready).

    The overlap is the total over both edges ([2N, 2N] for an N-pixel border, as Earth Engine defines
    it); N is half the receptive field, so every kept pixel saw all of its context. Tiles are the
    largest multiple of EE_TILE_MULTIPLE whose Base64 payload fits one Vertex AI request
    (at least the overlap plus EE_TILE_MULTIPLE).
    """
    bands = list(info["bands"])
    segmentation = info["mode"] == SEGMENTATION
    # float32, Base64-inflated; the response (classes per pixel) must fit as well as the request.
    bytes_per_pixel = 4 * max(len(bands), len(info["classes"])) * 4 / 3
    fitting = int(math.sqrt(VERTEX_AI_MAX_REQUEST_BYTES * 0.95 / bytes_per_pixel))
    if segmentation:
        overlap = 2 * math.ceil(int(info["receptive_field"]) / 2)
        tile = max(fitting // EE_TILE_MULTIPLE * EE_TILE_MULTIPLE, overlap + EE_TILE_MULTIPLE)
    else:
        overlap, tile = 0, int(info["patch_size"])
    args: dict[str, Any] = {
        "endpoint": "projects/PROJECT/locations/REGION/endpoints/ENDPOINT_ID",
        "inputTileSize": [tile, tile],
        "inputOverlapSize": [overlap, overlap],
        "inputTypeOverride": {EE_INPUT_NAME: {"type": "PixelType", "precision": "float", "dimensions": 1}},
        "proj": {"crs": info["crs"], "scale": float(info["scale"])},
        "fixInputProj": True,
        "outputBands": {EE_OUTPUT_NAME: {"type": "float", "dimensions": 1}},
        "maxPayloadBytes": VERTEX_AI_MAX_REQUEST_BYTES,
        "payloadFormat": "SERIALIZED_TF_TENSORS",
    }
    if not segmentation:
        args["outputTileSize"] = [1, 1]
    return {
        "inputBands": bands,
        "classes": list(info["classes"]),
        "fromVertexAi": args,
        "usage": (
            "image.select(inputBands).float().toArray() -> ee.Model.fromVertexAi(**fromVertexAi with "
            "proj=ee.Projection(crs).atScale(scale) and outputBands types as ee.PixelType) -> "
            ".predictImage(...) gives a 'probabilities' array band; .arrayArgmax().arrayGet(0) is the "
            "class index into `classes`. See model/README.md."
        ),
    }


def load_model_metadata(model_dir: str) -> dict[str, Any]:
    """Read `<model_dir>/model.json` (local or gs://)."""
    path = model_dir if model_dir.endswith(".json") else join_path(model_dir, MODEL_JSON)
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            info = json.loads(f.read())
    except (tf.errors.NotFoundError, tf.errors.PermissionDeniedError, OSError) as e:
        raise ModelNotFoundError(
            f"No readable model metadata at {path!r} ({e.__class__.__name__}). Point it at a folder "
            "written by `python -m model.train --output <model_dir>`."
        ) from None
    except ValueError as e:
        raise ModelNotFoundError(f"{path!r} is not valid JSON ({e}); re-export the model.") from None
    if not isinstance(info, dict) or info.get("format") != MODEL_FORMAT:
        found = info.get("format") if isinstance(info, dict) else type(info).__name__
        raise ModelNotFoundError(f"{path!r} is not a terrabeam model description (format {found!r}).")
    return info


def load_keras_model(model_dir: str) -> keras.Model:
    """The Keras model of a model folder (for fine-tuning or evaluation; prediction can use saved_model/)."""
    # The custom layers are registered by importing model.architecture (done at the top of this module).
    path = join_path(model_dir, KERAS_MODEL)
    if not tf.io.gfile.exists(path):
        raise ModelNotFoundError(
            f"No Keras model at {path!r}. Point it at a folder written by `python -m model.train`."
        )
    return keras.saving.load_model(path)
