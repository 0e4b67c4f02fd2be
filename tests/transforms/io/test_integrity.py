"""Broken inputs told from flaky ones: the whole-file check, read-error triage, files marked broken.

Fault injection on real files: a TIFF cut short, a TIFF with a damaged tile in the middle, and rasters
served over HTTP to GDAL's /vsicurl/ by a local server that answers 503 a few times, or 404 always.
Each test is bounded in time: a broken input must be told within seconds, not after minutes of retries.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling as RioResampling
from rasterio.transform import from_origin

from tests.helpers.damage import cut, damage_block
from tests.helpers.http_rasters import Failure, RasterServerProcess
from tests.helpers.scenes import CRS, ORIGIN, SCALE
from transforms.geometry.grid import GridSpec
from transforms.io.integrity import (
    BROKEN_AFTER,
    FileHealth,
    ReadError,
    check_raster,
    classify_read_error,
    tiff_problem,
)
from transforms.io.rasters import LocalRasterSource, SourceError, TransientSourceError
from transforms.io.retry import RetryConfig

GRID = GridSpec(CRS, SCALE, *ORIGIN)
# Retries that would take minutes if a broken file were taken for a flaky one.
SLOW_RETRY = RetryConfig(attempts=5, delay=30.0)


def write_raster(path: Path, size: int = 256, bands: int = 3, **options) -> np.ndarray:
    rng = np.random.default_rng(7)
    pixels = rng.normal(100, 10, (bands, size, size)).astype(np.float32)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="float32",
        crs=CRS,
        transform=from_origin(*ORIGIN, SCALE, SCALE),
        tiled=True,
        blockxsize=64,
        blockysize=64,
    )
    profile.update(options)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    return pixels


# --- the whole-file check -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_tiff_cut_short_is_found_without_reading_its_pixels(tmp_path):
    whole = tmp_path / "whole.tif"
    write_raster(whole)
    check_raster(str(whole))  # a whole file passes
    truncated = cut(whole, 0.64, tmp_path / "image.tif")
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"image\.tif is broken: the file is truncated") as error:
        check_raster(str(truncated))
    assert time.monotonic() - start < 2
    assert f"{truncated.stat().st_size:,} bytes" in str(error.value)


@pytest.mark.timeout(60)
def test_strips_band_interleaving_and_overviews_are_checked_too(tmp_path):
    striped = tmp_path / "striped.tif"
    write_raster(striped, tiled=False)
    check_raster(str(striped))
    with pytest.raises(SourceError, match="strip"):
        check_raster(str(cut(striped, 0.9, tmp_path / "striped-cut.tif")))

    # Band interleaving: each band has tiles of its own, the last band's at the end.
    banded = tmp_path / "banded.tif"
    write_raster(banded, interleave="band")
    with rasterio.open(banded) as src:
        assert tiff_problem(src, banded.stat().st_size) is None
        assert "band 3" in tiff_problem(src, int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=3)))
    # Overviews added after the image sit at the end of the file: a cut there spares the full resolution.
    with rasterio.open(banded, "r+") as dst:
        dst.build_overviews([2, 4], RioResampling.average)
    check_raster(str(banded))
    with rasterio.open(banded) as src:
        assert tiff_problem(src, banded.stat().st_size) is None
        assert "of overview 2" in tiff_problem(src, banded.stat().st_size - 1)


def test_missing_and_unreadable_files_are_named(tmp_path):
    with pytest.raises(SourceError, match=r"Cannot open raster '.*nope\.tif' \(no such file\)"):
        check_raster(str(tmp_path / "nope.tif"))
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(SourceError, match=r"Cannot open raster '.*notes\.tif'"):
        check_raster(str(text))


# --- read errors during a job ---------------------------------------------------------------------


def test_local_errors_are_permanent_remote_ones_transient_only_where_they_can_be():
    from rasterio.errors import RasterioIOError

    def err(text):
        return RasterioIOError(text)

    assert classify_read_error("/data/a.tif", err("connection timed out"))[0] is False  # local: never
    assert classify_read_error("/vsicurl/http://h/a.tif", err("HTTP response code: 503"))[:2] == (
        True,
        "HTTP 503",
    )
    assert classify_read_error("/vsicurl/http://h/a.tif", err("HTTP response code: 404"))[:2] == (
        False,
        "HTTP 404 not found",
    )
    assert classify_read_error("gs://b/a.tif", err("Connection reset by peer"))[0] is True
    # A remote error that says neither: transient once, permanent when the same error comes again.
    assert classify_read_error("gs://b/a.tif", err("TIFFReadEncodedTile() failed."))[0] is None
    health = FileHealth()
    first = health.failed("gs://b/a.tif", err("TIFFReadEncodedTile() failed."))
    again = health.failed("gs://b/a.tif", err("TIFFReadEncodedTile() failed."))
    assert isinstance(first, TransientSourceError) and isinstance(again, ReadError)


@pytest.mark.timeout(60)
def test_a_damaged_tile_fails_at_once_and_a_file_failing_again_and_again_is_marked_broken(tmp_path, caplog):
    whole = tmp_path / "whole.tif"
    pixels = write_raster(whole, compress="deflate")
    damaged = damage_block(whole, tmp_path / "image.tif", 1, 1)
    check_raster(str(damaged))  # every block is inside the file: only reading tells
    source = LocalRasterSource([str(damaged)])
    good, bad = GRID.window(130, 130, 32, 32), GRID.window(70, 70, 32, 32)  # bad touches block (1, 1)
    bands = list(source.bands)

    start = time.monotonic()
    with pytest.raises(ReadError, match=r"read failed on .*image\.tif \(corrupt data\)") as error:
        SLOW_RETRY.call(source.read, bad, bands)
    assert time.monotonic() - start < 5  # permanent: not retried for minutes
    assert error.value.reason == f"read failed on {damaged} (corrupt data)"
    # A good read in between: failures are not in a row, the file still serves its good blocks.
    for _ in range(BROKEN_AFTER):
        np.testing.assert_array_equal(
            np.moveaxis(source.read(good, bands).pixels, -1, 0), pixels[:, 130:162, 130:162]
        )
        with pytest.raises(ReadError):
            source.read(bad, bands)
    assert not any("marked broken" in r.message for r in caplog.records)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(BROKEN_AFTER - 1):
            with pytest.raises(ReadError):
                source.read(bad, bands)
        for _ in range(50):  # the good window too: the file is broken for this worker now
            with pytest.raises(ReadError, match=r"\(corrupt data\).*marked broken"):
                source.read(good, bands)
    broken = [r for r in caplog.records if "marked broken" in r.message]
    assert len(broken) == 1 and str(damaged) in broken[0].message


@pytest.mark.timeout(60)
def test_a_file_removed_before_a_worker_opens_it_fails_for_good(tmp_path):
    path = tmp_path / "image.tif"
    write_raster(path)
    source = LocalRasterSource([str(path)])
    bands = list(source.bands)
    worker = LocalRasterSource([str(path)])  # another process's copy, not opened yet
    os.remove(path)
    start = time.monotonic()
    for _ in range(10):
        with pytest.raises(ReadError, match=r"\(no such file\)"):
            SLOW_RETRY.call(worker.read, GRID.window(0, 0, 16, 16), bands)
    assert time.monotonic() - start < 5


# --- rasters over HTTP ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    pixels = write_raster(folder / "image.tif")
    for name in ("flaky.tif", "flaky-pixels.tif", "gone.tif", "cut.tif"):
        (folder / name).write_bytes((folder / "image.tif").read_bytes())
    cut(folder / "image.tif", 0.5, folder / "cut.tif")
    failures = {
        "flaky.tif": Failure(503, 2),  # the first two requests, whatever they are
        # More than GDAL's own retries absorb (REMOTE_RETRY: 5 tries of each range request, and of its
        # fallback requests): one read fails, and is retried.
        "flaky-pixels.tif": Failure(503, 15, data_only=True),
        "gone.tif": Failure(404),
    }
    with RasterServerProcess(str(folder), failures) as server:
        yield server, pixels


@pytest.mark.timeout(60)
def test_a_remote_raster_answering_503_twice_is_checked_and_read(served, monkeypatch):
    server, pixels = served
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")  # GDAL's own retries of HTTP 5xx, made quick
    start = time.monotonic()
    check_raster(server.vsicurl("flaky.tif"), delay=0.05)
    assert server.count(503, "flaky.tif") == 2
    source = LocalRasterSource([server.vsicurl("flaky.tif")])
    window = GRID.window(40, 50, 100, 90)
    read = RetryConfig(attempts=5, delay=0.05).call(source.read, window, list(source.bands))
    np.testing.assert_array_equal(np.moveaxis(read.pixels, -1, 0), pixels[:, 50:140, 40:140])
    assert time.monotonic() - start < 20


@pytest.mark.timeout(60)
def test_pixel_reads_that_fail_for_a_while_are_retried(served, monkeypatch):
    server, pixels = served
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")  # GDAL's own retries of HTTP 5xx, made quick
    source = LocalRasterSource([server.vsicurl("flaky-pixels.tif")])
    bands = list(source.bands)
    retry = RetryConfig(attempts=5, delay=0.05)
    for col in range(0, 256, 64):
        read = retry.call(source.read, GRID.window(col, 0, 64, 256), bands)
        np.testing.assert_array_equal(np.moveaxis(read.pixels, -1, 0), pixels[:, :, col : col + 64])
    assert server.count(503, "flaky-pixels.tif") == 15


@pytest.mark.timeout(60)
def test_a_remote_raster_answering_404_stops_within_seconds(served, monkeypatch):
    server, _ = served
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"gone\.tif cannot be read: HTTP 404 not found"):
        check_raster(server.vsicurl("gone.tif"))
    source = LocalRasterSource([server.vsicurl("gone.tif")])
    for _ in range(BROKEN_AFTER):
        with pytest.raises(ReadError, match="HTTP 404"):
            SLOW_RETRY.call(source.read, GRID.window(0, 0, 16, 16), ["red"])
    asked = len(server.requests)
    for _ in range(20):  # marked broken: no more requests
        with pytest.raises(ReadError, match=r"\(HTTP 404 not found\).*marked broken"):
            SLOW_RETRY.call(source.read, GRID.window(0, 0, 16, 16), ["red"])
    assert len(server.requests) == asked
    assert time.monotonic() - start < 10


@pytest.mark.timeout(60)
def test_a_remote_raster_cut_short_is_found_from_its_size(served):
    server, _ = served
    with pytest.raises(SourceError, match=r"cut\.tif is broken: the file is truncated"):
        check_raster(server.vsicurl("cut.tif"))
