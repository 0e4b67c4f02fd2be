"""A model folder as prediction reads it, checked before the job starts: its model.json, its label
scheme, its SavedModel's signature, and whether the tiling suits the model.

TensorFlow loads only once the folder holds a model to read.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from apache_beam.io.filesystems import FileSystems

from model.errors import ModelError
from pipelines.shell import UsageError
from transforms.contracts.label_scheme import LabelScheme, LabelSchemeError, scheme_from_metadata
from transforms.geometry.tiling import TilingSpec
from transforms.inference import ModelSignatureError, load_saved_model

# What marks a model folder (model.export.MODEL_JSON; importing model.export loads TensorFlow).
MODEL_JSON = "model.json"


def model_info(model_dir: str, default_model: str) -> dict[str, Any]:
    """The model folder's model.json, checked. `default_model`: the demo model that --model defaults to,
    which `make demo` writes."""
    if not FileSystems.exists(f"{model_dir}/{MODEL_JSON}"):
        if model_dir == default_model:
            raise UsageError(
                f"No demo model at {default_model!r}: run `python -m pipelines.extract` and "
                "`python -m model.train` first (`make demo` runs all three), or pass --model."
            )
        raise UsageError(
            f"--model {model_dir!r} holds no model (no {MODEL_JSON} in it). Train one into it with "
            f"`terrabeam train --output {model_dir}` (`terrabeam train --help` lists the training "
            "options), or point --model at a folder that `terrabeam train` wrote."
        )
    from model.export import load_model_metadata

    try:
        info = load_model_metadata(model_dir)
    except ModelError as e:
        raise UsageError(str(e)) from None
    missing = [k for k in ("mode", "bands", "classes", "crs", "scale") if k not in info]
    if missing:
        raise UsageError(f"{model_dir}/model.json lacks {missing}; re-export the model.")
    return info


def label_scheme(info: dict[str, Any], model_dir: str) -> LabelScheme:
    """The classes the model predicts, as model.json names them."""
    try:
        return scheme_from_metadata(info)
    except LabelSchemeError as e:
        raise UsageError(f"{model_dir}/model.json: {e}") from None


def check_mode(info: dict[str, Any], spec: TilingSpec) -> None:
    """A classification model predicts whole patches: tiles of its patch size, without overlap."""
    if info["mode"] == "classification" and (spec.overlap or spec.tile_size != info.get("patch_size")):
        raise UsageError(
            f"The model classifies whole {info.get('patch_size')}-pixel patches: predict with "
            f"--tile-size {info.get('patch_size')} --overlap 0 (each tile's class fills its tile)."
        )


def check_signature(model_dir: str, info: dict[str, Any], spec: TilingSpec) -> None:
    """The SavedModel loads, takes the bands model.json names, and takes tiles of --tile-size."""
    try:
        model = load_saved_model(model_dir)
    except ModelSignatureError as e:
        raise UsageError(str(e)) from None
    shape = model.input_shape()
    if len(shape) != 4 or shape[-1] not in (None, len(info["bands"])):
        raise UsageError(
            f"The SavedModel takes input of shape {shape} but model.json names {len(info['bands'])} bands; "
            "re-export the model."
        )
    fixed = [n for n in shape[1:3] if n is not None]
    if fixed and any(n != spec.tile_size for n in fixed):
        raise UsageError(
            f"The SavedModel only takes {shape[1]}×{shape[2]} inputs; pass --tile-size {fixed[0]}."
        )


def warn_receptive_field(info: dict[str, Any], spec: TilingSpec) -> None:
    """Warn about tilings that make a tile's prediction differ from a whole-image prediction."""
    field = info.get("receptive_field")
    if info["mode"] != "segmentation":
        return
    if field and spec.border < field // 2:
        logging.warning(
            "--overlap %d leaves a %d-pixel border, less than half the model's receptive field (%d): "
            "tile edges may show seams; use --overlap %d or more.",
            spec.overlap,
            spec.border,
            field,
            2 * math.ceil(field / 2),
        )
    # A U-Net pools on a grid anchored at each tile's top-left pixel: tiles whose origins are not on a
    # common multiple of its pooling factor see shifted grids and disagree on a few uncertain pixels.
    depth = re.match(r"unet_d(\d+)", str(info.get("architecture", "")))
    multiple = 2 ** int(depth.group(1)) if depth else 1
    if spec.step % multiple or spec.border % multiple:
        logging.warning(
            "The model pools by %d: with --tile-size minus --overlap (%d) and half the overlap (%d) "
            "multiples of %d, every tile sees the same pooling grid (e.g. --tile-size 256 --overlap 64).",
            multiple,
            spec.step,
            spec.border,
            multiple,
        )
