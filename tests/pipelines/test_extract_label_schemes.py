"""Extraction with label schemes: an NLCD-style many-to-one remap through the local and the Earth Engine
source, unknown values, rasters that name no classes, sampling without a regions file."""

from __future__ import annotations

import json
from pathlib import Path

import ee
import numpy as np
import pytest
import rasterio
import rasterio.warp
from google.auth.credentials import AnonymousCredentials

from pipelines.extract import main
from tests.helpers.fake_earthengine import FakeEarthEngine
from tests.helpers.records import read_all
from tests.helpers.scenes import CRS, TinyScene
from transforms.contracts.manifest import read_manifest
from transforms.geometry.sampling import load_regions
from transforms.io.earthengine import client as earthengine

# Codes of an NLCD-like label raster: several per class, one ignored (0), one no class lists (99).
NLCD_LIKE = {
    "name": "nlcd-like",
    "classes": [
        {"name": "water", "values": [11], "color": "#466b9f"},
        {"name": "developed", "values": [21, 22, 23, 24], "color": "#eb0000"},
        {"name": "forest", "values": [41, 42, 43], "color": "#1c5f2c"},
    ],
    "ignore": [0],
}


def write_nlcd_like(tiny_scene: TinyScene, folder: Path) -> str:
    """The tiny scene's quadrants coded as NLCD-like values, with ignored and unknown pixels."""
    with rasterio.open(tiny_scene.labels) as src:
        profile = src.profile
        quadrants = src.read(1)
    codes = np.select(
        [quadrants == 0, quadrants == 1, quadrants == 2, quadrants == 3],
        [11, 21, 42, 24],
    ).astype(np.uint8)
    codes[120:130, 20:60] = 22  # a second developed code in the south-west
    codes[60:70, 120:170] = 43  # a third forest code in the north-east
    codes[150:160, 150:160] = 0  # ignored
    codes[50:54, 130:134] = 99  # unknown: 16 pixels, inside the north region
    profile.update(nodata=None)
    path = folder / "nlcd_like.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes, 1)
        dst.set_band_description(1, "landcover")
    return str(path)


@pytest.fixture(scope="module")
def nlcd(tiny_scene, tmp_path_factory):
    folder = tmp_path_factory.mktemp("nlcd")
    classes = folder / "nlcd-like.json"
    classes.write_text(json.dumps(NLCD_LIKE))
    return write_nlcd_like(tiny_scene, folder), str(classes)


def local_args(tiny_scene, labels: str, output: Path, *extra: str) -> list[str]:
    return [
        "--inputs",
        tiny_scene.image,
        "--labels",
        labels,
        "--regions",
        tiny_scene.regions,
        "--output",
        str(output),
        "--patch-size",
        "16",
        "--points-per-class",
        "4",
        *extra,
    ]


def label_values(output: Path) -> set[int]:
    return {int(v) for record in read_all(output).values() for v in np.unique(record["landcover"])}


def test_unknown_values_stop_the_job_with_their_counts(tiny_scene, nlcd, tmp_path, capsys):
    labels, classes = nlcd
    assert main(local_args(tiny_scene, labels, tmp_path / "out", "--label-scheme", classes)) == 2
    err = capsys.readouterr().err
    assert "label values the label scheme 'nlcd-like' does not list: 99 (16 px)" in err
    assert "--unknown-labels ignore" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_many_to_one_remap_through_the_local_source(tiny_scene, nlcd, tmp_path):
    labels, classes = nlcd
    output = tmp_path / "out"
    args = local_args(tiny_scene, labels, output, "--label-scheme", classes, "--unknown-labels", "ignore")
    assert main([*args, "--classes", "developed,forest"]) == 0
    manifest = read_manifest(str(output))
    assert manifest["classes"] == ["water", "developed", "forest"]
    assert manifest["label_scheme"]["classes"][1] == {
        "name": "developed",
        "values": [21, 22, 23, 24],
        "color": "#eb0000",
    }
    assert manifest["options"]["classes"] == ["developed", "forest"]
    counts = {
        c: sum(s["patches_per_class"][c] for s in manifest["splits"].values()) for c in manifest["classes"]
    }
    assert counts["water"] == 0 and counts["developed"] > 0 and counts["forest"] > 0
    assert label_values(output) <= {0, 1, 2, 255}
    records = read_all(output)
    # Every record's label is the scheme's remap of the raster under the patch.
    lut = np.full(256, 255, np.uint8)
    lut[[11, 21, 22, 23, 24, 41, 42, 43]] = [0, 1, 1, 1, 1, 2, 2, 2]
    with rasterio.open(labels) as src:
        codes = src.read(1)
        for record in list(records.values())[:6]:
            (x,), (y,) = rasterio.warp.transform("EPSG:4326", CRS, [record["lon"]], [record["lat"]])
            row, col = src.index(x, y)
            np.testing.assert_array_equal(
                record["landcover"], lut[codes[row - 8 : row + 8, col - 8 : col + 8]]
            )


