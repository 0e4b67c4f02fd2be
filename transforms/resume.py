"""Resuming a prediction: what a run was (model, plan, source), and which of its tiles are already done.

A prediction records its identity in `<output>/prediction-plan.json` before it writes any tile. A run
with `--resume` checks that it is the same prediction (same model files, grid, region, tiling,
source and probability encoding), keeps every tile whose COG is complete and valid, predicts the
others, and rebuilds the mosaic. A tile counts as done when its files open, lie on the tile's grid,
hold every tile and strip inside the file, and (for the class map) decode: a file cut short by a
stopped job is predicted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import rasterio
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from transforms.cog import CLASSES_NAME, TILES_DIR, OutputSpec, gdal_path, join
from transforms.contracts.schema import CLASS_NODATA
from transforms.geometry.tiling import Tile, TilePlan
from transforms.io.integrity import SourceError, file_size, tiff_problem
from transforms.runtime import progress

PLAN_NAME = "prediction-plan.json"
REUSED = "reused"
# The files whose bytes identify a model folder's model: its metadata, graph and variables index (the
# index holds a checksum of every variable, so it changes with the weights).
MODEL_FILES = ("model.json", "saved_model/saved_model.pb", "saved_model/variables/variables.index")


def model_fingerprint(model_dir: str) -> str:
    """SHA-256 over the model folder's identifying files (local or gs://)."""
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        path = f"{model_dir.rstrip('/')}/{name}"
        digest.update(name.encode("utf-8") + b"\0")
        try:
            with FileSystems.open(path, compression_type="uncompressed") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except (OSError, ValueError):
            digest.update(b"(missing)")
    return digest.hexdigest()


def run_record(
    *,
    model_dir: str,
    model_fingerprint: str,
    plan: TilePlan,
    region: Any,
    source: dict[str, Any],
    output: OutputSpec,
    tta: bool = False,
) -> dict[str, Any]:
    """What identifies a prediction: a resumed run must have the same record."""
    lattice = plan.lattice
    region_json = json.dumps(getattr(region, "geometry", None), sort_keys=True)
    return {
        "model": {"path": model_dir, "fingerprint": model_fingerprint},
        "grid": {
            "crs": CRS.from_user_input(lattice.crs).to_string(),
            "scale": lattice.scale,
            "origin": [lattice.origin_x, lattice.origin_y],
            "window": [plan.col0, plan.row0, plan.width, plan.height],
        },
        "tiling": {"tile_size": plan.spec.tile_size, "overlap": plan.spec.overlap, "tiles": len(plan)},
        "region": hashlib.sha256(region_json.encode("utf-8")).hexdigest() if region is not None else None,
        "source": source,
        "classes": list(output.classes),
        "probabilities": output.probabilities,
        **({"tta": True} if tta else {}),  # absent when off, as in plans written before the option
    }


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two run records, in words (empty when they are the same prediction)."""
    out = []
    for key in sorted(set(recorded) | set(current)):
        before, now = recorded.get(key), current.get(key)
        if key == "model" and isinstance(before, dict) and isinstance(now, dict):
            if before.get("fingerprint") != now.get("fingerprint"):
                out.append(f"the model ({before.get('path')} then, {now.get('path')} now, other files)")
            continue
        if before != now:
            out.append(f"{key} ({_short(before)} then, {_short(now)} now)")
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def read_record(output: str) -> dict[str, Any] | None:
    path = join(output, PLAN_NAME)
    try:
        with FileSystems.open(path, mime_type="application/json", compression_type="uncompressed") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):
        return None


def existing_tiles(spec: OutputSpec) -> frozenset[str]:
    """Ids of the tiles with every file a tile has (a listing, nothing opened)."""
    found = None
    for kind in spec.kinds:
        pattern = join(spec.output, TILES_DIR, kind, "*.tif")
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except OSError:  # Beam's BeamIOError: nothing matched, or no such folder
            matched = []
        ids = {os.path.basename(m.path)[: -len(".tif")] for m in matched}
        found = ids if found is None else found & ids
    return frozenset(found or ())


def tile_record(tile: Tile, spec: OutputSpec) -> dict[str, Any] | None:
    """The record `transforms.cog.write_tile` returns, from the tile's files; None unless they are
    complete and valid (then the tile is predicted again)."""
    try:
        classes = _valid_tile_file(spec.tile_path(CLASSES_NAME, tile.id), tile, 1, read=True)
        for kind in spec.kinds[1:]:
            bands = len(spec.bands_of(kind)[0])
            _valid_tile_file(spec.tile_path(kind, tile.id), tile, bands, read=False)
    except (OSError, ValueError, RasterioError, CPLE_BaseError, SourceError, _InvalidTile):
        return None  # missing, cut short, damaged (GDAL's decoding errors are CPLE_*) or on another grid
    counts = np.bincount(classes.ravel(), minlength=256)
    return {
        "id": tile.id,
        "window": [tile.col_off, tile.row_off, tile.width, tile.height],
        "class_counts": counts[: len(spec.classes)].tolist(),
        "nodata": int(counts[CLASS_NODATA]),
    }


class _InvalidTile(Exception):
    pass


def _valid_tile_file(path: str, tile: Tile, bands: int, read: bool) -> np.ndarray | None:
    size = file_size(path)
    with warnings.catch_warnings():  # a file cut short may have lost its georeferencing: checked below
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        src = rasterio.open(gdal_path(path))
    with src:
        core = tile.core
        if (src.count, src.width, src.height) != (bands, core.width, core.height):
            raise _InvalidTile(f"{path}: {src.count} bands {src.width}×{src.height}")
        if not src.transform.almost_equals(core.affine) or src.crs != CRS.from_user_input(core.crs):
            raise _InvalidTile(f"{path}: not on the tile's grid")
        if size is not None and tiff_problem(src, size):
            raise _InvalidTile(f"{path}: truncated")
        return src.read(1) if read else None


class ReuseTiles(beam.DoFn):
    """Tile -> the tile itself (to predict) or, on REUSED, the record of its valid earlier files."""

    def __init__(self, spec: OutputSpec, done: frozenset[str]) -> None:
        self.spec = spec
        self.done = done
        self.reused = progress.counter("predict", "tiles_reused")

    def process(self, tile: Tile) -> Iterator[Any]:
        if tile.id in self.done:
            record = tile_record(tile, self.spec)
            if record is not None:
                self.reused.inc()
                yield pvalue.TaggedOutput(REUSED, {**record, "reused": True})
                return
        yield tile
