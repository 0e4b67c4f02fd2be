"""A tiny synthetic extraction (records + manifest.json) for tests and quick trials of the model code.

Labels are blobs (each pixel takes the class of its nearest random seed point), inputs are a per-class
spectrum plus noise, and a few pixels and patches are masked the way real extractions are: label
NODATA, or every band 0 (Earth Engine's masked pixels). Written with the shared schema and manifest
code, so the model reads it exactly as it reads `pipelines.extract` output.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from transforms.contracts.label_scheme import scheme_from_metadata
from transforms.contracts.manifest import build_manifest, write_manifest
from transforms.contracts.schema import LABEL_NODATA, PatchSchema


def synthetic_patches(
    count: int, bands: int, classes: int, size: int, rng: np.random.Generator, noise: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """`count` patches: inputs (count, size, size, bands) float32, labels (count, size, size) uint8."""
    spectra = rng.uniform(500, 3000, (classes, bands))
    spread = spectra.std(axis=0) + 1.0
    yy, xx = np.mgrid[:size, :size]
    inputs = np.empty((count, size, size, bands), np.float32)
    labels = np.empty((count, size, size), np.uint8)
    for i in range(count):
        seeds = rng.uniform(0, size, (4, 2))
        seed_classes = rng.integers(0, classes, 4)
        distance = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
        labels[i] = seed_classes[np.argmin(distance, axis=-1)]
        inputs[i] = spectra[labels[i]] + rng.normal(0, noise, (size, size, bands)) * spread
    return inputs, labels


def write_synthetic_extraction(
    folder: str | Path,
    *,
    bands: Sequence[str] = ("b1", "b2", "b3"),
    classes: Sequence[str] = ("water", "trees", "built"),
    patch_size: int = 16,
    train_patches: int = 48,
    validation_patches: int = 16,
    shards: int = 2,
    seed: int = 0,
) -> str:
    """Write GZIP shards and manifest.json under `folder`; returns the folder (for --data)."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    schema = PatchSchema(tuple(bands), patch_size)
    split_files: dict[str, list[str]] = {}
    split_stats: dict[str, dict[str, list[int]]] = {}
    for split, count in (("train", train_patches), ("validation", validation_patches)):
        inputs, labels = synthetic_patches(count, len(bands), len(classes), patch_size, rng)
        labels[:, 0, :3] = LABEL_NODATA  # a few unlabelled pixels
        inputs[0] = 0.0  # one patch fully masked, as Earth Engine writes masked pixels
        (folder / split).mkdir(parents=True, exist_ok=True)
        files = [str(folder / split / f"data-{i:05d}-of-{shards:05d}.tfrecord.gz") for i in range(shards)]
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        writers = [tf.io.TFRecordWriter(f, options) for f in files]
        for i in range(count):
            writers[i % shards].write(schema.encode(inputs[i], labels[i].astype(np.float32)))
        for w in writers:
            w.close()
        usable = labels[1:][labels[1:] != LABEL_NODATA]
        majority = [np.bincount(p[p != LABEL_NODATA], minlength=len(classes)).argmax() for p in labels[1:]]
        split_files[split] = files
        split_stats[split] = {
            "patches_per_class": np.bincount(majority, minlength=len(classes)).tolist(),
            "pixels_per_class": np.bincount(usable, minlength=len(classes)).tolist(),
        }
    manifest = build_manifest(
        schema=schema,
        scheme=scheme_from_metadata({"classes": list(classes)}),
        crs="EPSG:32632",
        scale=10.0,
        compression="GZIP",
        split_files=split_files,
        split_stats=split_stats,
        error_count=0,
        error_files=[],
        source={"kind": "synthetic", "seed": seed},
        options={},
    )
    write_manifest(str(folder), manifest)
    return str(folder)
