"""COG encoding, VRT mosaic, single-COG mosaic and quick-look PNG, on small in-memory predictions."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from transforms.cog import (
    CLASSES_NAME,
    POSITIVE_NAME,
    PROBABILITIES_NAME,
    OutputSpec,
    build_vrt,
    encode_classes,
    encode_probabilities,
    quicklook_png,
    vrt_to_cog,
    write_tile,
)
from transforms.contracts.label_scheme import dynamic_world, resolve_label_scheme, scheme_from_json
from transforms.contracts.schema import CLASS_NODATA
from transforms.geometry.grid import GridSpec
from transforms.geometry.tiling import TilePlan, TilingSpec
from transforms.inference import TilePrediction

LATTICE = GridSpec("EPSG:32632", 10.0, 600_000.0, 5_120_000.0)
DW = dynamic_world()
CLASS_NAMES = DW.names


def palette_rgb():
    return DW.palette_rgb()


NOVEL = scheme_from_json(
    {
        "name": "novel",
        "classes": [
            {"name": "water", "values": [1]},
            {"name": "trees", "values": [2]},
            {"name": "grass", "values": [3]},
            {"name": "novel", "values": [4], "color": "#123456"},
        ],
    }
)


def _valid(path) -> None:
    is_valid, errors, warnings = cog_validate(str(path), strict=False)
    assert is_valid, errors
    assert not errors


def test_class_map_cog_is_valid_georeferenced_and_paletted(tmp_path):
    grid = LATTICE.window(3, 5, 700, 600)
    classes = (np.arange(600 * 700).reshape(600, 700) % 9).astype(np.uint8)
    classes[:10, :10] = CLASS_NODATA
    path = tmp_path / "classes.tif"
    path.write_bytes(encode_classes(classes, grid, DW))
    _valid(path)
    with rasterio.open(path) as src:
        assert src.crs == CRS.from_epsg(32632)
        assert tuple(src.transform)[:6] == grid.transform
        assert src.nodata == CLASS_NODATA and src.dtypes[0] == "uint8"
        assert src.overviews(1), "a 700×600 map has overviews"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.colormap(1)[1][:3] == palette_rgb()[1]
        assert src.colormap(1)[CLASS_NODATA][3] == 0
        assert src.tags(1)["class_names"] == ",".join(CLASS_NAMES)
        assert src.tags(1)["class_colors"].split(",")[6] == "#c4281b"
        assert src.tags(1)["classes"].startswith("0:water,1:trees")
        assert (src.read(1) == classes).all()


@pytest.mark.parametrize("encoding", ["uint8", "float32"])
def test_probability_cog_scales_and_marks_nodata(tmp_path, encoding):
    grid = LATTICE.window(0, 0, 20, 10)
    probabilities = np.random.default_rng(0).dirichlet(np.ones(3), size=(10, 20)).astype(np.float32)
    probabilities[0, 0] = np.nan
    path = tmp_path / "p.tif"
    path.write_bytes(encode_probabilities(probabilities, grid, ["a", "b", "c"], encoding))
    _valid(path)
    with rasterio.open(path) as src:
        assert src.descriptions == ("a", "b", "c")
        data = src.read()
        if encoding == "uint8":
            assert (data[:, 0, 0] == 255).all()
            decoded = data[:, 1:, :] * src.scales[0]
            assert np.abs(decoded - np.moveaxis(probabilities[1:], -1, 0)).max() <= 0.5 / 254 + 1e-6
        else:
            assert np.isnan(data[:, 0, 0]).all()
            assert np.array_equal(data[:, 1:], np.moveaxis(probabilities[1:], -1, 0))


def _predict_plan(plan: TilePlan, scene: np.ndarray, num_classes: int):
    for tile in plan:
        core = scene[tile.row_off : tile.row_off + tile.height, tile.col_off : tile.col_off + tile.width]
        probabilities = np.eye(num_classes, dtype=np.float32)[core]
        yield TilePrediction(tile, core.astype(np.uint8), probabilities)


def test_vrt_and_single_cog_mosaic_reassemble_the_tiles(tmp_path):
    plan = TilePlan(LATTICE, 7, 3, 150, 110, TilingSpec(64, 16))  # uneven: 4×3 tiles of 48-pixel cores
    scene = np.random.default_rng(1).integers(0, 4, (110, 150))
    spec = OutputSpec(str(tmp_path), NOVEL, "uint8")
    records = [write_tile(p, spec) for p in _predict_plan(plan, scene, 4)]
    skipped = records.pop(5)  # a tile without data is never written: nodata in the mosaic
    x, y, w, h = skipped["window"]
    for kind in (CLASSES_NAME, PROBABILITIES_NAME):
        (tmp_path / f"{kind}.vrt").write_text(build_vrt(plan.output, records, spec, kind))
    with rasterio.open(tmp_path / "classes.vrt") as src:
        assert tuple(src.transform)[:6] == plan.output.transform
        assert src.crs == CRS.from_epsg(32632)
        data = src.read(1)
        assert src.colormap(1)[3][:3] == (0x12, 0x34, 0x56)
        assert src.tags(1)["class_names"] == "water,trees,grass,novel"
    expected = scene.astype(np.uint8)
    expected[y : y + h, x : x + w] = CLASS_NODATA
    assert (data == expected).all()
    with rasterio.open(tmp_path / "probabilities.vrt") as src:
        assert src.count == 4 and src.descriptions[1] == "trees"
        assert (src.read(2)[expected == 1] == 254).all()

    vrt_to_cog(str(tmp_path / "classes.vrt"), str(tmp_path / "classes.tif"), CLASSES_NAME)
    _valid(tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "classes.tif") as src:
        assert (src.read(1) == expected).all()
        assert tuple(src.transform)[:6] == plan.output.transform
        assert src.nodata == CLASS_NODATA
        assert src.colormap(1)[0][:3] == NOVEL.palette_rgb()[0]


def test_single_cog_of_a_large_map_has_overviews(tmp_path):
    plan = TilePlan(LATTICE, 0, 0, 1100, 900, TilingSpec(512, 0))
    scene = (np.add.outer(np.arange(900) // 100, np.arange(1100) // 100) % 9).astype(np.int64)
    spec = OutputSpec(str(tmp_path), DW)
    records = [write_tile(p, spec) for p in _predict_plan(plan, scene, 9)]
    (tmp_path / "classes.vrt").write_text(build_vrt(plan.output, records, spec, CLASSES_NAME))
    vrt_to_cog(str(tmp_path / "classes.vrt"), str(tmp_path / "classes.tif"), CLASSES_NAME)
    _valid(tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "classes.tif") as src:
        assert src.overviews(1)[:1] == [2]
        assert (src.read(1) == scene).all()


def test_quicklook_png_shows_the_palette_and_a_legend(tmp_path):
    grid = LATTICE.window(0, 0, 300, 200)
    classes = np.zeros((200, 300), np.uint8)
    classes[:, 150:] = 1
    classes[:20, :20] = CLASS_NODATA
    path = tmp_path / "classes.tif"
    path.write_bytes(encode_classes(classes, grid, DW))
    counts = [150 * 200 - 400, 150 * 200] + [0] * 7
    png = quicklook_png(str(path), DW, counts, title="test")
    image = Image.open(io.BytesIO(png)).convert("RGB")
    # Small maps are enlarged (here ×2) and a legend is added to the right.
    assert image.width > 600 and image.height >= 400
    title = 34  # the title band above the map
    assert image.getpixel((10, title + 100)) == palette_rgb()[0]
    assert image.getpixel((590, title + 300)) == palette_rgb()[1]
    assert image.getpixel((5, title + 5)) == (255, 255, 255)  # nodata
    legend = np.asarray(image)[:, 600:]
    for rgb in palette_rgb():
        assert (legend == rgb).all(axis=-1).any(), f"legend lacks {rgb}"


def test_quicklook_of_a_large_map_is_bounded(tmp_path):
    grid = LATTICE.window(0, 0, 3000, 1500)
    path = tmp_path / "classes.tif"
    path.write_bytes(encode_classes(np.full((1500, 3000), 2, np.uint8), grid, DW))
    image = Image.open(io.BytesIO(quicklook_png(str(path), DW, [0, 0, 1] + [0] * 6)))
    assert image.height <= 1024 and image.width < 1024 + 400


def test_two_classes_write_the_positive_class_probability(tmp_path):
    plan = TilePlan(LATTICE, 0, 0, 90, 70, TilingSpec(48, 8))
    scene = np.random.default_rng(2).integers(0, 2, (70, 90))
    water = resolve_label_scheme("binary:water=1:ignore=-1")
    spec = OutputSpec(str(tmp_path), water)
    assert spec.kinds == [CLASSES_NAME, POSITIVE_NAME] and spec.needs_probabilities
    records = []
    for prediction in _predict_plan(plan, scene, 2):
        prediction.probabilities = np.where(prediction.probabilities > 0, 0.75, 0.25).astype(np.float32)
        records.append(write_tile(prediction, spec))
    (tmp_path / "probability.vrt").write_text(build_vrt(plan.output, records, spec, POSITIVE_NAME))
    vrt_to_cog(str(tmp_path / "probability.vrt"), str(tmp_path / "probability.tif"), POSITIVE_NAME)
    _valid(tmp_path / "probability.tif")
    with rasterio.open(tmp_path / "probability.tif") as src:
        assert src.count == 1 and src.descriptions == ("water",) and src.dtypes[0] == "float32"
        values = src.read(1)
    np.testing.assert_array_equal(values, np.where(scene == 1, 0.75, 0.25).astype(np.float32))
    assert OutputSpec(str(tmp_path), DW).kinds == [CLASSES_NAME]
    assert OutputSpec(str(tmp_path), water, "uint8").bands_of(POSITIVE_NAME) == (("water",), "uint8")
