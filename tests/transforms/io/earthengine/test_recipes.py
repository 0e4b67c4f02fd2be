"""Image recipes: the grammar parsed alone, and the expressions the real `earthengine-api` client builds
for each preset (collection, date filter, cloud mask, scaling, band names), read from its serialized
graph; scene counts through the local fake of the REST API."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import ee
import pytest
from google.auth.credentials import AnonymousCredentials

from tests.helpers.fake_earthengine import (
    COMPUTE_VALUE,
    DEFAULT_SCENE_COUNT,
    FakeEarthEngine,
    invocations,
    resolve_expression,
)
from transforms.contracts.classes import S2_BANDS
from transforms.geometry.sampling import load_regions
from transforms.io.earthengine import client as earthengine
from transforms.io.earthengine import recipes as ee_recipes
from transforms.io.earthengine.recipes import RecipeError, parse_recipe, parse_window

# What `s2-l1c-median:2020` (the default inputs' imagery) serialized to before dated recipes existed.
S2_L1C_MEDIAN_2020 = Path(__file__).parent / "expressions" / "s2-l1c-median_2020.json"
S2_SR_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")


# --- parsing: no Earth Engine session --------------------------------------------------------------
def test_presets_name_their_bands():
    assert parse_recipe("s2-l1c-median").bands == S2_BANDS
    assert parse_recipe(ee_recipes.DEFAULT_INPUTS).bands == (*S2_BANDS, "elevation")
    assert parse_recipe(ee_recipes.DEFAULT_LABELS).bands == ("landcover",)
    assert parse_recipe("s2-l1c:2023").bands == S2_BANDS
    assert parse_recipe("s2-sr:2023").bands == S2_SR_BANDS  # L2A has no cirrus band B10
    assert parse_recipe("landsat:2023").bands == tuple(f"SR_B{i}" for i in range(1, 8))
    assert parse_recipe("s1-grd:2023").bands == ("VV", "VH")
    assert parse_recipe("dynamicworld-label:2023").bands == ("landcover",)
    assert parse_recipe("hansen-loss:2001..2020").bands == ("landcover",)
    assert parse_recipe("USGS/SRTMGL1_003:elevation+s2-l1c-median:2021").bands == ("elevation", *S2_BANDS)
    assert parse_recipe("projects/p/assets/x").bands is None


def test_suffixes_stack_one_preset_at_two_dates():
    recipe = parse_recipe("s2-sr:2019@before+s2-sr:2023@after")
    assert recipe.bands == (*(f"{b}_before" for b in S2_SR_BANDS), *(f"{b}_after" for b in S2_SR_BANDS))
    assert [p.window.start.year for p in recipe.parts] == [2019, 2023]
    several = parse_recipe("s2-sr:2023-summer@p25@after").parts[0]
    assert (several.composite, several.suffix, several.clear_threshold) == ("p25", "after", 0.60)
    assert parse_recipe("s2-l1c-median:2019@t0+s2-l1c-median:2020@t1").bands[-1] == "B12_t1"
    assert parse_recipe("projects/p/assets/x:B4,B8@t0").bands == ("B4_t0", "B8_t0")
    # A suffix spelled like an option is written name=...
    assert parse_recipe("s2-sr:2023@name=median").parts[0].composite == "median"
    assert parse_recipe("s2-sr:2023@name=median").bands[0] == "B1_median"


@pytest.mark.parametrize(
    "text, start, last, ee_end",
    [
        ("2023", "2023-01-01", "2023-12-31", "2024-01-01"),
        ("2023-spring", "2023-03-01", "2023-05-31", "2023-06-01"),
        ("2023-summer", "2023-06-01", "2023-08-31", "2023-09-01"),
        ("2023-autumn", "2023-09-01", "2023-11-30", "2023-12-01"),
        ("2023-winter", "2023-12-01", "2024-02-29", "2024-03-01"),  # into a leap February
        ("2024-winter", "2024-12-01", "2025-02-28", "2025-03-01"),
        ("2023-05-01..2023-09-30", "2023-05-01", "2023-09-30", "2023-10-01"),
        ("2023-05-01..2023-05-01", "2023-05-01", "2023-05-01", "2023-05-02"),
    ],
)
def test_windows_include_their_last_day_and_send_the_day_after(text, start, last, ee_end):
    window = parse_window(text)
    assert (window.start.isoformat(), window.end.isoformat()) == (start, last)
    assert (window.ee_start, window.ee_end) == (start, ee_end)


def test_options_and_their_defaults():
    s2 = parse_recipe("s2-l1c:2023").parts[0]
    assert (s2.composite, s2.clear_threshold, s2.suffix) == ("median", 0.60, None)
    assert parse_recipe("s2-l1c:2023@cs=0.5@greenest").parts[0].clear_threshold == 0.5
    assert parse_recipe("landsat:2023@mean").parts[0].composite == "mean"
    s1 = parse_recipe("s1-grd:2023-winter@orbit=ascending").parts[0]
    assert (s1.orbit, s1.composite) == ("ASCENDING", "median")
    assert parse_recipe("s1-grd:2023").parts[0].orbit is None  # both orbit directions
    # The first preset's default year is kept, and a year still is its argument.
    legacy = parse_recipe("s2-l1c-median").parts[0]
    assert (legacy.window.start, legacy.window.end) == (dt.date(2020, 1, 1), dt.date(2020, 12, 31))


def test_label_presets_name_their_scheme():
    assert ee_recipes.label_scheme_of("worldcover-dynamicworld") == "dynamic-world"
    assert ee_recipes.label_scheme_of("worldcover-dynamicworld:2021") == "dynamic-world"
    assert ee_recipes.label_scheme_of("dynamicworld-label:2022-summer") == "dynamic-world"
    assert ee_recipes.label_scheme_of("hansen-loss:2001..2020") == "forest-loss"
    assert ee_recipes.label_scheme_of("projects/p/assets/labels:landcover") is None
    assert ee_recipes.label_scheme_of("s2-sr:2023") is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("s2-l2a", "Unknown Earth Engine image 's2-l2a'"),
        ("sentinel2:2023", "use one of the presets s2-l1c, s2-sr, landsat, s1-grd"),
        ("", "empty"),
        ("s2-sr", "s2-sr needs a date window, e.g. s2-sr:2023"),
        ("s2-sr:", "nothing follows ':'"),
        ("s2-l1c-median:20", "is not a date window: use a year such as 2020, a season"),
        ("s2-sr:2023-fall", "'2023-fall' is not a date window"),
        ("s2-sr:2023-02-30..2023-03-31", "day is out of range for month"),
        ("s2-sr:2023-09-30..2023-05-01", "ends before it starts"),
        ("s2-l1c-median:2012", "ends before Sentinel-2's first data on 2015-06-23"),
        ("s2-sr:2015-01-01..2015-06-22", "ends before Sentinel-2's first data on 2015-06-23"),
        ("landsat:2013-01-01..2013-04-10", "ends before Landsat 8's first data on 2013-04-11"),
        ("s1-grd:2014-summer", "ends before Sentinel-1's first data on 2014-10-03"),
        ("dynamicworld-label:2015-06-01..2015-06-26", "ends before Dynamic World's first data on 2015-06-27"),
        ("hansen-loss:2000..2020", "maps forest loss in 2001-2024, got 2000-2020"),
        ("hansen-loss:2020..2030", "maps forest loss in 2001-2024"),
        ("hansen-loss:2021..2019", "end before they start"),
        ("hansen-loss:2020-summer", "takes a year or a range of years such as 2001..2024"),
        ("worldcover-dynamicworld:2019", "exists for [2020, 2021]"),
        ("elevation:30", "takes no argument"),
        ("s2-sr:2023@foo=1", "unknown option @foo=1; s2-sr takes @median, @mean, @pNN"),
        ("s2-sr:2023@orbit=ASCENDING", "unknown option @orbit=ASCENDING; s2-sr takes"),
        ("s2-sr:2023@meen", "@meen is not an option (did you mean @mean?)"),
        ("s2-sr:2023@p101", "a percentile is 0 to 100"),
        ("s2-sr:2023@cs=1.5", "the Cloud Score+ threshold is a number from 0 to 1"),
        ("s2-sr:2023@cs", "@cs takes a value, cs=THRESHOLD"),
        ("s1-grd:2023@greenest", "@greenest does not apply to s1-grd"),
        ("s1-grd:2023@orbit=north", "the orbit is ASCENDING or DESCENDING"),
        ("elevation@median", "elevation has no choice of composite"),
        ("s2-sr:2023@median@p25", "two composites, @median and @p25"),
        ("s2-sr:2023@before@after", "two name suffixes, @before and @after"),
        ("s2-sr:2023@2019", "'2019' is not a valid name suffix: use a simple identifier"),
        ("s2-sr:2023@", "an empty option after '@'"),
        ("projects/p/assets/x@t0", "a name suffix needs the asset's band list"),
        ("s2-sr:2019+s2-sr:2023", "names band(s) B1, B11, B12, B2"),
        ("s2-sr:2019@x+s2-sr:2023@x", "more than once"),
        ("elevation+USGS/SRTMGL1_003:elevation", "more than once"),
    ],
)
def test_bad_recipes_say_what_to_change(spec, message):
    with pytest.raises(RecipeError) as refused:
        parse_recipe(spec)
    assert message in str(refused.value)


def test_duplicate_bands_say_how_to_stack_dates():
    with pytest.raises(RecipeError, match="give each part a name suffix, e.g. s2-sr:2019-summer@before"):
        parse_recipe("s2-sr:2019+s2-sr:2023")


# --- the expressions the real client builds ----------------------------------------------------------
@pytest.fixture(scope="module")
def session(tiny_scene):
    """An Earth Engine session on the fake (the client needs one to know its algorithms)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ee.data, "get_persistent_credentials", lambda: AnonymousCredentials())
        with FakeEarthEngine([tiny_scene.image], tiny_scene.labels, load_regions(tiny_scene.regions)) as fake:
            config = earthengine.EarthEngineConfig(project=fake.project, endpoint=fake.url, timeout_s=5.0)
            earthengine.initialize(config)
            yield fake, config


