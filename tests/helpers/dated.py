"""Imagery of several dates for tests: a later date of the tiny scene, the scene on another grid, and
STAC files (a catalogue or an item collection) that point at such rasters with relative hrefs."""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import pystac
import rasterio
from rasterio.warp import Resampling, calculate_default_transform, reproject

from tests.helpers.scenes import TinyScene

# What the later date adds to every pixel of the tiny scene, so that a record shows which date it read.
AFTER_SHIFT = 1000.0
# What a changed block adds to the later date's first band ("red") on top of the shift.
CHANGE = 3000.0


def write_later_date(
    scene: TinyScene,
    folder: Path,
    shift: float = AFTER_SHIFT,
    changed: tuple[slice, slice] | None = None,
) -> tuple[str, np.ndarray]:
    """The tiny scene `shift` brighter, and its red CHANGE brighter still in the `changed` (rows, cols)
    block, on the same grid with the same band names: (path, pixels)."""
    pixels = scene.pixels + np.float32(shift)
    if changed is not None:
        pixels[(0, *changed)] += np.float32(CHANGE)
    path = folder / "after.tif"
    with rasterio.open(scene.image) as src:
        profile = src.profile
        descriptions = src.descriptions
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
        for i, name in enumerate(descriptions, start=1):
            dst.set_band_description(i, name)
    return str(path), pixels


def write_on_other_grid(source: str, path: Path, crs: str = "EPSG:32633", scale: float = 20.0) -> str:
    """`source` reprojected onto another CRS and pixel size, band names kept."""
    with rasterio.open(source) as src:
        transform, width, height = calculate_default_transform(
            src.crs, crs, src.width, src.height, *src.bounds, resolution=scale
        )
        profile = {**src.profile, "crs": crs, "transform": transform, "width": width, "height": height}
        with rasterio.open(path, "w", **profile) as dst:
            for i in range(1, src.count + 1):
                reproject(
                    rasterio.band(src, i),
                    rasterio.band(dst, i),
                    dst_transform=transform,
                    dst_crs=crs,
                    resampling=Resampling.bilinear,
                )
                dst.set_band_description(i, src.descriptions[i - 1])
    return str(path)


# An item's assets: asset key -> path (a one-band file, named by its key) or (path, band names) (written
# as eo:bands).
Assets = Mapping[str, "str | tuple[str, Sequence[str]]"]


def stac_items(dates: Mapping[str, Assets], folder: Path) -> list[pystac.Item]:
    """One item per key (a date, or a date and time), its GeoTIFF assets with hrefs relative to `folder`, plus a
    thumbnail that readers must skip."""
    items = []
    for day, assets in dates.items():
        when = datetime.datetime.fromisoformat(day)  # "2019-07-01", or with a time "2019-07-01T08:00"
        when = (when if "T" in day else when.replace(hour=10)).replace(tzinfo=datetime.timezone.utc)
        item = pystac.Item(f"scene-{day}", None, None, when, {})
        for key, asset in assets.items():
            path, bands = (asset, None) if isinstance(asset, str) else asset
            extra = {"eo:bands": [{"name": b} for b in bands]} if bands else {}
            href = os.path.relpath(path, folder)
            item.add_asset(
                key, pystac.Asset(href, media_type=pystac.MediaType.COG, roles=["data"], extra_fields=extra)
            )
        item.add_asset(
            "thumbnail", pystac.Asset("thumb.tif", media_type=pystac.MediaType.GEOTIFF, roles=["thumbnail"])
        )
        items.append(item)
    return items


def write_stac_catalog(dates: Mapping[str, Assets], folder: Path) -> str:
    """A self-contained STAC catalogue in `folder` (catalog.json, one folder per item), its asset hrefs
    relative to each item's JSON file."""
    catalog = pystac.Catalog("dates", "Imagery by date")
    for item in stac_items(dates, folder):
        catalog.add_item(item)
    catalog.normalize_hrefs(str(folder))
    for item in catalog.get_items():
        item_folder = Path(item.get_self_href()).parent
        for asset in item.assets.values():
            asset.href = os.path.relpath(folder / asset.href, item_folder)
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return str(folder / "catalog.json")


def write_item_collection(dates: Mapping[str, Assets], folder: Path, name: str = "items.json") -> str:
    """An ItemCollection file in `folder`, its asset hrefs relative to it."""
    collection = pystac.ItemCollection(stac_items(dates, folder))
    path = folder / name
    collection.save_object(str(path))
    return str(path)


def change_model(bands: list[str], before: str | None, after: str, threshold: float) -> keras.Model:
    """Class 1 where band `after` exceeds band `before` (or zero, when None) by `threshold`: a 1×1
    convolution, its probabilities saturated for differences of a few units or more."""
    inputs = keras.Input((None, None, len(bands)), name="image")
    conv = keras.layers.Conv2D(2, 1)
    model = keras.Model(inputs, keras.layers.Softmax(name="probabilities")(conv(inputs)))
    kernel = np.zeros((1, 1, len(bands), 2), np.float32)
    kernel[0, 0, bands.index(after), 1] = 1.0
    if before is not None:
        kernel[0, 0, bands.index(before), 1] = -1.0
    conv.set_weights([kernel, np.array([0.0, -threshold], np.float32)])
    return model
