"""The extraction pipeline end to end on the DirectRunner, dead letters and bad input."""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from pipelines.extract import main
from tests.helpers.records import read_records
from tests.helpers.scenes import ORIGIN, SCALE
from transforms.contracts.manifest import read_manifest
from transforms.geometry.split import split_of


def extract(scene, output: Path, *extra: str) -> int:
    args = [
        "--inputs",
        scene.image,
        "--labels",
        scene.labels,
        "--regions",
        scene.regions,
        "--output",
        str(output),
    ]
    return main([*args, "--patch-size", "32", "--points-per-class", "6", *extra])


@pytest.fixture(scope="module")
def extracted(tiny_scene, tmp_path_factory):
    output = tmp_path_factory.mktemp("extract") / "data"
    # The per-point split, asked for explicitly: the test below checks each record's side by its id.
    assert extract(tiny_scene, output, "--validation-fraction", "0.3", "--split-block-size", "0") == 0
    return output, read_manifest(str(output))


def test_manifest_describes_what_was_written(extracted):
    output, manifest = extracted
    assert manifest["bands"] == ["red", "nir", "elevation"]
    assert manifest["patch_size"] == 32 and manifest["crs"] == "EPSG:32632" and manifest["scale"] == 10.0
    total = 0
    for split in ("train", "validation"):
        info = manifest["splits"][split]
        records = read_records(info["files"], manifest)
        assert len(records) == info["patches"] > 0
        total += len(records)
        assert all(split_of(r["point_id"].decode(), 0.3) == split for r in records)
    # north: classes 0 and 1, south: 0, 2, 3 -> 6 points each; the river patches near edges may be dead-lettered
    assert total + manifest["errors"]["count"] == 30
    per_class = {
        c: sum(manifest["splits"][s]["patches_per_class"][c] for s in ("train", "validation"))
        for c in manifest["classes"][:4]
    }
    assert per_class["trees"] == per_class["grass"] == per_class["flooded_vegetation"] == 6


def test_records_equal_direct_reads(extracted, tiny_scene):
    _, manifest = extracted
    records = read_records(manifest["splits"]["train"]["files"], manifest)
    with rasterio.open(tiny_scene.image) as src:
        for record in records[:5]:
            _, row, col = (int(v) if v.isdigit() else v for v in record["point_id"].decode().split("/"))
            window = Window(col - 16, row - 16, 32, 32)
            np.testing.assert_array_equal(record["nir"], src.read(2, window=window))
            np.testing.assert_array_equal(
                record["landcover"], tiny_scene.label_pixels[row - 16 : row + 16, col - 16 : col + 16]
            )
            assert record["landcover"][16, 16] == tiny_scene.label_pixels[row, col]


def test_edge_points_are_dead_lettered_or_padded(tiny_scene, tmp_path):
    """With 96-pixel patches some points' patches run off the 200-pixel scene."""
    assert extract(tiny_scene, tmp_path / "drop", "--patch-size", "96") == 0
    manifest = read_manifest(str(tmp_path / "drop"))
    assert manifest["errors"]["count"] > 0
    lines = [json.loads(line) for f in manifest["errors"]["files"] for line in open(f)]
    assert len(lines) == manifest["errors"]["count"]
    assert all("runs off the raster edge" in line["error"] and line["point"]["id"] for line in lines)

    assert extract(tiny_scene, tmp_path / "pad", "--patch-size", "96", "--pad-edges") == 0
    padded = read_manifest(str(tmp_path / "pad"))
    assert padded["errors"]["count"] == 0
    records = [r for s in ("train", "validation") for r in read_records(padded["splits"][s]["files"], padded)]
    flagged = [r for r in records if r["padded"] == 1]
    assert len(flagged) == manifest["errors"]["count"]
    assert all((r["landcover"] == 255).any() for r in flagged)


def test_same_output_on_every_run(extracted, tiny_scene, tmp_path):
    _, first = extracted
    assert (
        extract(tiny_scene, tmp_path / "again", "--validation-fraction", "0.3", "--split-block-size", "0")
        == 0
    )
    second = read_manifest(str(tmp_path / "again"))
    ids = lambda m, s: sorted(r["point_id"] for r in read_records(m["splits"][s]["files"], m))  # noqa: E731
    for split in ("train", "validation"):
        assert ids(first, split) == ids(second, split)


