"""Tests of the generated demo scene: file layout, determinism, caching and how landscape-like it is."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio
from rasterio.warp import transform

from pipelines.demo import scene as demo_scene
from pipelines.demo.scene import DemoScene, default_cache_dir, ensure_demo_scene
from transforms.contracts.classes import CLASS_NAMES, NUM_CLASSES, S2_BANDS, SPECTRA_MEAN, palette_rgb

SIZE = 256


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> DemoScene:
    return ensure_demo_scene(tmp_path_factory.mktemp("cache"), size=SIZE, seed=0)


@pytest.fixture(scope="module")
def labels(scene) -> np.ndarray:
    with rasterio.open(scene.labels) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def image(scene) -> np.ndarray:
    with rasterio.open(scene.image) as src:
        return src.read()


def _read_all(scene: DemoScene) -> tuple[np.ndarray, np.ndarray, str, np.ndarray, np.ndarray, str]:
    """Both dates' images and labels, and the regions and changes as text."""
    arrays = []
    for path in (scene.image, scene.labels, scene.image_after, scene.labels_after):
        with rasterio.open(path) as src:
            arrays.append(src.read())
    texts = (pathlib.Path(scene.regions).read_text(), pathlib.Path(scene.changes).read_text())
    return arrays[0], arrays[1], texts[0], arrays[2], arrays[3], texts[1]


def _neighbour_agreement(labels: np.ndarray) -> float:
    """Fraction of horizontally or vertically adjacent pixel pairs that share their class."""
    pairs = np.concatenate([(labels[1:] == labels[:-1]).ravel(), (labels[:, 1:] == labels[:, :-1]).ravel()])
    return float(pairs.mean())


# The first date's pixels for size 256, seed 0, as generator version 2 wrote them, before the second date
# existed: benchmarks and figures rest on these arrays, so adding to the scene must not move them. The
# labels are held to their sha256 (uint8); the image to each band's mean and standard deviation, to 1e-5:
# the float32 pixels' last bits differ between CPUs (the same code hashed them differently on an AVX2 and
# an AVX-512 machine, with equal labels), while a change to the generator moves these far more.
FIRST_DATE_LABELS_SHA256 = "7078fa34148c59986a084f92e2ef754c64eef400c6a93431a194b001a98a4165"
FIRST_DATE_BAND_MEANS = (
    1745.993, 1552.343, 1484.63, 1583.775, 1778.84, 2305.788, 2557.079,
    2488.859, 2756.086, 941.4008, 20.54436, 2199.279, 1516.011, 1198.469,
)  # fmt: skip
FIRST_DATE_BAND_STDS = (
    954.1658, 872.3067, 860.5558, 973.5813, 960.3765, 861.979, 668.8114,
    608.4329, 678.5052, 356.1645, 11.29824, 955.3083, 798.4081, 964.6278,
)  # fmt: skip


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()).hexdigest()


def test_first_date_pixels_are_those_of_version_2(image, labels):
    assert SIZE == 256
    assert _sha256(labels[None]) == FIRST_DATE_LABELS_SHA256
    pixels = image.astype(np.float64)
    np.testing.assert_allclose(pixels.mean(axis=(1, 2)), FIRST_DATE_BAND_MEANS, rtol=1e-5)
    np.testing.assert_allclose(pixels.std(axis=(1, 2)), FIRST_DATE_BAND_STDS, rtol=1e-5)


def test_files_grid_and_bands(scene):
    assert scene.bands == (*S2_BANDS, "elevation")
    assert pathlib.Path(scene.image).parent.name == f"demo-scene-{SIZE}-seed0"
    with rasterio.open(scene.image) as img, rasterio.open(scene.labels) as lab:
        assert img.crs.is_projected and img.crs.to_epsg() == 32632  # UTM zone 32N
        assert img.res == (10.0, 10.0)
        assert img.transform.b == 0 and img.transform.d == 0 and img.transform.e < 0  # north up
        assert (img.width, img.height, img.count) == (SIZE, SIZE, 14)
        assert img.descriptions == scene.bands
        assert set(img.dtypes) == {"float32"}
        assert img.nodata is None
        assert img.compression is None  # uncompressed: fastest patch reads (benchmarks/scene_layout.py)
        assert img.block_shapes[0] == (256, 256)
        assert img.interleaving.name.lower() == "pixel"

        assert (lab.crs, lab.transform, lab.shape) == (img.crs, img.transform, img.shape)
        assert lab.count == 1 and lab.dtypes[0] == "uint8" and lab.nodata == 255
        assert lab.descriptions == ("landcover",)
        colormap = lab.colormap(1)
        assert [colormap[i][:3] for i in range(NUM_CLASSES)] == palette_rgb()


def test_internally_tiled(tmp_path):
    # In a scene smaller than a tile, 256 x 256 blocks can only be tiles, not strips.
    scene = ensure_demo_scene(tmp_path, size=64, seed=0)
    for path in (scene.image, scene.labels):
        with rasterio.open(path) as src:
            assert set(src.block_shapes) == {(256, 256)}


def test_same_seed_gives_same_arrays(tmp_path):
    first = _read_all(ensure_demo_scene(tmp_path / "a", size=128, seed=7))
    second = _read_all(ensure_demo_scene(tmp_path / "b", size=128, seed=7))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    other = _read_all(ensure_demo_scene(tmp_path / "a", size=128, seed=8))
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[4], other[4])
    assert first[5] != other[5]


