"""Label schemes: parsing, checks, presets, remapping, and what rasters carry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from transforms.contracts.label_scheme import (
    LABEL_NODATA,
    MAX_CLASSES,
    PRESETS,
    UNKNOWN_IGNORE,
    UNKNOWN_INDEX,
    LabelSchemeError,
    describe_histogram,
    label_histogram,
    raster_categories,
    resolve_label_scheme,
    scheme_from_json,
    scheme_from_metadata,
    scheme_from_raster,
)

NC_CLASSES = {
    "name": "nc-landclass96",
    "classes": [
        {"name": "developed", "values": [1], "color": "#c4281b"},
        {"name": "agriculture", "values": [2], "color": "#e49635"},
        {"name": "herbaceous", "values": [3]},
        {"name": "shrubland", "values": [4], "color": "olive"},
        {"name": "forest", "values": [5], "color": [57, 125, 73]},
        {"name": "water", "values": [6], "color": "#419bdf"},
        {"name": "sediment", "values": [7], "color": "#abc"},
    ],
    "ignore": [0],
}


def test_classes_file_round_trip_and_colours(tmp_path):
    path = tmp_path / "nc.json"
    path.write_text(json.dumps(NC_CLASSES))
    scheme = resolve_label_scheme(str(path))
    assert scheme.name == "nc-landclass96"
    assert scheme.names == (
        "developed",
        "agriculture",
        "herbaceous",
        "shrubland",
        "forest",
        "water",
        "sediment",
    )
    assert scheme.colors[0] == "#c4281b" and scheme.colors[3] == "#808000" and scheme.colors[4] == "#397d49"
    assert scheme.colors[6] == "#aabbcc"
    assert scheme.colors[2].startswith("#") and len(set(scheme.colors)) == 7  # default palette fills in
    assert scheme_from_json(scheme.to_json()) == scheme
    assert scheme_from_metadata({"label_scheme": scheme.to_json(), "classes": list(scheme.names)}) == scheme
    assert scheme.remap(np.array([[1, 7], [0, 6]], np.int16)).tolist() == [[0, 6], [LABEL_NODATA, 5]]


def test_many_to_one_ignore_unknown_and_nan():
    scheme = scheme_from_json(
        {
            "name": "nlcd-like",
            "classes": [
                {"name": "developed", "values": [21, 22, 23, 24]},
                {"name": "forest", "values": [41, 42, 43]},
                {"name": "water", "values": 11},
            ],
            "ignore": [0],
        }
    )
    values = np.array([21, 24, 42, 11, 0, 99, np.nan, -99999], np.float32)
    assert scheme.remap(values, nodata=-99999).tolist() == [0, 0, 1, 2, 255, UNKNOWN_INDEX, 255, 255]
    histogram = {21.0: 5, 0.0: 3, 99.0: 7, 12.5: 1}
    assert scheme.unknown_values(histogram) == {99.0: 7, 12.5: 1}
    assert describe_histogram({99.0: 7000, 12.5: 1}) == "12.5 (1 px), 99 (7,000 px)"
    keys, targets, default = scheme.ee_remap()
    assert dict(zip(keys, targets)) == {0: 255, 21: 0, 22: 0, 23: 0, 24: 0, 41: 1, 42: 1, 43: 1, 11: 2}
    assert default == UNKNOWN_INDEX and scheme.ee_remap(UNKNOWN_IGNORE)[2] == LABEL_NODATA


def test_binary_shortcut():
    scheme = resolve_label_scheme("binary:water=1:ignore=-1")
    assert scheme.names == ("not_water", "water") and scheme.is_binary and scheme.positive_class == "water"
    assert scheme.remap(np.array([-1, 0, 1, 2])).tolist() == [255, 0, 1, 0]
    assert scheme.unknown_values({5.0: 1}) == {}  # the negative class takes every other value
    trees = resolve_label_scheme("binary:trees=10,95")
    assert trees.remap(np.array([10, 95, 20])).tolist() == [1, 1, 0]
    assert trees.ee_remap() == ([10, 95], [1, 1], 0)
    for bad in ("binary:trees", "binary:trees=x", "binary:trees=1:skip=2"):
        with pytest.raises(LabelSchemeError, match="binary:NAME=VALUE"):
            resolve_label_scheme(bad)


def test_presets():
    dw = resolve_label_scheme("dynamic-world")
    assert dw.names[0] == "water" and dw.num_classes == 9 and dw.is_identity
    assert dw.palette_rgb()[1] == (57, 125, 73)
    worldcover = resolve_label_scheme("worldcover")
    assert worldcover.num_classes == 11 and worldcover.remap(np.array([10, 100, 0])).tolist() == [0, 10, 255]
    grouped = PRESETS["dynamic-world-from-worldcover"]
    assert grouped.names == dw.names and grouped.remap(np.array([90, 95, 60, 100])).tolist() == [3, 3, 7, 7]
    assert PRESETS["nlcd"].remap(np.array([11, 95, 250])).tolist() == [0, 19, 255]


def test_raster_vision_class_config():
    scheme = scheme_from_json(
        {
            "names": ["background", "building", "road"],
            "colors": ["black", "red", "#808080"],
            "null_class": "background",
        }
    )
    assert scheme.names == ("building", "road") and scheme.ignore == (0,)
    assert scheme.remap(np.array([0, 1, 2])).tolist() == [255, 0, 1]


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            {"classes": [{"name": "a", "values": [1]}, {"name": "b", "values": [1]}]},
            "value 1 is listed by both",
        ),
        ({"classes": [{"name": "a", "values": [1]}, {"name": "a", "values": [2]}]}, "occur twice"),
        (
            {"classes": [{"name": "a", "values": [1], "color": "#12345"}, {"name": "b", "values": [2]}]},
            "not a colour",
        ),
        (
            {"classes": [{"name": "a", "values": [1], "color": "reddish"}, {"name": "b", "values": [2]}]},
            "not a colour",
        ),
        ({"classes": [{"name": "a", "values": [1]}]}, "at least 2"),
        ({"classes": [{"name": "a", "values": [1.5]}, {"name": "b", "values": [2]}]}, "whole numbers"),
        ({"classes": [{"name": "a"}, {"name": "b", "values": [2]}]}, "has no 'values'"),
        (
            {"classes": [{"name": "a b", "values": [1]}, {"name": "b", "values": [2]}]},
            "must start with a letter",
        ),
        (
            {"classes": [{"name": "a", "values": [1]}, {"name": "b", "values": [2]}], "ignore": [2]},
            "both ignored",
        ),
        ({"classes": [{"name": "a", "values": "*"}, {"name": "b", "values": "*"}]}, "only one class"),
        ({"classes": []}, "non-empty list"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_schemes_say_what_to_change(doc, message):
    with pytest.raises(LabelSchemeError, match=message):
        scheme_from_json(doc)


def test_too_many_classes():
    doc = {"classes": [{"name": f"c{i}", "values": [i]} for i in range(MAX_CLASSES + 1)]}
    with pytest.raises(LabelSchemeError, match="at most 254"):
        scheme_from_json(doc)
    doc["classes"].pop()
    assert scheme_from_json(doc).num_classes == MAX_CLASSES


def test_missing_or_broken_classes_file(tmp_path):
    with pytest.raises(LabelSchemeError, match="neither a preset"):
        resolve_label_scheme(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(LabelSchemeError, match="not valid JSON"):
        resolve_label_scheme(str(broken))


def test_legacy_metadata_keeps_names_and_dynamic_world_colours():
    dw = PRESETS["dynamic-world"]
    assert scheme_from_metadata({"classes": list(dw.names)}) == dw
    other = scheme_from_metadata({"classes": ["a", "b"]})
    assert other.names == ("a", "b") and other.remap(np.array([0, 1])).tolist() == [0, 1]


def _label_raster(path, values, nodata=None, dtype="int16"):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=values.shape[1],
        height=values.shape[0],
        count=1,
        dtype=dtype,
        crs="EPSG:32632",
        transform=from_origin(600000, 5000000, 10, 10),
        nodata=nodata,
    ) as dst:
        dst.write(values.astype(dtype), 1)
    return str(path)


def test_scheme_from_category_names_and_colour_table(tmp_path):
    values = np.array([[1, 2], [3, 0]])
    path = _label_raster(tmp_path / "labels.tif", values, nodata=0, dtype="uint8")
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)})
    # What GDAL writes beside a GeoTIFF for SetCategoryNames (a PAM file).
    (tmp_path / "labels.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><CategoryNames><Category>No data</Category>'
        "<Category>Developed, Open Space</Category><Category>Forest</Category><Category>Water</Category>"
        "</CategoryNames></PAMRasterBand></PAMDataset>"
    )
    assert raster_categories(path)[1] == "Developed, Open Space"
    scheme = scheme_from_raster(path)
    assert scheme.names == ("developed_open_space", "forest", "water")
    assert scheme.colors == ("#ff0000", "#00ff00", "#0000ff")
    assert scheme.remap(values).tolist() == [[0, 1], [2, UNKNOWN_INDEX]]


def test_scheme_from_attribute_table(tmp_path):
    path = _label_raster(tmp_path / "rat.tif", np.array([[11, 42]]), dtype="uint8")
    (tmp_path / "rat.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><GDALRasterAttributeTable>'
        '<FieldDefn index="0"><Name>Value</Name><Type>0</Type><Usage>5</Usage></FieldDefn>'
        '<FieldDefn index="1"><Name>Class_Name</Name><Type>2</Type><Usage>2</Usage></FieldDefn>'
        '<Row index="0"><F>11</F><F>Open Water</F></Row><Row index="1"><F>42</F><F>Evergreen</F></Row>'
        "</GDALRasterAttributeTable></PAMRasterBand></PAMDataset>"
    )
    scheme = scheme_from_raster(path)
    assert scheme.names == ("open_water", "evergreen") and scheme.remap(np.array([42])).tolist() == [1]


def test_raster_without_names_has_no_scheme_and_a_histogram(tmp_path):
    values = np.array([[1, 1, 7], [-1, 3, 3]])
    path = _label_raster(tmp_path / "plain.tif", values, nodata=-1)
    assert scheme_from_raster(path) is None
    assert label_histogram(path, 1) == {1.0: 2, 3.0: 2, 7.0: 1}


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32", "float32", "float64"]
)
def test_remap_is_the_same_for_every_label_type(dtype):
    scheme = resolve_label_scheme("binary:water=1,100:ignore=-1")
    values = np.array([-1, 0, 1, 2, 100, 127], dtype=np.float64)
    if np.dtype(dtype).kind == "u":
        values = values[1:]
    expected = {-1: 255, 0: 0, 1: 1, 2: 0, 100: 1, 127: 0}
    got = scheme.remap(values.astype(dtype), nodata=127)
    assert got.tolist() == [255 if v == 127 else expected[v] for v in values.astype(int)]
    dw = resolve_label_scheme("dynamic-world")
    nodata = 127 if dtype == "int8" else 255
    assert dw.remap(np.array([0, 8, 9, nodata], dtype), nodata=nodata).tolist() == [0, 8, UNKNOWN_INDEX, 255]
    assert dw.remap(np.array([3, 4], dtype)).tolist() == [3, 4]


def test_raw_label_reading_picks_a_fill_the_band_cannot_hold():
    from transforms.extract import raw_label_reading

    assert raw_label_reading("uint8", 255) == {"raw_dtype": "uint8", "raw_fill": 255.0}
    assert raw_label_reading("uint8", None) == {"raw_dtype": "int16", "raw_fill": -32768.0}
    assert raw_label_reading("int16", None) == {"raw_dtype": "int32", "raw_fill": float(-(2**31))}
    assert raw_label_reading("float32", -99999.0)["raw_dtype"] == "float64"