def test_one_file_per_band_and_band_subset(tiny_scene, tmp_path):
    args = [
        "--inputs",
        *tiny_scene.band_files,
        "--labels",
        tiny_scene.labels,
        "--regions",
        tiny_scene.regions,
    ]
    assert (
        main(
            [
                *args,
                "--bands",
                "elevation,red",
                "--patch-size",
                "16",
                "--points-per-class",
                "2",
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 0
    )
    manifest = read_manifest(str(tmp_path / "o"))
    assert manifest["bands"] == ["elevation", "red"]
    written = manifest["splits"]["train"]["patches"] + manifest["splits"]["validation"]["patches"]
    assert written + manifest["split"]["points_in_guard_band"] == 10


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--inputs": "missing.tif"}, "Cannot open raster"),
        ({"--bands": "red,B99"}, "B99 not found"),
        ({"--patch-size": "0"}, "--patch-size must be a positive"),
        ({"--patch-size": "500"}, "larger than the label raster"),
        ({"--points-per-class": "0"}, "--points-per-class must be at least 1"),
        ({"--regions": "EMPTY"}, "no polygons"),
        ({"--regions": "INVALID"}, "not valid GeoJSON"),
        ({"--regions": "OUTSIDE"}, "outside the raster footprint"),
        ({"--labels": "ROTATED"}, "north-up"),
        ({"--output": "/proc/terrabeam-cannot-write"}, "not writable"),
        ({"--validation-fraction": "1.5"}, "validation fraction"),
    ],
)
def test_bad_input_gets_a_clear_message_and_writes_nothing(tiny_scene, tmp_path, capsys, change, message):
    files = {
        "EMPTY": json.dumps({"type": "FeatureCollection", "features": []}),
        "INVALID": "{nope",
        "OUTSIDE": json.dumps(
            {"type": "Polygon", "coordinates": [[[0, 0], [0.01, 0], [0.01, 0.01], [0, 0]]]}
        ),
    }
    args = {
        "--inputs": tiny_scene.image,
        "--labels": tiny_scene.labels,
        "--regions": tiny_scene.regions,
        "--output": str(tmp_path / "out"),
        "--patch-size": "16",
    }
    for key, value in change.items():
        if value in files:
            (tmp_path / value).write_text(files[value])
            value = str(tmp_path / value)
        elif value == "ROTATED":
            value = str(rotated_copy(tiny_scene.labels, tmp_path / "rotated.tif"))
        args[key] = value
    assert main([x for kv in args.items() for x in kv]) == 2
    assert message in capsys.readouterr().err
    assert not glob.glob(str(tmp_path / "out" / "**" / "*.tfrecord*"), recursive=True)


def rotated_copy(path: str, target: Path) -> Path:
    from affine import Affine

    with rasterio.open(path) as src:
        profile = src.profile
        profile["transform"] = src.transform * Affine.rotation(5)
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(src.read())
    return target


def test_refuses_to_mix_with_an_earlier_extraction(extracted, tiny_scene, capsys):
    output, _ = extracted
    assert extract(tiny_scene, output) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_no_arguments_uses_the_demo_scene(demo_extraction):
    """The embedded default: the generated demo scene, all 14 bands, 128-pixel patches, every class."""
    manifest = read_manifest(demo_extraction.output)
    assert manifest["source"]["kind"] == "demo"
    assert len(manifest["bands"]) == 14 and manifest["bands"][-1] == "elevation"
    assert manifest["patch_size"] == 128 and manifest["crs"].startswith("EPSG:326")
    counts = {
        c: sum(s["patches_per_class"][c] for s in manifest["splits"].values()) for c in manifest["classes"]
    }
    assert all(n >= 3 for n in counts.values()), counts


def test_misspelt_option_is_reported_not_ignored(tiny_scene, tmp_path, capsys):
    assert extract(tiny_scene, tmp_path / "o", "--points-per-clas", "3") == 2
    assert "--points-per-clas (did you mean --points-per-class?)" in capsys.readouterr().err


def test_spatial_block_split_keeps_each_block_on_one_side(tiny_scene, tmp_path):
    block = 640.0  # 64 pixels of 10 m
    out = tmp_path / "blocks"
    extra = ["--patch-size", "16", "--points-per-class", "20"]  # the guard band leaves most points in
    assert (
        extract(tiny_scene, out, "--split-block-size", str(block), "--validation-fraction", "0.5", *extra)
        == 0
    )
    manifest = read_manifest(str(out))
    assert manifest["options"]["split_block_size"] == block

    def sides(manifest: dict) -> dict[tuple[int, int], str]:
        side_of_block = {}
        for split in ("train", "validation"):
            for record in read_records(manifest["splits"][split]["files"], manifest):
                _, row, col = record["point_id"].decode().split("/")
                x, y = ORIGIN[0] + (int(col) + 0.5) * SCALE, ORIGIN[1] - (int(row) + 0.5) * SCALE
                key = (math.floor(x / block), math.floor(y / block))
                assert side_of_block.setdefault(key, split) == split
        return side_of_block

    first = sides(manifest)
    assert set(first.values()) == {"train", "validation"}
    # At 0.5 there are two folds, and the second holds out exactly the blocks the first trains on.
    swapped = tmp_path / "fold1"
    argv = ["--split-block-size", str(block), "--validation-fraction", "0.5", *extra]
    assert extract(tiny_scene, swapped, *argv, "--split-fold", "1") == 0
    folded = read_manifest(str(swapped))
    assert (folded["split"]["fold"], folded["split"]["folds"], folded["options"]["split_fold"]) == (1, 2, 1)
    second = sides(folded)
    both = first.keys() & second.keys()
    assert both and all(first[key] != second[key] for key in both)


