"""Tiny extraction folders (manifest.json and TFRecord shards), written with the extraction's own writers
(the patch schema, the shard writer, the manifest), for tests that read an extraction back without
running the extraction job."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from rasterio.warp import transform as transform_coords

from transforms.contracts.label_scheme import PRESETS, LabelScheme
from transforms.contracts.manifest import build_manifest, write_manifest
from transforms.contracts.schema import META_ID, META_LAT, META_LON, META_PADDED, META_REGION, PatchSchema
from transforms.io.tfrecords import SUFFIX, ShardWriter

BANDS = ("B4", "B8")


def lonlat_of_pixel(
    row: int, col: int, crs: str, origin: tuple[float, float], scale: float
) -> tuple[float, float]:
    """lon/lat of the centre of pixel (row, col) of a north-up grid whose top-left corner is `origin`."""
    x, y = origin[0] + (col + 0.5) * scale, origin[1] - (row + 0.5) * scale
    lons, lats = transform_coords(crs, "EPSG:4326", [x], [y])
    return lons[0], lats[0]


def write_extraction(
    folder: Path,
    centres: Mapping[str, Sequence[tuple[float, float]]],
    *,
    crs: str = "EPSG:32632",
    scale: float = 10.0,
    patch_size: int = 8,
    scheme: LabelScheme | None = None,
    compression: str = "gzip",
    metadata: bool = True,
) -> str:
    """An extraction of one patch per centre (lon, lat), per split ("train", "validation"): zero bands,
    label 0 everywhere; without `metadata`, the records carry no point id, lon/lat or region (as Earth
    Engine's own exports); returns the folder."""
    scheme = scheme or PRESETS["dynamic-world"]
    schema = PatchSchema(BANDS, patch_size)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    stats: dict[str, dict[str, list[int]]] = {}
    for split in ("train", "validation"):
        points = list(centres.get(split, ()))
        path = str(folder / split / f"data-00000-of-00001{SUFFIX[compression]}")
        (folder / split).mkdir(exist_ok=True)
        writer = ShardWriter(path, compression)
        for number, (lon, lat) in enumerate(points):
            point = {
                META_ID: f"{split}-{number}",
                META_LON: lon,
                META_LAT: lat,
                META_REGION: "r",
                META_PADDED: 0,
            }
            image = np.zeros((patch_size, patch_size, len(BANDS)), np.float32)
            label = np.zeros((patch_size, patch_size), np.float32)
            writer.write(schema.encode(image, label, point if metadata else None))
        writer.close()
        files[split] = [path]
        patches = [0] * scheme.num_classes
        patches[0] = len(points)
        stats[split] = {
            "patches_per_class": patches,
            "pixels_per_class": [n * patch_size**2 for n in patches],
        }
    manifest = build_manifest(
        schema=schema,
        scheme=scheme,
        crs=crs,
        scale=scale,
        compression="GZIP" if compression == "gzip" else "NONE",
        split_files=files,
        split_stats=stats,
        error_count=0,
        error_files=[],
        source={"kind": "test"},
        options={"patch_size": patch_size},
    )
    write_manifest(str(folder), manifest)
    return str(folder)