@pytest.fixture
def fake(session):
    server, _ = session
    server.clear()
    earthengine._gates.clear()
    yield server
    assert not server.errors, server.errors


def tree_of(spec: str):
    """The serialized expression of a recipe's image, as one tree of {"functionName", "arguments"}."""
    return resolve_expression(json.loads(ee_recipes.build_image(spec).serialize()))


def calls(tree, name: str) -> list[dict]:
    return list(invocations(tree, name))


def loaded(tree) -> set[str]:
    return {c["id"] for c in calls(tree, "ImageCollection.load")} | {
        c["id"] for c in calls(tree, "Image.load")
    }


def date_ranges(tree) -> list[tuple[str, str]]:
    return [(c["start"], c["end"]) for c in calls(tree, "DateRange")]


def constants(tree, name: str) -> list:
    """The constants `name` (e.g. Image.gte) compares with or applies: its image2 argument's value."""
    return [c["image2"]["arguments"]["value"] for c in calls(tree, name)]


def final_bands(tree) -> list[str]:
    """The band names the image ends with: its outermost rename, else its outermost select."""
    renames = calls(tree, "Image.rename")
    if renames:
        return renames[0]["names"]
    return calls(tree, "Image.select")[0]["bandSelectors"]


def test_s2_l1c_median_builds_the_expression_it_always_built(fake):
    expected = S2_L1C_MEDIAN_2020.read_text()
    assert ee_recipes.build_image("s2-l1c-median").serialize() == expected
    assert ee_recipes.build_image("s2-l1c-median:2020").serialize() == expected
    tree = tree_of("s2-l1c-median:2021")
    assert date_ranges(tree) == [("2021-01-01", "2022-01-01")]
    assert constants(tree, "Image.bitwiseAnd") == [(1 << 10) | (1 << 11)]  # QA60 cloud and cirrus bits
    assert calls(tree, "Filter.lessThan")[0]["rightValue"] == 20  # CLOUDY_PIXEL_PERCENTAGE
    assert not calls(tree, "Image.linkCollection")


