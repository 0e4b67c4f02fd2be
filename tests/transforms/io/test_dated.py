"""Imagery by date: --inputs tokens, STAC files, a source per date and the stack, the checks."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.dated import (
    AFTER_SHIFT,
    write_item_collection,
    write_later_date,
    write_on_other_grid,
    write_stac_catalog,
)
from tests.helpers.scenes import CRS, ORIGIN, SCALE
from transforms.geometry.grid import GridSpec
from transforms.io.dated import (
    PER_DATE,
    STACKED,
    DatedInputsError,
    check_dates,
    check_model_bands,
    date_sources,
    parse_inputs,
    read_stac,
    stacked_source,
)
from transforms.io.rasters import SourceError

GRID = GridSpec(CRS, SCALE, *ORIGIN)
BANDS = ("red", "nir", "elevation")


@pytest.fixture(scope="module")
def after(tiny_scene, tmp_path_factory) -> tuple[str, np.ndarray]:
    """A later date of the tiny scene: every pixel AFTER_SHIFT brighter, same grid and band names."""
    return write_later_date(tiny_scene, tmp_path_factory.mktemp("after"))


# --- the command line ---------------------------------------------------------------------------------


def test_labelled_tokens_keep_their_order_and_a_label_repeats_for_several_files():
    dated = parse_inputs(["before=s2.tif", "after=s2-2023.tif", "before=dem.tif", "after=dem.tif"])
    assert list(dated) == ["before", "after"] and dated.reference == "before"
    assert dated["before"] == ("s2.tif", "dem.tif") and dated["after"] == ("s2-2023.tif", "dem.tif")
    assert dated.paths == ["s2.tif", "dem.tif", "s2-2023.tif", "dem.tif"]
    assert dated.to_json() == {
        "dates": [
            {"label": "before", "inputs": ["s2.tif", "dem.tif"]},
            {"label": "after", "inputs": ["s2-2023.tif", "dem.tif"]},
        ],
        "stac": None,
    }


def test_iso_dates_are_labels_and_the_path_keeps_its_own_equals_signs():
    dated = parse_inputs(["2023-07-01=gs://bucket/x=1/a.tif", "2019-07-01=/vsicurl/https://h/b.tif?k=v"])
    assert list(dated) == ["2023-07-01", "2019-07-01"]  # command-line order, not sorted
    assert dated["2023-07-01"] == ("gs://bucket/x=1/a.tif",)
    assert dated["2019-07-01"] == ("/vsicurl/https://h/b.tif?k=v",)


@pytest.mark.parametrize(
    "tokens",
    [
        ["a.tif", "b.tif"],
        ["gs://bucket/year=2019/a.tif"],
        ["/vsicurl/https://host/a.tif?x=y"],
        ["folder/x=1/a.tif"],
        ["./before=a.tif"],
        ["1before=a.tif"],  # a label starts with a letter
        [],
        None,
    ],
)
def test_plain_paths_keep_their_meaning(tokens):
    assert parse_inputs(tokens) is None


@pytest.mark.parametrize(
    "tokens, message",
    [
        (["before=a.tif", "b.tif"], "--inputs mixes dated files (LABEL=PATH) with plain paths (b.tif)"),
        (["before="], "--inputs before= names no file"),
        (["2019-02-30=a.tif"], "'2019-02-30' looks like a date but is none"),
        (["before=a.tif", "before=a.tif"], "gives 'a.tif' twice for date before"),
        (["catalog.json", "a.tif"], "takes a STAC file (catalog.json) on its own"),
        (["before=items.json"], "takes a STAC file (items.json) on its own"),
    ],
)
def test_bad_tokens_are_refused_with_what_to_change(tokens, message):
    with pytest.raises(DatedInputsError) as e:
        parse_inputs(tokens)
    assert message in str(e.value)


def test_band_names_name_each_date_and_a_mismatch_names_the_date(tiny_scene, after):
    dated = parse_inputs([f"t0={tiny_scene.image}", f"t1={after[0]}"], ["r", "n", "e"])
    sources = date_sources(dated)
    assert check_dates(sources) is None  # same grid: nothing to say
    assert stacked_source(sources).bands == ("r_t0", "n_t0", "e_t0", "r_t1", "n_t1", "e_t1")
    wrong = date_sources(parse_inputs([f"t0={tiny_scene.image}"], ["r", "n"]))
    with pytest.raises(DatedInputsError, match=r"^Date t0: --band-names gives 2 names but the inputs hold 3"):
        check_dates(wrong)


# --- sources ------------------------------------------------------------------------------------------


def test_the_stack_reads_each_dates_pixels_under_its_suffixed_name(tiny_scene, after):
    dated = parse_inputs([f"before={tiny_scene.image}", f"after={after[0]}"])
    sources = date_sources(dated)
    assert [s.bands for s in sources.values()] == [BANDS, BANDS]
    stack = stacked_source(sources)
    assert stack.bands == tuple(f"{b}_{d}" for d in ("before", "after") for b in BANDS)
    grid = GRID.window(40, 60, 16, 16)
    pixels = (
        pickle.loads(pickle.dumps(stack)).read(grid, ["red_after", "red_before", "elevation_after"]).pixels
    )
    window = (slice(60, 76), slice(40, 56))
    np.testing.assert_array_equal(pixels[..., 0], after[1][(0, *window)])
    np.testing.assert_array_equal(pixels[..., 1], tiny_scene.pixels[(0, *window)])
    np.testing.assert_array_equal(pixels[..., 2], tiny_scene.pixels[(2, *window)] + AFTER_SHIFT)


# --- STAC -----------------------------------------------------------------------------------------------


def stac_dates(scene, after_path: str) -> dict:
    """2023 as one three-band asset named by eo:bands, 2019 as one file per band named by asset key;
    the later date first, to show that dates are sorted."""
    return {
        "2023-07-01": {"image": (after_path, list(BANDS))},
        "2019-07-01": dict(zip(BANDS, scene.band_files)),
    }


def check_stac_dates(dated, scene, after_path: str, catalog: str) -> None:
    assert list(dated) == ["2019-07-01", "2023-07-01"] and dated.catalog == catalog
    assert dated["2019-07-01"] == tuple(os.path.abspath(p) for p in scene.band_files)
    assert dated["2023-07-01"] == (os.path.abspath(after_path),)
    assert [f.bands for f in dated.files("2019-07-01")] == [(b,) for b in BANDS]
    assert [f.bands for f in dated.files("2023-07-01")] == [BANDS]
    sources = date_sources(dated)
    assert check_dates(sources) is None
    assert [s.bands for s in sources.values()] == [BANDS, BANDS]
    assert stacked_source(sources).bands[:4] == (
        "red_2019-07-01",
        "nir_2019-07-01",
        "elevation_2019-07-01",
        "red_2023-07-01",
    )


def test_a_stac_catalogue_with_relative_hrefs(tiny_scene, after, tmp_path, monkeypatch):
    catalog = write_stac_catalog(stac_dates(tiny_scene, after[0]), tmp_path / "stac")
    item = json.loads(next((tmp_path / "stac").glob("*2023*/*.json")).read_text())
    assert item["assets"]["image"]["href"].startswith("../../")  # relative to the item's file
    monkeypatch.chdir(tmp_path / "stac")  # hrefs resolve against the files, not the working folder
    check_stac_dates(parse_inputs([catalog]), tiny_scene, after[0], catalog)


def test_an_item_collection_with_relative_hrefs(tiny_scene, after, tmp_path, monkeypatch):
    (tmp_path / "stac").mkdir()
    items = write_item_collection(stac_dates(tiny_scene, after[0]), tmp_path / "stac")
    doc = json.loads(Path(items).read_text())
    assert doc["type"] == "FeatureCollection"
    assert doc["features"][0]["assets"]["image"]["href"].startswith("../")  # relative to items.json
    monkeypatch.chdir(tmp_path)
    check_stac_dates(parse_inputs([items]), tiny_scene, after[0], items)


def test_one_stac_item_is_one_date(tiny_scene, tmp_path):
    items = write_item_collection({"2020-05-04": {"image": (tiny_scene.image, list(BANDS))}}, tmp_path)
    feature = json.loads(Path(items).read_text())["features"][0]
    feature["assets"]["image"]["href"] = tiny_scene.image
    (tmp_path / "item.json").write_text(json.dumps(feature))
    dated = read_stac(str(tmp_path / "item.json"))
    assert dict(dated) == {"2020-05-04": (tiny_scene.image,)}


def test_two_items_on_one_date_are_refused(tiny_scene, tmp_path):
    dates = {
        "2019-07-01T08:00": {"red": tiny_scene.band_files[0]},
        "2019-07-01T15:30": {"red": tiny_scene.band_files[0]},
    }
    items = write_item_collection(dates, tmp_path)
    with pytest.raises(DatedInputsError) as e:
        parse_inputs([items])
    assert "STAC items 'scene-2019-07-01T08:00' and 'scene-2019-07-01T15:30'" in str(e.value)
    assert "are both dated 2019-07-01: keep one item per date" in str(e.value)


def test_a_json_file_that_is_not_stac_is_refused(tiny_scene, tmp_path):
    regions = tmp_path / "regions.json"
    shutil.copy(tiny_scene.regions, regions)  # GeoJSON features, not STAC items
    with pytest.raises(DatedInputsError, match="does not parse as STAC"):
        parse_inputs([str(regions)])
    (tmp_path / "other.json").write_text('{"type": "Topology"}')
    with pytest.raises(DatedInputsError, match="is not a STAC Catalog, Collection, ItemCollection or Item"):
        parse_inputs([str(tmp_path / "other.json")])
    with pytest.raises(DatedInputsError, match="Cannot read the STAC file"):
        parse_inputs([str(tmp_path / "missing.json")])
    with pytest.raises(DatedInputsError, match="--band-names renames the bands of files"):
        parse_inputs([str(tmp_path / "other.json")], ["a"])


def test_a_stac_asset_whose_file_holds_other_bands_is_named_in_the_error(tiny_scene, tmp_path):
    items = write_item_collection({"2019-07-01": {"B04": tiny_scene.image}}, tmp_path)  # 3 bands, 1 name
    with pytest.raises(DatedInputsError) as e:
        check_dates(date_sources(parse_inputs([items])))
    assert str(e.value) == (
        f"Date 2019-07-01: Raster {os.path.abspath(tiny_scene.image)!r} holds 3 band(s) but 1 name(s) "
        "are given for it (B04)."
    )


# --- checks ---------------------------------------------------------------------------------------------


def test_dates_with_different_bands_are_refused_naming_what_each_lacks(tiny_scene):
    red, nir, _ = tiny_scene.band_files
    sources = date_sources(parse_inputs([f"before={tiny_scene.image}", f"after={red}", f"after={nir}"]))
    with pytest.raises(DatedInputsError) as e:
        check_dates(sources)
    assert "The dates hold different bands: date after lacks elevation (it has red, nir)." in str(e.value)


def test_a_missing_file_is_the_sources_own_error(tiny_scene, tmp_path):
    sources = date_sources(parse_inputs([f"before={tiny_scene.image}", f"after={tmp_path / 'gone.tif'}"]))
    with pytest.raises(SourceError, match="gone.tif"):
        check_dates(sources)


def test_a_date_on_another_grid_gets_one_note(tiny_scene, after, tmp_path):
    other = write_on_other_grid(after[0], tmp_path / "utm33.tif")
    later = write_on_other_grid(after[0], tmp_path / "utm33b.tif")
    one = check_dates(date_sources(parse_inputs([f"before={tiny_scene.image}", f"after={other}"])))
    assert one == (
        "date after (EPSG:32633, 20 m) is on another grid than date before (EPSG:32632, 10 m): reprojected "
        "onto the job's grid as it is read."
    )
    two = check_dates(
        date_sources(parse_inputs([f"before={tiny_scene.image}", f"after={other}", f"later={later}"]))
    )
    assert two.startswith("dates after (EPSG:32633, 20 m) and later (EPSG:32633, 20 m) are on another grid")


def test_model_bands_are_checked_per_date_or_on_the_stack(tiny_scene, after):
    red, nir, _ = tiny_scene.band_files
    full = parse_inputs([f"before={tiny_scene.image}", f"after={after[0]}"])
    assert check_model_bands(["red", "nir"], full) == PER_DATE
    assert check_model_bands(["red_before", "nir_before", "red_after"], date_sources(full)) == STACKED
    partial = parse_inputs([f"before={tiny_scene.image}", f"after={red}", f"after={nir}"])
    with pytest.raises(DatedInputsError) as e:
        check_model_bands(["red", "elevation"], partial)
    assert str(e.value) == (
        "The model needs bands red, elevation on every date, but date after lacks elevation (it has red, "
        "nir). Give every date the model's bands."
    )
    with pytest.raises(DatedInputsError) as e:
        check_model_bands(["red_before", "elevation_after", "red_later"], partial)
    assert str(e.value) == (
        "The model reads a stack of dates (red_before, elevation_after, red_later), but date after lacks "
        "elevation (the model's elevation_after); red_later names none of the dates (before, after). Give "
        "the dates the model was trained on, with the same labels and bands."
    )
    with pytest.raises(
        DatedInputsError, match=r"but red_2019, nir_2019 name none of the dates \(before, after\)"
    ):
        check_model_bands(["red_2019", "nir_2019"], full)  # a stack of other dates


def test_a_file_shared_by_two_dates_is_read_for_each(tiny_scene):
    """A DEM serves both dates: the stack names its band once per date, and both read its pixels."""
    red, nir, elevation = tiny_scene.band_files
    tokens = [f"before={red}", f"before={elevation}", f"after={nir}", f"after={elevation}"]
    sources = date_sources(parse_inputs(tokens, ["a", "dem"]))
    assert check_dates(sources) is None
    stack = stacked_source(sources)
    assert stack.bands == ("a_before", "dem_before", "a_after", "dem_after")
    pixels = stack.read(GRID.window(7, 9, 8, 8), ["dem_before", "a_after", "dem_after"]).pixels
    window = (slice(9, 17), slice(7, 15))
    np.testing.assert_array_equal(pixels[..., 0], tiny_scene.pixels[(2, *window)])
    np.testing.assert_array_equal(pixels[..., 1], tiny_scene.pixels[(1, *window)])
    np.testing.assert_array_equal(pixels[..., 2], tiny_scene.pixels[(2, *window)])
    # Off the files' lattice the reads go through a WarpedVRT: the shared band still reads twice alike.
    shifted = GridSpec(CRS, SCALE, ORIGIN[0] + SCALE / 2, ORIGIN[1]).window(7, 9, 8, 8)
    warped = stack.read(shifted, ["dem_before", "dem_after"]).pixels
    np.testing.assert_array_equal(warped[..., 0], warped[..., 1])
    assert not np.array_equal(warped[..., 0], pixels[..., 0])  # resampled, not the aligned read


# --- STAC files in Cloud Storage: TensorFlow's in-memory filesystem (ram://) stands in for gs:// -----


def copy_to_ram(folder: Path, name: str) -> str:
    """Every JSON file under `folder` copied to a fresh ram:// folder; the path of `name` there."""
    import tensorflow as tf

    base = f"ram://stac-{os.urandom(4).hex()}"
    for path in folder.rglob("*.json"):
        target = f"{base}/{path.relative_to(folder).as_posix()}"
        tf.io.gfile.makedirs(target.rsplit("/", 1)[0])
        with tf.io.gfile.GFile(target, "w") as f:
            f.write(path.read_text())
    return f"{base}/{name}"