def patch_overlap(train: list[tuple[int, int]], validation: list[tuple[int, int]], size: int) -> int:
    """Validation patch pixels inside some training patch, counted pixel by pixel from the records'
    centre pixels (independently of the split module)."""
    covered = 0
    for vr, vc in validation:
        mask = np.zeros((size, size), bool)
        for tr, tc in train:
            dr, dc = tr - vr, tc - vc
            if abs(dr) < size and abs(dc) < size:
                mask[max(0, dr) : size + min(0, dr), max(0, dc) : size + min(0, dc)] = True
        covered += int(mask.sum())
    return covered


def centre_pixels(manifest: dict, split: str) -> list[tuple[int, int]]:
    out = []
    for record in read_records(manifest["splits"][split]["files"], manifest):
        _, row, col = record["point_id"].decode().split("/")
        out.append((int(row), int(col)))
    return out


def test_the_default_split_leaves_no_validation_pixel_in_a_training_patch(tiny_scene, tmp_path, capsys):
    out = tmp_path / "default"
    # Dense points (patches overlap heavily) and blocks small enough for the tiny scene to hold several.
    extra = ["--patch-size", "16", "--points-per-class", "40", "--split-block-size", "400"]
    assert extract(tiny_scene, out, *extra, "--validation-fraction", "0.5") == 0
    manifest = read_manifest(str(out))
    split = manifest["split"]
    assert split["rule"] == "spatial-blocks-with-guard" and split["block_size"] == 400.0
    train, validation = centre_pixels(manifest, "train"), centre_pixels(manifest, "validation")
    assert train and validation
    assert patch_overlap(train, validation, 16) == 0 and split["overlap"] == 0.0
    # Every sampled point is a patch, a dead letter or left out in the guard band.
    assert split["points_in_guard_band"] > 0
    written = sum(manifest["splits"][s]["patches"] for s in ("train", "validation"))
    assert (
        written + manifest["errors"]["count"] + split["points_in_guard_band"] == 40 * 5
    )  # north: classes 0, 1; south: 0, 2, 3
    assert "Split: spatial blocks of 400 CRS units with a guard band" in capsys.readouterr().out


def test_the_per_point_split_measures_its_leak(tiny_scene, tmp_path, capsys):
    out = tmp_path / "per-point"
    assert (
        extract(
            tiny_scene,
            out,
            "--points-per-class",
            "40",
            "--split-block-size",
            "0",
            "--validation-fraction",
            "0.3",
        )
        == 0
    )
    manifest = read_manifest(str(out))
    train, validation = centre_pixels(manifest, "train"), centre_pixels(manifest, "validation")
    expected = patch_overlap(train, validation, 32) / (len(validation) * 32 * 32)
    assert manifest["split"]["rule"] == "per-point"
    assert manifest["split"]["overlap"] == pytest.approx(expected) and expected > 0.5
    assert "Split: per point;" in capsys.readouterr().out


def test_auto_blocks_shrink_to_two_patch_extents_over_small_regions(tiny_scene, tmp_path):
    out = tmp_path / "auto"
    assert extract(tiny_scene, out, "--validation-fraction", "0.3") == 0
    manifest = read_manifest(str(out))
    # Four extents (1,280 m) would give the two 1.2 km regions fewer than 64 blocks: two extents, then.
    assert (
        manifest["split"]["block_size"] == 2 * 32 * 10.0 and manifest["split"]["guard_half_extent"] == 170.0
    )
    assert manifest["options"]["split_block_size"] == "auto"


def test_a_block_smaller_than_a_patch_is_refused(tiny_scene, tmp_path, capsys):
    assert extract(tiny_scene, tmp_path / "o", "--split-block-size", "100") == 2
    assert "smaller than a patch" in capsys.readouterr().err


def test_a_fold_beyond_the_fractions_folds_is_refused(tiny_scene, tmp_path, capsys):
    assert extract(tiny_scene, tmp_path / "o", "--validation-fraction", "0.25", "--split-fold", "4") == 2
    assert (
        "split fold must be 0 to 3 at a validation fraction of 0.25 (4 folds), got 4"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "o").exists()