@pytest.mark.parametrize(
    "spec, collection, bands",
    [
        ("s2-l1c:2023-summer", "COPERNICUS/S2_HARMONIZED", S2_BANDS),
        ("s2-sr:2023-summer", "COPERNICUS/S2_SR_HARMONIZED", S2_SR_BANDS),
    ],
)
def test_sentinel2_is_masked_with_cloud_score_plus(fake, spec, collection, bands):
    tree = tree_of(spec)
    assert loaded(tree) == {collection, "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"}
    assert date_ranges(tree) == [("2023-06-01", "2023-09-01")]
    (link,) = calls(tree, "Image.linkCollection")
    assert link["imageCollection"]["arguments"]["id"] == "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
    assert link["linkedBands"] == ["cs_cdf"]
    (clear,) = calls(tree, "Image.gte")
    assert clear["image1"]["arguments"]["bandSelectors"] == ["cs_cdf"]
    assert clear["image2"]["arguments"]["value"] == 0.60
    assert calls(tree, "reduce.median") and calls(tree, "Image.toFloat")
    assert final_bands(tree) == list(bands)
    assert not calls(tree, "Image.multiply")  # reflectance x10000, as the collection holds it


def test_sentinel2_threshold_percentile_and_suffix(fake):
    tree = tree_of("s2-sr:2019-summer@p25@cs=0.5@before+s2-sr:2023-summer@greenest@after")
    assert date_ranges(tree) == [("2019-06-01", "2019-09-01"), ("2023-06-01", "2023-09-01")]
    assert sorted(constants(tree, "Image.gte")) == [0.5, 0.6]
    (percentile,) = calls(tree, "Reducer.percentile")
    assert percentile["percentiles"] == [25]
    # The greenest pixel: NDVI from B8 (NIR) and B4 (red), then the scene bands only.
    (ndvi,) = calls(tree, "Image.normalizedDifference")
    assert ndvi["bandNames"] == ["B8", "B4"]
    assert calls(tree, "ImageCollection.qualityMosaic")[0]["qualityBand"] == "NDVI"
    names = [c["names"] for c in calls(tree, "Image.rename")]
    assert [f"{b}_before" for b in S2_SR_BANDS] in names and [f"{b}_after" for b in S2_SR_BANDS] in names


