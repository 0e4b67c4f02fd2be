"""Raster reads on explicit grids: aligned windows, edges, reprojection, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as transform_coords
from rasterio.windows import Window

from tests.helpers.scenes import CRS, ORIGIN, SCALE
from transforms.geometry.grid import GridSpec, grid_spec_of
from transforms.io.rasters import LocalRasterSource, Resampling, SourceError

GRID = GridSpec(CRS, SCALE, *ORIGIN)


def test_patch_equals_direct_rasterio_read(tiny_scene):
    source = LocalRasterSource([tiny_scene.image])
    assert source.bands == ("red", "nir", "elevation")
    grid = GRID.window(37, 51, 32, 32)
    result = source.read(grid, ["elevation", "red"])
    with rasterio.open(tiny_scene.image) as src:
        direct = src.read([3, 1], window=Window(37, 51, 32, 32))
    assert not result.padded
    np.testing.assert_array_equal(result.pixels, np.moveaxis(direct, 0, -1))


def test_one_file_per_band_equals_multiband(tiny_scene):
    grid = GRID.window(10, 20, 16, 16)
    multi = LocalRasterSource([tiny_scene.image]).read(grid, ["nir", "elevation"]).pixels
    per_band = LocalRasterSource(list(tiny_scene.band_files)).read(grid, ["nir", "elevation"]).pixels
    np.testing.assert_array_equal(multi, per_band)


def test_patch_around_centres_the_point():
    col, row = 120, 80
    x, y = GRID.pixel_centre(col, row)
    patch = GRID.patch_around(x, y, 16)
    assert GRID.pixel_of(patch.transform[2] + 0.5 * SCALE, patch.transform[5] - 0.5 * SCALE) == (
        col - 8,
        row - 8,
    )


def test_edge_patch_is_padded_with_fill(tiny_scene):
    source = LocalRasterSource([tiny_scene.image])
    result = source.read(GRID.window(-4, 190, 16, 16), ["red"], fill=-1)
    assert result.padded
    assert (result.pixels[:, :4] == -1).all() and (result.pixels[10:] == -1).all()
    np.testing.assert_array_equal(result.pixels[:10, 4:, 0], tiny_scene.pixels[0, 190:200, 0:12])


def test_reprojection_puts_a_known_feature_on_the_right_pixel(tmp_path):
    """A bright pixel in a lon/lat raster lands on the UTM pixel containing its location."""
    lon0, lat0, step = 9.0, 46.2, 0.0001
    data = np.zeros((200, 200), np.float32)
    data[100, 120] = 1000.0
    path = tmp_path / "wgs84.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=200,
        height=200,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=from_origin(lon0, lat0, step, step),
    ) as dst:
        dst.write(data, 1)
    lon, lat = lon0 + 120.5 * step, lat0 - 100.5 * step
    (x,), (y,) = transform_coords("EPSG:4326", CRS, [lon], [lat])
    grid = GridSpec(CRS, 5.0)
    patch = grid.patch_around(x, y, 9)
    pixels = (
        LocalRasterSource([str(path)]).read(patch, ["wgs84"], resampling=Resampling.nearest).pixels[..., 0]
    )
    # The source pixel (~7.7 m × 11 m) covers the 5 m target pixel holding its centre and its neighbours only.
    assert pixels[4, 4] == 1000.0
    rows, cols = np.nonzero(pixels)
    assert rows.min() >= 3 and rows.max() <= 5 and cols.min() >= 3 and cols.max() <= 5


def test_missing_file_and_unknown_band_messages(tiny_scene, tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        _ = LocalRasterSource([str(tmp_path / "nope.tif")]).bands
    with pytest.raises(SourceError, match=r"B99 not found.*available: red, nir, elevation"):
        LocalRasterSource([tiny_scene.image]).check_bands(["red", "B99"])
    bad = tmp_path / "not-a-raster.tif"
    bad.write_text("hello")
    with pytest.raises(SourceError, match="Cannot open raster"):
        _ = LocalRasterSource([str(bad)]).bands


def test_rotated_label_grid_is_rejected():
    from affine import Affine

    with pytest.raises(ValueError, match="north-up"):
        grid_spec_of(CRS, Affine.rotation(10) * Affine.scale(10, -10))


def test_source_pickles_without_open_handles(tiny_scene):
    import pickle

    source = LocalRasterSource([tiny_scene.image])
    before = source.read(GRID.window(0, 0, 8, 8), ["red"]).pixels
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone.read(GRID.window(0, 0, 8, 8), ["red"]).pixels, before)


def test_nan_fill_of_an_integer_raster_with_nodata(tmp_path):
    path = tmp_path / "ints.tif"
    data = np.arange(64, dtype=np.uint16).reshape(8, 8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=1,
        dtype="uint16",
        crs=CRS,
        nodata=5,
        transform=from_origin(*ORIGIN, SCALE, SCALE),
    ) as dst:
        dst.write(data, 1)
    pixels = (
        LocalRasterSource([str(path)]).read(GRID.window(0, 0, 8, 8), ["ints"], fill=np.nan).pixels[..., 0]
    )
    assert np.isnan(pixels[0, 5]) and pixels[0, 6] == 6


def test_reprojected_pixels_do_not_depend_on_the_window_read(tmp_path):
    """Training patches and prediction tiles of different sizes see the same warped values."""
    rng = np.random.default_rng(0)
    path = tmp_path / "wgs84.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=1500,
        height=1500,
        count=1,
        dtype="float32",
        crs="EPSG:4326",
        transform=from_origin(9.0, 46.2, 0.0001, 0.0001),
    ) as dst:
        dst.write(rng.normal(1000, 300, (1500, 1500)).astype(np.float32), 1)
    source = LocalRasterSource([str(path)])
    (x,), (y,) = transform_coords("EPSG:4326", CRS, [9.075], [46.125])
    grid = GridSpec(CRS, 10.0)
    big = grid.patch_around(x, y, 1024)
    whole = source.read(big, ["wgs84"]).pixels[..., 0]
    col0, row0 = grid.pixel_of(big.transform[2] + 5, big.transform[5] - 5)
    for dc, dr, size in ((0, 0, 64), (300, 77, 128), (900, 500, 64), (513, 700, 256)):
        small = LocalRasterSource([str(path)]).read(grid.window(col0 + dc, row0 + dr, size, size), ["wgs84"])
        np.testing.assert_array_equal(small.pixels[..., 0], whole[dr : dr + size, dc : dc + size])


def test_file_bands_name_each_files_bands_on_its_own(tiny_scene):
    """A file named on its own (a STAC asset's names), another by its band descriptions."""
    source = LocalRasterSource([tiny_scene.band_files[0], tiny_scene.image], file_bands=[["B04"], None])
    assert source.bands == ("B04", "red", "nir", "elevation")
    source = pickle.loads(pickle.dumps(source))
    with rasterio.open(tiny_scene.band_files[0]) as src:
        direct = src.read(1, window=Window(5, 6, 8, 8))
    np.testing.assert_array_equal(source.read(GRID.window(5, 6, 8, 8), ["B04"]).pixels[..., 0], direct)
    with pytest.raises(SourceError, match=r"holds 3 band\(s\) but 2 name\(s\) are given for it \(a, b\)"):
        _ = LocalRasterSource([tiny_scene.image], file_bands=[["a", "b"]]).bands