def test_second_call_only_checks(tmp_path):
    scene = ensure_demo_scene(tmp_path, size=64, seed=1)
    paths = (scene.image, scene.labels, scene.regions, scene.image_after, scene.labels_after, scene.changes)
    mtimes = {p: os.stat(p).st_mtime_ns for p in paths}
    assert ensure_demo_scene(tmp_path, size=64, seed=1) == scene
    assert {p: os.stat(p).st_mtime_ns for p in mtimes} == mtimes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo-scene-64-seed1"]  # no leftovers


@pytest.mark.parametrize("field", ["image", "changes"])
def test_incomplete_scene_is_regenerated(tmp_path, field):
    scene = ensure_demo_scene(tmp_path, size=64, seed=2)
    expected = _read_all(scene)
    with open(getattr(scene, field), "r+b") as f:  # as if a copy had been cut short
        f.truncate(100)
    # A temporary folder left by an interrupted run is never taken for the scene.
    (tmp_path / ".demo-scene-64-seed2.abc.tmp").mkdir()
    assert ensure_demo_scene(tmp_path, size=64, seed=2) == scene
    actual = _read_all(scene)
    for a, b in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_concurrent_calls_share_one_scene(tmp_path):
    with ThreadPoolExecutor(3) as pool:
        scenes = list(pool.map(lambda _: ensure_demo_scene(tmp_path, size=64, seed=3), range(3)))
    assert scenes[0] == scenes[1] == scenes[2]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["demo-scene-64-seed3"]
    _read_all(scenes[0])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TERRABEAM_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("TERRABEAM_CACHE")
    assert default_cache_dir() == pathlib.Path.home() / ".cache" / "terrabeam"


@pytest.mark.parametrize("size, seed", [(32, 0), (256.0, 0), (256, -1), (True, 0)])
def test_bad_arguments(tmp_path, size, seed):
    with pytest.raises(ValueError, match="size|seed"):
        ensure_demo_scene(tmp_path, size=size, seed=seed)


def test_classes_present(labels):
    counts = np.bincount(labels.ravel(), minlength=256)
    assert counts[NUM_CLASSES:].sum() == 0  # no nodata, no unknown class
    assert (counts[:NUM_CLASSES] > 0).sum() >= 6


def test_landscape_is_spatially_coherent(labels):
    assert _neighbour_agreement(labels) > 0.9
    # The same class frequencies without the shapes would fail.
    shuffled = np.random.default_rng(0).permutation(labels.ravel()).reshape(labels.shape)
    assert _neighbour_agreement(shuffled) < 0.5


def test_classes_follow_elevation(image, labels):
    elevation = image[-1]
    water, snow = elevation[labels == 0], elevation[labels == CLASS_NAMES.index("snow_and_ice")]
    crops = elevation[labels == CLASS_NAMES.index("crops")]
    assert water.size and snow.size and crops.size
    assert snow.mean() > 2000 > 1000 > crops.mean() > water.mean()
    assert 0 < elevation.min() and elevation.max() < 5000


def test_spectra_match_real_class_means(image, labels):
    spectra = image[: len(S2_BANDS)]
    assert np.isfinite(spectra).all() and spectra.min() >= 0
    for index, name in enumerate(CLASS_NAMES):
        mask = labels == index
        if mask.sum() < 200:
            continue
        mean = spectra[:, mask].mean(axis=1)
        np.testing.assert_allclose(mean, SPECTRA_MEAN[name], rtol=0.2, err_msg=name)


def test_spectra_are_smooth_within_objects(image, labels):
    # Horizontal neighbours of the same class differ much less than the class's spread in the scene.
    red = image[S2_BANDS.index("B4")]
    same = labels[:, 1:] == labels[:, :-1]
    neighbour_diff = np.abs(red[:, 1:] - red[:, :-1])[same].mean()
    spread = np.mean([red[labels == c].std() for c in range(NUM_CLASSES) if (labels == c).sum() > 200])
    assert neighbour_diff < 0.5 * spread


def test_regions(scene):
    collection = json.loads(pathlib.Path(scene.regions).read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert 3 <= len(features) <= 5
    names = [f["properties"]["name"] for f in features]
    assert len(set(names)) == len(names) and "mountains" in names and "town" in names
    margin = demo_scene.region_margin(SIZE)
    assert margin == 80
    with rasterio.open(scene.image) as src:
        for feature in features:
            assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
            ring = feature["geometry"]["coordinates"][0]
            assert ring[0] == ring[-1] and len(ring) >= 4
            lon, lat = np.array(ring).T
            assert (5 < lon).all() and (lon < 12).all() and (44 < lat).all() and (lat < 48).all()
            xs, ys = transform("EPSG:4326", src.crs, lon.tolist(), lat.tolist())
            cols, rows = ~src.transform * (np.array(xs), np.array(ys))
            tolerance = 1e-3
            assert (cols >= margin - tolerance).all() and (cols <= SIZE - margin + tolerance).all()
            assert (rows >= margin - tolerance).all() and (rows <= SIZE - margin + tolerance).all()
            # Anticlockwise exterior ring (RFC 7946): positive shoelace area in lon/lat.
            area = np.dot(lon[:-1], lat[1:]) - np.dot(lon[1:], lat[:-1])
            assert area > 0


def test_cli_prints_paths(tmp_path, capsys):
    assert demo_scene.main(["--cache-dir", str(tmp_path), "--size", "64", "--seed", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["image"] == str(tmp_path / "demo-scene-64-seed4" / "image.tif")
    keys = ("image", "labels", "regions", "image_after", "labels_after", "changes")
    assert all(pathlib.Path(printed[key]).is_file() for key in keys)
    assert printed["bands"][-1] == "elevation"


def test_cli_help_mentions_the_second_date(capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_scene.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "second date" in text
    assert all(name in text for name in ("image_after.tif", "labels_after.tif", "changes.json"))