def test_landsat_is_scaled_and_masked_with_qa_pixel_and_qa_radsat(fake):
    tree = tree_of("landsat:2022-05-01..2022-09-30@mean")
    assert loaded(tree) == {"LANDSAT/LC08/C02/T1_L2", "LANDSAT/LC09/C02/T1_L2"}
    assert calls(tree, "ImageCollection.merge")
    assert date_ranges(tree) == [("2022-05-01", "2022-10-01")]
    (qa,) = calls(tree, "Image.bitwiseAnd")
    assert qa["image1"]["arguments"]["bandSelectors"] == ["QA_PIXEL"]
    # Bits 1-5: dilated cloud, cirrus, cloud, cloud shadow, snow.
    assert qa["image2"]["arguments"]["value"] == 0b111110
    # ... and saturation: clear only where QA_RADSAT is 0 as well.
    (both,) = calls(tree, "Image.and")
    radsat = [
        c
        for c in calls(tree, "Image.eq")
        if c["image1"].get("arguments", {}).get("bandSelectors") == ["QA_RADSAT"]
    ]
    assert len(radsat) == 1 and radsat[0]["image2"]["arguments"]["value"] == 0
    assert constants(tree, "Image.multiply") == [0.0000275] and constants(tree, "Image.add") == [-0.2]
    assert calls(tree, "reduce.mean")
    assert final_bands(tree) == [f"SR_B{i}" for i in range(1, 8)]