@pytest.fixture
def nlcd_fake(tiny_scene, nlcd, monkeypatch):
    monkeypatch.setattr(ee.data, "get_persistent_credentials", lambda: AnonymousCredentials())
    earthengine._gates.clear()
    with FakeEarthEngine([tiny_scene.image], nlcd[0], load_regions(tiny_scene.regions)) as fake:
        yield fake
        assert not fake.errors, fake.errors


def ee_args(fake, tiny_scene, output: Path, *extra: str) -> list[str]:
    return [
        "--source",
        "earthengine",
        "--ee-project",
        fake.project,
        "--ee-endpoint",
        fake.url,
        "--ee-image",
        "fake/image:red,nir,elevation",
        "--ee-labels",
        "fake/nlcd:landcover",
        "--regions",
        tiny_scene.regions,
        "--crs",
        CRS,
        "--scale",
        "10",
        "--patch-size",
        "16",
        "--points-per-class",
        "4",
        "--output",
        str(output),
        *extra,
    ]


@pytest.mark.slow
def test_many_to_one_remap_through_earth_engine_equals_local(tiny_scene, nlcd, nlcd_fake, tmp_path, capsys):
    labels, classes = nlcd
    # No scheme for an arbitrary label asset: the values found are listed, nothing is written.
    assert main(ee_args(nlcd_fake, tiny_scene, tmp_path / "none")) == 2
    err = capsys.readouterr().err
    assert "needs --label-scheme" in err and "99 (16 px)" in err and "21 (" in err
    # Unknown values are found by Earth Engine's histogram too.
    assert main(ee_args(nlcd_fake, tiny_scene, tmp_path / "unknown", "--label-scheme", classes)) == 2
    assert "does not list: 99 (16 px)" in capsys.readouterr().err
    assert not (tmp_path / "unknown" / "manifest.json").exists()

    ignore = ["--label-scheme", classes, "--unknown-labels", "ignore", "--crs", CRS, "--scale", "10"]
    ignore += ["--split-block-size", "300"]  # point ids differ between the sources; blocks do not
    assert main(ee_args(nlcd_fake, tiny_scene, tmp_path / "ee", *ignore)) == 0
    assert main(local_args(tiny_scene, labels, tmp_path / "local", *ignore)) == 0
    got, expected = read_all(tmp_path / "ee"), read_all(tmp_path / "local")
    assert got.keys() == expected.keys() and len(got) > 6
    for key, record in expected.items():
        np.testing.assert_array_equal(got[key]["landcover"], record["landcover"], err_msg=str(key))
    remaps = [r for r in nlcd_fake.requests if "Image.remap" in json.dumps(r.body)]
    assert remaps, "the labels were remapped on the server"
    assert label_values(tmp_path / "ee") <= {0, 1, 2, 255}


def test_a_raster_without_class_names_needs_a_scheme(tiny_scene, nlcd, tmp_path, capsys):
    labels, _ = nlcd
    assert main(local_args(tiny_scene, labels, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "does not name its classes" in err and "11 (" in err and "99 (16 px)" in err
    assert '"values": [21]' in err and "--label-scheme" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_without_regions_the_whole_raster_is_sampled(tiny_scene, tmp_path, capsys):
    output = tmp_path / "out"
    args = ["--inputs", tiny_scene.image, "--labels", tiny_scene.labels, "--output", str(output)]
    assert main([*args, "--patch-size", "16", "--points-per-class", "3", "--pad-edges"]) == 0
    assert "No --regions given" in capsys.readouterr().err
    manifest = read_manifest(str(output))
    regions = {r["region"].decode() for r in read_all(output).values()}
    assert regions == {"all"}
    assert manifest["classes"] == ["water", "trees", "grass", "flooded_vegetation"]
    total = sum(s["patches"] for s in manifest["splits"].values()) + manifest["errors"]["count"]
    assert total + manifest["split"]["points_in_guard_band"] == 4 * 3


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--label-scheme", "nope"], "neither a preset"),
        (["--label-scheme", "binary:trees"], "binary:NAME=VALUE"),
        (["--classes", "lava"], "'lava' is not a class of the label scheme"),
    ],
)
def test_bad_scheme_options(tiny_scene, tmp_path, capsys, flags, message):
    output = tmp_path / "out"
    assert main(local_args(tiny_scene, tiny_scene.labels, output, *flags)) == 2
    assert message in capsys.readouterr().err
    assert not (output / "manifest.json").exists()
