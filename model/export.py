"""Writing and reading a model folder: the contract between training and every kind of prediction.

`export_model(model, model_dir, metadata)` writes:

    model.json          what the model expects and produces (written last: its presence means complete)
    saved_model/        signature `serving_default`: `image` float32 (batch, H, W, bands), raw values
                        in model.json band order -> `probabilities` float32 (batch, H, W, classes)
    eeified/            the same model for Earth Engine (`ee.Model.fromVertexAi`, SERIALIZED_TF_TENSORS),
                        written by model.serving.eeify: `array` string (batch,) -> one output per class, named
                        after it, string (batch,); each string the web-safe Base64 of a serialized
                        TensorProto, (H, W, bands) in, the class's (H, W) probabilities out
    earthengine.json    the matching `ee.Model.fromVertexAi` arguments (outputBands: one band per class)
    keras/model.keras   the Keras model, for fine-tuning and evaluation

Both SavedModels are written by model/signature.py; loading them needs only TensorFlow.
Paths may be local or gs:// (everything goes through tf.io.gfile / TensorFlow's file systems).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from model.architecture import INPUT_NAME, MODES, OUTPUT_NAME, SEGMENTATION, receptive_field
from model.errors import ModelError, ModelNotFoundError
from model.losses import SegmentationLoss
from model.serving import eeify
from model.signature import write_signature
from transforms.contracts.label_scheme import scheme_from_metadata

# Imported under the names model.train and model.evaluate use.
from transforms.io.files import join as join_path
from transforms.io.files import write_json

MODEL_FORMAT = "terrabeam-model/1"
MODEL_JSON = "model.json"
SAVED_MODEL_DIR = "saved_model"
EEIFIED_DIR = eeify.EEIFIED_DIR
EARTHENGINE_JSON = eeify.EARTHENGINE_JSON
KERAS_MODEL = "keras/model.keras"
SIGNATURE = "serving_default"

# The Earth Engine wire format and its limits live in model.serving.eeify (one implementation for the project's
# models and any other); re-exported here for callers of the model folder contract.
EE_INPUT_NAME = eeify.EE_INPUT_NAME
VERTEX_AI_MAX_REQUEST_BYTES = eeify.VERTEX_AI_MAX_REQUEST_BYTES
EE_TILE_MULTIPLE = eeify.EE_TILE_MULTIPLE
decode_ee_tensor = eeify.decode_ee_tensor
encode_ee_tensor = eeify.encode_ee_tensor

REQUIRED_METADATA = ("mode", "bands", "classes", "patch_size", "crs", "scale")


def export_model(keras_model: keras.Model, model_dir: str, metadata: Mapping[str, Any]) -> None:
    """Write the model folder (see module docstring); `metadata` holds at least `REQUIRED_METADATA`.

    `format`, `receptive_field` and (unless given) `architecture` and `metrics` are filled in here.
    """
    info = _complete_metadata(keras_model, metadata)
    tf.io.gfile.makedirs(join_path(model_dir, posixpath.dirname(KERAS_MODEL)))
    keras_model.save(join_path(model_dir, KERAS_MODEL))
    _export_serving(keras_model, join_path(model_dir, SAVED_MODEL_DIR), len(info["bands"]))
    _export_eeified(keras_model, join_path(model_dir, EEIFIED_DIR), info)
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
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: keras_model(image, training=False)}

    spec = tf.TensorSpec((None, None, None, num_bands), tf.float32, name=INPUT_NAME)
    write_signature(path, SIGNATURE, serve, [spec])


def _export_eeified(keras_model: keras.Model, path: str, info: Mapping[str, Any]) -> None:
    eeify.write_eeified(
        eeify.from_keras(keras_model), path, scheme_from_metadata(info).names, len(info["bands"])
    )


def earthengine_config(info: Mapping[str, Any]) -> dict[str, Any]:
    """The `ee.Model.fromVertexAi` arguments that match the EE-ified model (JSON-ready).

    Segmentation: the overlap is the total over both edges ([2N, 2N] for an N-pixel border, as Earth
    Engine defines it), N half the receptive field, so every kept pixel saw all of its context; tiles are
    the largest multiple of EE_TILE_MULTIPLE whose Base64 payload fits one Vertex AI request.
    Classification: tiles of the patch size, one 1x1 output pixel each.
    """
    scheme = scheme_from_metadata(info)
    if info["mode"] == SEGMENTATION:
        overlap = eeify.overlap_for(info["receptive_field"])
        side = eeify.largest_tile(len(info["bands"]), scheme.num_classes, overlap)
        tile, output_tile = [side, side], None
    else:
        overlap, tile, output_tile = 0, [int(info["patch_size"])] * 2, [1, 1]
    return eeify.earthengine_arguments(
        bands=info["bands"],
        scheme=scheme,
        tile=tile,
        overlap=overlap,
        output_tile=output_tile,
        crs=info["crs"],
        scale=info["scale"],
    )


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
    # The custom layers are registered by importing model.architecture (done at the top of this module);
    # the loss is named here, since nothing else may have imported model.losses in this process.
    path = join_path(model_dir, KERAS_MODEL)
    if not tf.io.gfile.exists(path):
        raise ModelNotFoundError(
            f"No Keras model at {path!r}. Point it at a folder written by `python -m model.train`."
        )
    return keras.saving.load_model(path, custom_objects={"terrabeam>SegmentationLoss": SegmentationLoss})