def test_a_stac_catalogue_in_cloud_storage_is_read_with_its_links(tiny_scene, after, tmp_path):
    write_stac_catalog(stac_dates(tiny_scene, after[0]), tmp_path / "stac")
    catalog = copy_to_ram(tmp_path / "stac", "catalog.json")
    base = catalog.rsplit("/", 1)[0]
    dated = parse_inputs([catalog])  # the items are read from ram:// too, through the catalogue's links
    assert list(dated) == ["2019-07-01", "2023-07-01"] and dated.catalog == catalog
    # Asset hrefs relative to an item resolve within the bucket, as GDAL then reads them (gs:// there).
    later = dated["2023-07-01"]
    assert len(later) == 1 and later[0].startswith(base + "/")
    assert later[0].endswith("/" + Path(after[0]).name) and ".." not in later[0]
    assert [f.bands for f in dated.files("2023-07-01")] == [BANDS]


def test_an_item_collection_in_cloud_storage_reaches_the_pixels(tiny_scene, after, tmp_path):
    dates = stac_dates(tiny_scene, after[0])
    (tmp_path / "stac").mkdir()
    items = Path(write_item_collection(dates, tmp_path / "stac"))
    doc = json.loads(items.read_text())
    for feature in doc["features"]:  # absolute hrefs: local rasters that GDAL can open
        for asset in feature["assets"].values():
            asset["href"] = os.path.abspath(items.parent / asset["href"])
    items.write_text(json.dumps(doc))
    remote = copy_to_ram(tmp_path / "stac", "items.json")
    check_stac_dates(parse_inputs([remote]), tiny_scene, after[0], remote)


def test_a_missing_stac_file_in_cloud_storage_is_named():
    import tensorflow as tf

    with pytest.raises(DatedInputsError, match=r"Cannot read the STAC file 'ram://nowhere/items\.json'"):
        parse_inputs(["ram://nowhere/items.json"])
    catalog = f"ram://stac-{os.urandom(4).hex()}/catalog.json"
    lost = {"rel": "item", "href": "./lost/lost.json", "type": "application/json"}
    with tf.io.gfile.GFile(catalog, "w") as f:  # a catalogue that links to an item that is not there
        f.write(
            json.dumps(
                {
                    "type": "Catalog",
                    "stac_version": "1.0.0",
                    "id": "dates",
                    "description": "x",
                    "links": [lost],
                }
            )
        )
    with pytest.raises(DatedInputsError) as e:
        parse_inputs([catalog])
    assert f"The STAC file {catalog!r} does not parse as STAC" in str(e.value)
    assert catalog.replace("catalog.json", "lost/lost.json") in str(e.value)
