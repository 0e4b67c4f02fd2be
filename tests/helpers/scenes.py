"""Tiny rasters written on the fly, and the location of ../shared/data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_geom

from tests.helpers.environment import SHARED_DATA
from transforms.contracts.label_scheme import classes_tag

CRS = "EPSG:32632"


ORIGIN = (600_000.0, 5_120_000.0)


SCALE = 10.0


# The tiny scene's classes, by label value.
TINY_CLASSES = ("water", "trees", "grass", "flooded_vegetation")


@dataclasses.dataclass(frozen=True)
class TinyScene:
    image: str
    labels: str
    regions: str
    band_files: tuple[str, ...]
    pixels: np.ndarray  # (bands, H, W) float32
    label_pixels: np.ndarray  # (H, W) uint8
    bands: tuple[str, ...] = ("red", "nir", "elevation")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def utm_box_to_lonlat(left: float, bottom: float, right: float, top: float) -> dict:
    ring = [[left, bottom], [right, bottom], [right, top], [left, top], [left, bottom]]
    return transform_geom(CRS, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})


def write_tiny_scene(folder: Path, size: int = 200, seed: int = 1) -> TinyScene:
    """A size×size, 3-band float scene with a 4-class label raster made of quadrants and a stripe."""
    rng = np.random.default_rng(seed)
    transform = from_origin(*ORIGIN, SCALE, SCALE)
    labels = np.zeros((size, size), np.uint8)
    half = size // 2
    labels[:half, half:] = 1
    labels[half:, :half] = 2
    labels[half:, half:] = 3
    labels[:, half - 3 : half + 3] = 0  # a river down the middle
    pixels = rng.normal(100, 10, (3, size, size)).astype(np.float32)
    pixels[0] += labels * 50.0
    pixels[1] -= labels * 20.0
    pixels[2] = np.arange(size, dtype=np.float32)[:, None] * 2 + np.arange(size)[None, :]
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        crs=CRS,
        transform=transform,
        tiled=True,
        blockxsize=64,
        blockysize=64,
    )
    image = folder / "image.tif"
    with rasterio.open(image, "w", count=3, dtype="float32", **profile) as dst:
        dst.write(pixels)
        for i, name in enumerate(("red", "nir", "elevation"), start=1):
            dst.set_band_description(i, name)
    band_files = []
    for i, name in enumerate(("red", "nir", "elevation")):
        path = folder / f"{name}.tif"
        with rasterio.open(path, "w", count=1, dtype="float32", **profile) as dst:
            dst.write(pixels[i], 1)
        band_files.append(str(path))
    label_path = folder / "labels.tif"
    with rasterio.open(label_path, "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(labels, 1)
        dst.set_band_description(1, "landcover")
        # The label raster names its classes (as the demo scene's does), so jobs need no --label-scheme.
        dst.update_tags(1, classes=classes_tag(TINY_CLASSES))
    x0, y0 = ORIGIN
    margin = 40 * SCALE
    regions = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "north"},
                "geometry": utm_box_to_lonlat(
                    x0 + margin, y0 - half * SCALE, x0 + size * SCALE - margin, y0 - margin
                ),
            },
            {
                "type": "Feature",
                "properties": {"name": "south"},
                "geometry": utm_box_to_lonlat(
                    x0 + margin, y0 - size * SCALE + margin, x0 + size * SCALE - margin, y0 - half * SCALE
                ),
            },
        ],
    }
    regions_path = folder / "regions.geojson"
    regions_path.write_text(json.dumps(regions))
    return TinyScene(str(image), str(label_path), str(regions_path), tuple(band_files), pixels, labels)
