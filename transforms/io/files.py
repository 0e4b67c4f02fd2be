"""Paths and JSON files of local folders and Cloud Storage (`gs://`) alike.

`join` is string work only, so command lines and `--help` can use it without loading TensorFlow or
Beam. `read_json` and `write_json` go through `tf.io.gfile`, the file layer the model folder code
already uses: one call for local paths and gs://, and it is in every image that trains or serves a
model (Beam's `FileSystems` is not in the serving image; fsspec is no dependency of the project).
TensorFlow is imported when a file is first read or written.
"""

from __future__ import annotations

import json
import os
import posixpath
from typing import Any


def join(base: str, *parts: str) -> str:
    """`base/part/...`: with '/' for a URL (gs://, s3://, ...), as the platform joins for a local path.

    Trailing slashes of `base` are dropped (`gs://bucket/run/` + `model.json` ->
    `gs://bucket/run/model.json`); the root `/` stays the root.
    """
    trimmed = base.rstrip("/") or base
    if "://" in base:
        return posixpath.join(trimmed, *parts)
    return os.path.join(trimmed, *parts)


def read_json(path: str) -> Any | None:
    """The JSON document at `path` (local or gs://), or None when there is no such file."""
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return json.loads(f.read())


def write_json(path: str, value: Any) -> None:
    """Write `value` to `path` (local or gs://) as JSON: indented, keys sorted, a final newline."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
