"""`manifest.json`: what an extraction wrote, read by training (and, through the model, by prediction).

It names the record files (relative to the manifest's folder), the schema (bands, label, patch size),
the classes (`classes`: names by index; `label_scheme`: names, label values, colours), the pixel grid (CRS, scale), per-split and per-class counts, the source and the options.
It is written last, so a folder with a manifest holds a complete extraction.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from transforms.contracts.label_scheme import LabelScheme
from transforms.contracts.schema import LABEL_NODATA, PatchSchema

MANIFEST_NAME = "manifest.json"
FORMAT = "terrabeam-patches/1"


class ManifestError(ValueError):
    """A manifest is missing or does not describe a usable dataset."""


def build_manifest(
    *,
    schema: PatchSchema,
    scheme: LabelScheme,
    crs: str,
    scale: float,
    compression: str,
    split_files: Mapping[str, Sequence[str]],
    split_stats: Mapping[str, Mapping[str, Sequence[int]]],
    error_count: int,
    error_files: Sequence[str],
    source: Mapping[str, Any],
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest as a JSON-ready dict; file names are made relative by `write_manifest`."""
    classes = scheme.names
    splits = {}
    for split, files in split_files.items():
        stats = split_stats.get(split, {})
        patch_counts = list(stats.get("patches_per_class", [0] * len(classes)))
        pixel_counts = list(stats.get("pixels_per_class", [0] * len(classes)))
        splits[split] = {
            "files": sorted(files),
            "patches": int(sum(patch_counts)),
            "patches_per_class": {c: int(n) for c, n in zip(classes, patch_counts)},
            "pixels_per_class": {c: int(n) for c, n in zip(classes, pixel_counts)},
        }
    return {
        "format": FORMAT,
        "bands": list(schema.bands),
        "label": schema.label,
        "label_nodata": LABEL_NODATA,
        "patch_size": schema.patch_size,
        "classes": list(classes),
        "label_scheme": scheme.to_json(),
        "crs": crs,
        "scale": scale,
        "compression": compression,
        "splits": splits,
        "errors": {"count": int(error_count), "files": sorted(error_files)},
        "source": dict(source),
        "options": dict(options),
    }


def write_manifest(output: str, manifest: dict[str, Any]) -> str:
    """Write `manifest` to `<output>/manifest.json` with file paths relative to `output`."""
    prefix = output.rstrip("/") + "/"

    def relative(path: str) -> str:
        return path[len(prefix) :] if path.startswith(prefix) else path

    manifest = dict(manifest)
    manifest["splits"] = {
        name: {**split, "files": [relative(f) for f in split["files"]]}
        for name, split in manifest["splits"].items()
    }
    manifest["errors"] = {**manifest["errors"], "files": [relative(f) for f in manifest["errors"]["files"]]}
    path = posixpath.join(output, MANIFEST_NAME) if "://" in output else f"{prefix}{MANIFEST_NAME}"
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(json.dumps(manifest, indent=2).encode("utf-8"))
    return path


def read_manifest(data_dir: str) -> dict[str, Any]:
    """Load `<data_dir>/manifest.json` (local or gs://), with record paths made absolute."""
    path = data_dir if data_dir.endswith(".json") else data_dir.rstrip("/") + "/" + MANIFEST_NAME
    base = path.rsplit("/", 1)[0] if "/" in path else "."
    try:
        with FileSystems.open(path, mime_type="application/json", compression_type="uncompressed") as f:
            manifest = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise ManifestError(
            f"No readable manifest at {path!r} ({e}). Point --data at a folder written by "
            "`python -m pipelines.extract`."
        ) from None
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"{path!r} is not a terrabeam manifest (format {manifest.get('format')!r}).")
    for key in ("bands", "patch_size", "classes", "splits"):
        if not manifest.get(key):
            raise ManifestError(f"Manifest {path!r} has no {key!r}; re-run the extraction.")

    def absolute(f: str) -> str:
        return f if "://" in f or f.startswith("/") else f"{base}/{f}"

    for split in manifest["splits"].values():
        split["files"] = [absolute(f) for f in split["files"]]
    errors = manifest.setdefault("errors", {"count": 0, "files": []})
    errors["files"] = [absolute(f) for f in errors.get("files", [])]
    return manifest


def schema_of(manifest: Mapping[str, Any]) -> PatchSchema:
    """The record schema a manifest describes."""
    return PatchSchema(
        tuple(manifest["bands"]), int(manifest["patch_size"]), manifest.get("label", "landcover")
    )
