"""Reading back what an extraction wrote."""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from transforms.contracts.manifest import read_manifest, schema_of


def read_records(files: list[str], manifest: dict) -> list[dict]:
    schema = schema_of(manifest)
    spec = schema.feature_spec(with_metadata=True)
    compression = "GZIP" if manifest["compression"] == "GZIP" else ""
    return [
        {k: v.numpy() for k, v in tf.io.parse_single_example(r, spec).items()}
        for r in tf.data.TFRecordDataset(files, compression_type=compression)
    ]


# --- the extraction pipeline --------------------------------------------------------------------
def read_all(output: Path) -> dict[tuple, dict]:
    """Every record of an extraction, keyed by (split, lon, lat), point ids left out."""
    import tensorflow as tf

    manifest = read_manifest(str(output))
    spec = schema_of(manifest).feature_spec(with_metadata=True)
    records = {}
    for split in ("train", "validation"):
        files = manifest["splits"][split]["files"]
        for raw in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            record = {k: v.numpy() for k, v in tf.io.parse_single_example(raw, spec).items()}
            record.pop("point_id")
            records[(split, float(record["lon"]), float(record["lat"]))] = record
    return records


def records_of_split(manifest: dict, split: str) -> list[bytes]:
    files = manifest["splits"][split]["files"]
    return sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP"))


def without_files(manifest: dict) -> dict:
    manifest = json.loads(json.dumps(manifest))
    for split in manifest["splits"].values():
        split.pop("files")
    return manifest