def test_sentinel1_filters_mode_polarisations_and_orbit(fake):
    tree = tree_of("s1-grd:2020-winter@orbit=DESCENDING")
    assert loaded(tree) == {"COPERNICUS/S1_GRD"}
    assert date_ranges(tree) == [("2020-12-01", "2021-03-01")]
    equals = {c["leftField"]: c["rightValue"] for c in calls(tree, "Filter.equals")}
    assert equals == {"instrumentMode": "IW", "orbitProperties_pass": "DESCENDING"}
    assert sorted(c["rightValue"] for c in calls(tree, "Filter.listContains")) == ["VH", "VV"]
    assert not calls(tree, "Image.multiply")  # already in dB
    assert final_bands(tree) == ["VV", "VH"] and calls(tree, "reduce.median")
    both = tree_of("s1-grd:2020")
    assert [c["leftField"] for c in calls(both, "Filter.equals")] == ["instrumentMode"]


def test_dynamic_world_labels_are_the_mode_of_its_label_band(fake):
    tree = tree_of("dynamicworld-label:2021-summer")
    assert loaded(tree) == {"GOOGLE/DYNAMICWORLD/V1"}
    assert date_ranges(tree) == [("2021-06-01", "2021-09-01")]
    assert calls(tree, "Image.select")[-1]["bandSelectors"] == ["label"]
    assert calls(tree, "reduce.mode") and calls(tree, "Image.toUint8")
    assert final_bands(tree) == ["landcover"]


def test_hansen_loss_is_one_where_forest_was_lost_in_the_years(fake):
    tree = tree_of("hansen-loss:2001..2020")
    assert loaded(tree) == {"UMD/hansen/global_forest_change_2024_v1_12"}
    assert calls(tree, "Image.select")[0]["bandSelectors"] == ["lossyear"]
    # lossyear counts years from 2000: 2001..2020 is 1..20.
    assert constants(tree, "Image.gte") == [1] and constants(tree, "Image.lte") == [20]
    assert calls(tree, "Image.and") and calls(tree, "Image.toUint8")
    assert final_bands(tree) == ["landcover"]


def test_scene_counts_ask_once_per_part_and_region(fake, session, tiny_scene):
    regions = load_regions(tiny_scene.regions)
    config = session[1]
    images = earthengine.EarthEngineSource("landsat:2022-summer@a+elevation+s2-sr:2023-summer@b", config)
    labels = earthengine.EarthEngineSource("dynamicworld-label:2023", config)
    fake.scene_counts["COPERNICUS/S2_SR_HARMONIZED"] = 0
    fake.scene_counts["LANDSAT/LC09/C02/T1_L2"] = 2
    counts = earthengine.scene_counts([images, labels], regions)
    assert fake.count(COMPUTE_VALUE) == 1  # every part and region in one request
    assert [(c.part.name, c.region, c.scenes) for c in counts] == [
        (part, region.name, scenes)
        for part, scenes in [("landsat", DEFAULT_SCENE_COUNT + 2), ("s2-sr", 0), ("dynamicworld-label", 12)]
        for region in regions
    ]
    (request,) = fake.requests
    tree = resolve_expression(request.body["expression"])
    assert len(calls(tree, "Collection.size")) == 3 * len(regions)
    # Each count is of the window's scenes over a region's polygon.
    assert ("2023-06-01", "2023-09-01") in date_ranges(tree)
    polygons = [c["coordinates"] for c in calls(tree, "GeometryConstructors.Polygon")]
    assert regions[0].geometry["coordinates"] in polygons
    assert earthengine.scene_counts([earthengine.EarthEngineSource("elevation", config)], regions) == []
