"""Tiny Keras models exported as terrabeam model folders, for prediction tests."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from model.export import export_model

BANDS = ["red", "nir", "elevation"]


CLASSES = ["water", "trees", "grass", "crops"]


def image_of(scene) -> np.ndarray:
    return np.moveaxis(scene.pixels, 0, -1)


def export(model: keras.Model, path: Path, bands=BANDS, classes=CLASSES, crs="EPSG:32632", scale=10.0) -> str:
    metadata = {
        "mode": "segmentation",
        "bands": list(bands),
        "classes": list(classes),
        "patch_size": 32,
        "crs": crs,
        "scale": scale,
    }
    export_model(model, str(path), metadata)
    return str(path)


def conv_model(image: np.ndarray, num_classes: int = len(CLASSES), seed: int = 0) -> keras.Model:
    """A purely convolutional model: normalization, two 3×3 convolutions, softmax."""
    keras.utils.set_random_seed(seed)
    flat = image.reshape(-1, image.shape[-1])
    inputs = keras.Input((None, None, image.shape[-1]), name="image")
    x = keras.layers.Normalization(mean=flat.mean(0).tolist(), variance=flat.var(0).tolist())(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(num_classes, 3, padding="same")(x)
    outputs = keras.layers.Softmax(name="probabilities")(x)
    return keras.Model(inputs, outputs)
