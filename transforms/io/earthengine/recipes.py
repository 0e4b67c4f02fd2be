"""Earth Engine images by recipe: the talk's inputs and labels as named presets, over any date window, or
any asset.

Extraction and prediction both build their images here, so a model is trained on exactly the pixels it
will later be applied to. A recipe is a string, parts joined by ``+`` (their bands are stacked)::

    recipe  = part ("+" part)*
    part    = PRESET[:WINDOW]("@" OPTION)*  |  ASSET_ID[:BAND,BAND,...][@SUFFIX]
    WINDOW  = 2023-05-01..2023-09-30    first and last day, both included
            | 2023                      the calendar year
            | 2023-spring | 2023-summer | 2023-autumn | 2023-winter
    OPTION  = median | mean | pNN | greenest    the composite (default median)
            | cs=0.60 | orbit=ASCENDING        a preset's setting
            | SUFFIX | name=SUFFIX             appended to the part's band names: B4 -> B4_SUFFIX

Seasons are the northern hemisphere's meteorological ones: spring March-May, summer June-August,
autumn September-November, and winter YEAR is December YEAR to the end of February YEAR+1. A window's
last day is included; Earth Engine's ``filterDate`` takes an exclusive end, so the day after the last one
is sent (``2023-summer`` is ``filterDate('2023-06-01', '2023-09-01')``).

Presets, with the first day a window may reach (a window that ends before it is refused):

- ``s2-l1c:WINDOW``: the 13 Sentinel-2 L1C bands B1 ... B12, B8A (``COPERNICUS/S2_HARMONIZED``, TOA
  reflectance x10000, not rescaled), Cloud Score+ masked (below); from 2015-06-23.
- ``s2-sr:WINDOW``: the 12 Sentinel-2 L2A bands, as s2-l1c without the cirrus band B10
  (``COPERNICUS/S2_SR_HARMONIZED``, surface reflectance x10000), Cloud Score+ masked; from 2015-06-23.
- ``landsat:WINDOW``: SR_B1 ... SR_B7 of Landsat 8 and 9 Collection 2 Level-2 merged
  (``LANDSAT/LC08/C02/T1_L2``, ``LANDSAT/LC09/C02/T1_L2``), scaled to surface reflectance
  (DN x 0.0000275 - 0.2), QA_PIXEL bits 1-5 masked (dilated cloud, cirrus, cloud, cloud shadow, snow)
  and pixels where any band saturated (QA_RADSAT not 0); from Landsat 8's 2013-04-11 (Landsat 9
  joins on 2021-10-31).
- ``s1-grd:WINDOW``: VV and VH of Sentinel-1 GRD (``COPERNICUS/S1_GRD``), interferometric wide swath
  (IW) scenes with both polarisations, in dB as the collection holds them (no rescaling), both orbit
  directions unless ``@orbit=ASCENDING`` or ``DESCENDING``; from 2014-10-03.
- ``s2-l1c-median[:WINDOW]``: s2-l1c's bands, scenes under 20 % cloudy pixels, QA60 cloud and cirrus
  bits masked, median (default window 2020). The recipe's first preset, kept building exactly the image
  it always built, so that manifests and models made with it still get the same pixels.
- ``elevation``: ``elevation`` in metres from the SRTM 30 m DEM (``USGS/SRTMGL1_003``).
- ``worldcover-dynamicworld[:YEAR]``: ``landcover``, ESA WorldCover (2020: v100, 2021: v200) remapped to
  the 9 Dynamic World class indices of `transforms.contracts.classes` (label scheme dynamic-world).
- ``dynamicworld-label:WINDOW``: ``landcover``, the most frequent class (mode) of Dynamic World's own
  ``label`` band (``GOOGLE/DYNAMICWORLD/V1``) over the window (label scheme dynamic-world); from
  2015-06-27.
- ``hansen-loss:YEAR[..YEAR]``: ``landcover``, 1 where UMD Global Forest Change
  (``UMD/hansen/global_forest_change_2024_v1_12``, ``lossyear`` = year - 2000) saw forest lost in those
  years, else 0 (label scheme forest-loss); years 2001-2024.
- ``ASSET_ID[:BAND,BAND,...]``: any image asset (an ID holds a ``/``), optionally a subset of its bands;
  without a band list the bands are looked up from Earth Engine when first needed.

Cloud Score+ (``GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED``) is linked to each Sentinel-2 scene by
``system:index`` (``linkCollection``), as Google's Cloud Score+ example does, and pixels with
``cs_cdf >= cs`` are kept (default 0.60; a scene without a score is fully masked). ``greenest`` (optical
presets) is a greenest-pixel mosaic: each pixel from the scene where its NDVI is highest
(``qualityMosaic``). Stacking one preset at two dates needs a suffix on the parts:
``s2-sr:2019-summer@before+s2-sr:2023-summer@after`` gives ``B1_before ... B12_before, B1_after ...``.

Masked pixels (cloudy in every scene of the window, outside a DEM's coverage, no WorldCover class) stay
masked here; the reader fills them with its fill value, as nodata in local rasters.

Parsing needs no Earth Engine session; `build_image` and `scene_collection` do (call them after
`ee.Initialize`).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import difflib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from transforms.contracts.classes import S2_BANDS, WORLDCOVER_TO_DYNAMIC_WORLD

if TYPE_CHECKING:
    import ee

DEFAULT_INPUTS = "s2-l1c-median:2020+elevation"
DEFAULT_LABELS = "worldcover-dynamicworld"
LABEL_BAND = "landcover"
DEFAULT_YEAR = 2020

# Sentinel-2. The harmonized collections shift scenes processed since 2022-01-25 back to the older
# radiometric offset, so that windows before and after compare.
S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"
S2_SR_COLLECTION = "COPERNICUS/S2_SR_HARMONIZED"
S2_SR_BANDS: tuple[str, ...] = tuple(b for b in S2_BANDS if b != "B10")  # B10 (cirrus) is L1C only
S2_FIRST_DATE = dt.date(2015, 6, 23)  # Sentinel-2A's first scenes
S2_NDVI_BANDS = ("B8", "B4")  # NIR, red
# Cloud Score+ (its catalog page): cs_cdf >= 0.60 keeps clear pixels; 0.50-0.65 "generally work well".
CLOUD_SCORE_PLUS = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
CLOUD_SCORE_BAND = "cs_cdf"
DEFAULT_CLEAR_THRESHOLD = 0.60
# The original preset s2-l1c-median: whole scenes under 20 % cloudy pixels, QA60 opaque cloud (bit 10)
# and cirrus (bit 11) masked (Sentinel-2 L1C product specification).
S2_MAX_CLOUDY_PIXEL_PERCENTAGE = 20
S2_QA60_CLOUD_BITS = (1 << 10) | (1 << 11)

# Landsat 8 and 9 Collection 2 Level-2: surface reflectance = DN x 0.0000275 - 0.2 (USGS product guide).
LANDSAT_COLLECTIONS = ("LANDSAT/LC08/C02/T1_L2", "LANDSAT/LC09/C02/T1_L2")
LANDSAT_BANDS: tuple[str, ...] = tuple(f"SR_B{i}" for i in range(1, 8))
LANDSAT_SCALE = 0.0000275
LANDSAT_OFFSET = -0.2
# QA_PIXEL bits masked: 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow.
LANDSAT_QA_BITS = sum(1 << bit for bit in (1, 2, 3, 4, 5))
LANDSAT_NDVI_BANDS = ("SR_B5", "SR_B4")  # NIR, red
# Landsat 9 (from 2021-10-31) is merged with Landsat 8, so Landsat 8's first date is the preset's.
LANDSAT8_FIRST_DATE = dt.date(2013, 4, 11)

# Sentinel-1 GRD: backscatter already in dB (10*log10), thermal noise removed, terrain corrected.
S1_COLLECTION = "COPERNICUS/S1_GRD"
S1_BANDS: tuple[str, ...] = ("VV", "VH")
S1_MODE = "IW"
S1_ORBITS = ("ASCENDING", "DESCENDING")
S1_FIRST_DATE = dt.date(2014, 10, 3)

DEM_ASSET = "USGS/SRTMGL1_003"
ELEVATION_BAND = "elevation"
WORLDCOVER_ASSETS = {2020: "ESA/WorldCover/v100/2020", 2021: "ESA/WorldCover/v200/2021"}

DYNAMIC_WORLD_COLLECTION = "GOOGLE/DYNAMICWORLD/V1"
DYNAMIC_WORLD_BAND = "label"  # class indices 0-8, the label scheme dynamic-world
DYNAMIC_WORLD_FIRST_DATE = dt.date(2015, 6, 27)

# Global Forest Change v1.12 (its catalog page: 2000-01-01 to 2024-12-31); lossyear 1-24 is the year of
# loss minus 2000, 0 no loss.
HANSEN_ASSET = "UMD/hansen/global_forest_change_2024_v1_12"
HANSEN_LOSS_BAND = "lossyear"
HANSEN_YEARS = (2001, 2024)

# Label scheme presets (transforms.contracts.label_scheme.PRESETS) of the label presets' classes.
DYNAMIC_WORLD_SCHEME = "dynamic-world"
FOREST_LOSS_SCHEME = "forest-loss"

MEDIAN = "median"
COMPOSITES = (MEDIAN, "mean", "pNN", "greenest")  # pNN: any percentile, e.g. p25
SEASONS = {"spring": (3, 5), "summer": (6, 8), "autumn": (9, 11), "winter": (12, 2)}
_SUFFIX = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DATES = re.compile(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})")
_SEASON = re.compile(r"(\d{4})-([a-z]+)")
_YEARS = re.compile(r"(\d{4})(?:\.\.(\d{4}))?")
_PERCENTILE = re.compile(r"p(\d+)")


class RecipeError(ValueError):
    """A recipe string that names no preset or asset, or a bad preset argument or option."""


@dataclasses.dataclass(frozen=True)
class Window:
    """Days `start` to `end`, both included."""

    start: dt.date
    end: dt.date

    @property
    def ee_start(self) -> str:
        return self.start.isoformat()

    @property
    def ee_end(self) -> str:
        """The day after the last one: Earth Engine's filterDate end is exclusive."""
        return (self.end + dt.timedelta(days=1)).isoformat()

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named image: its bands, which window and options it takes, the first date it has data for."""

    name: str
    bands: tuple[str, ...]
    window: str = "none"  # "dates": the WINDOW grammar; "years": YEAR[..YEAR]; "worldcover": YEAR; "none"
    default_window: str | None = None  # None: a window must be given (if it takes one)
    first_date: dt.date | None = None
    sensor: str = ""
    composites: tuple[str, ...] = ()  # composites @OPTION may pick; () for a fixed compositing
    settings: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> "key=VALUE (meaning)"
    label_scheme: str | None = None  # the label-scheme preset of its classes, for label images


_OPTICAL = COMPOSITES
_CLOUD_SCORE = {
    "cs": f"cs=THRESHOLD (Cloud Score+ cs_cdf to keep, 0-1, default {DEFAULT_CLEAR_THRESHOLD:.2f})"
}
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("s2-l1c", S2_BANDS, "dates", None, S2_FIRST_DATE, "Sentinel-2", _OPTICAL, _CLOUD_SCORE),
        Preset("s2-sr", S2_SR_BANDS, "dates", None, S2_FIRST_DATE, "Sentinel-2", _OPTICAL, _CLOUD_SCORE),
        Preset("landsat", LANDSAT_BANDS, "dates", None, LANDSAT8_FIRST_DATE, "Landsat 8", _OPTICAL),
        Preset(
            "s1-grd",
            S1_BANDS,
            "dates",
            None,
            S1_FIRST_DATE,
            "Sentinel-1",
            (MEDIAN, "mean", "pNN"),
            {"orbit": "orbit=ASCENDING|DESCENDING (default both)"},
        ),
        Preset("s2-l1c-median", S2_BANDS, "dates", str(DEFAULT_YEAR), S2_FIRST_DATE, "Sentinel-2"),
        Preset("elevation", (ELEVATION_BAND,)),
        Preset(
            "worldcover-dynamicworld",
            (LABEL_BAND,),
            "worldcover",
            str(DEFAULT_YEAR),
            label_scheme=DYNAMIC_WORLD_SCHEME,
        ),
        Preset(
            "dynamicworld-label",
            (LABEL_BAND,),
            "dates",
            None,
            DYNAMIC_WORLD_FIRST_DATE,
            "Dynamic World",
            label_scheme=DYNAMIC_WORLD_SCHEME,
        ),
        Preset("hansen-loss", (LABEL_BAND,), "years", label_scheme=FOREST_LOSS_SCHEME),
    )
}


@dataclasses.dataclass(frozen=True)
class Part:
    """One `+`-separated part of a recipe: a preset with its window and options, or an asset with its
    bands. `composite` is None where the preset composites in one fixed way (or not at all)."""

    name: str
    argument: str | None = None
    window: Window | None = None
    composite: str | None = None
    clear_threshold: float | None = None
    orbit: str | None = None
    suffix: str | None = None
    text: str = ""

    @property
    def is_asset(self) -> bool:
        return "/" in self.name

    @property
    def asset_bands(self) -> tuple[str, ...]:
        return tuple(b.strip() for b in (self.argument or "").split(",") if b.strip())

    @property
    def bands(self) -> tuple[str, ...] | None:
        """The part's band names as they come out (suffixed); None for an asset without a band list."""
        bands = self.asset_bands if self.is_asset else PRESETS[self.name].bands
        if not bands:
            return None
        return tuple(f"{b}_{self.suffix}" for b in bands) if self.suffix else bands


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A parsed recipe; `bands` is None when an asset's bands must be looked up from Earth Engine."""

    spec: str
    parts: tuple[Part, ...]
    bands: tuple[str, ...] | None


def parse_recipe(spec: str) -> Recipe:
    """Parse and check a recipe string; raises RecipeError with what to change."""
    if not spec or not spec.strip():
        raise RecipeError("An empty Earth Engine image recipe; name a preset or an asset ID.")
    parts = []
    for text in spec.split("+"):
        if not text.strip():
            raise RecipeError(f"Recipe {spec!r} has an empty part.")
        parts.append(_parse_part(text.strip(), spec))
    bands: list[str] | None = []
    for part in parts:
        part_bands = part.bands
        if part_bands is None:
            bands = None
        elif bands is not None:
            bands.extend(part_bands)
    if bands is not None:
        duplicates = sorted({b for b in bands if bands.count(b) > 1})
        if duplicates:
            raise RecipeError(
                f"Recipe {spec!r} names band(s) {', '.join(duplicates)} more than once. To stack one "
                "preset at two dates, give each part a name suffix, e.g. "
                "s2-sr:2019-summer@before+s2-sr:2023-summer@after."
            )
    return Recipe(spec, tuple(parts), tuple(bands) if bands is not None else None)


def label_scheme_of(recipe: Recipe | str) -> str | None:
    """The label-scheme preset that names a label recipe's classes (`dynamic-world`, `forest-loss`), or
    None when the recipe does not say (an asset, or several parts)."""
    if isinstance(recipe, str):
        recipe = parse_recipe(recipe)
    if len(recipe.parts) != 1 or recipe.parts[0].is_asset:
        return None
    return PRESETS[recipe.parts[0].name].label_scheme


# --- parsing one part ------------------------------------------------------------------------------
def _parse_part(text: str, spec: str) -> Part:
    head, *options = text.split("@")
    name, colon, argument = head.strip().partition(":")
    name, argument = name.strip(), argument.strip()
    if not name:
        raise RecipeError(f"Recipe {spec!r} has a part without a name: {text!r}.")
    if colon and not argument:
        raise RecipeError(f"{text}: nothing follows ':'; give a window (or drop the ':').")
    if "/" in name:
        return _asset_part(name, argument or None, options, text)
    preset = PRESETS.get(name)
    if preset is None:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise RecipeError(
            f"Unknown Earth Engine image {name!r} in {spec!r}{hint}: use one of the presets "
            f"{', '.join(PRESETS)}, or an asset ID such as USGS/SRTMGL1_003[:elevation]."
        )
    window = _window(preset, argument or None, text)
    chosen = _options(preset, options, text)
    composite = chosen.get("composite", MEDIAN if preset.composites else None)
    threshold = chosen.get("cs", DEFAULT_CLEAR_THRESHOLD if "cs" in preset.settings else None)
    return Part(
        name,
        argument or None,
        window,
        composite,
        None if threshold is None else float(threshold),
        chosen.get("orbit"),
        chosen.get("suffix"),
        text,
    )


def _asset_part(name: str, argument: str | None, options: list[str], text: str) -> Part:
    part = Part(name, argument, text=text)
    if not options:
        return part
    if len(options) > 1 or "=" in options[0] and not options[0].strip().startswith("name="):
        raise RecipeError(f"{text}: an asset takes one option, a name suffix such as @before.")
    suffix = _suffix(options[0].strip().removeprefix("name="), text)
    if not part.asset_bands:
        raise RecipeError(f"{text}: a name suffix needs the asset's band list, e.g. {name}:B4,B8@{suffix}.")
    return dataclasses.replace(part, suffix=suffix)


def _window(preset: Preset, argument: str | None, text: str) -> Window | None:
    if preset.window == "none":
        if argument is not None:
            raise RecipeError(f"{preset.name} takes no argument, got {argument!r}.")
        return None
    argument = argument or preset.default_window
    if argument is None and preset.window == "years":
        first, last = HANSEN_YEARS
        raise RecipeError(
            f"{text}: {preset.name} needs the years of loss, e.g. {preset.name}:{first}..{last}."
        )
    if argument is None:
        raise RecipeError(
            f"{text}: {preset.name} needs a date window, e.g. {preset.name}:2023, {preset.name}:2023-summer "
            f"or {preset.name}:2023-05-01..2023-09-30."
        )
    if preset.window == "worldcover":
        if not re.fullmatch(r"\d{4}", argument):
            raise RecipeError(f"{preset.name}: the argument is a year such as 2020, got {argument!r}.")
        if int(argument) not in WORLDCOVER_ASSETS:
            raise RecipeError(
                f"{preset.name}: ESA WorldCover exists for {sorted(WORLDCOVER_ASSETS)}, got {argument}."
            )
        year = int(argument)
        return Window(dt.date(year, 1, 1), dt.date(year, 12, 31))
    if preset.window == "years":
        return _years(preset, argument, text)
    window = parse_window(argument, text)
    if preset.first_date and window.end < preset.first_date:
        raise RecipeError(
            f"{text}: the window {window} ends before {preset.sensor}'s first data on "
            f"{preset.first_date.isoformat()}; pick a window from {preset.first_date.isoformat()} on."
        )
    return window


def parse_window(text: str, where: str = "") -> Window:
    """`2023-05-01..2023-09-30` (both days included), `2023`, or `2023-summer` (and spring, autumn,
    winter: meteorological seasons, winter 2023 = December 2023 - February 2024)."""
    where = f"{where}: " if where else ""
    usage = (
        f"{where}{text!r} is not a date window: use a year such as 2020, a season such as 2023-summer "
        "(spring, summer, autumn, winter) or first..last days such as 2023-05-01..2023-09-30."
    )
    if re.fullmatch(r"\d{4}", text):
        year = int(text)
        return Window(dt.date(year, 1, 1), dt.date(year, 12, 31))
    season = _SEASON.fullmatch(text)
    if season:
        year, name = int(season.group(1)), season.group(2)
        if name not in SEASONS:
            raise RecipeError(usage)
        first, last = SEASONS[name]
        end_year = year + 1 if last < first else year  # winter runs into the next year
        return Window(
            dt.date(year, first, 1), dt.date(end_year, last, calendar.monthrange(end_year, last)[1])
        )
    dates = _DATES.fullmatch(text)
    if not dates:
        raise RecipeError(usage)
    try:
        start, end = (dt.date.fromisoformat(d) for d in dates.groups())
    except ValueError as e:
        raise RecipeError(f"{where}{text!r}: {e}; days are written YYYY-MM-DD.") from None
    if end < start:
        raise RecipeError(f"{where}the window {text!r} ends before it starts; write first..last.")
    return Window(start, end)


def _years(preset: Preset, argument: str, text: str) -> Window:
    found = _YEARS.fullmatch(argument)
    first, last = HANSEN_YEARS
    if not found:
        raise RecipeError(
            f"{text}: {preset.name} takes a year or a range of years such as {first}..{last}, got {argument!r}."
        )
    start = int(found.group(1))
    end = int(found.group(2) or start)
    if end < start:
        raise RecipeError(f"{text}: the years {argument!r} end before they start; write first..last.")
    if start < first or end > last:
        raise RecipeError(
            f"{text}: Global Forest Change ({HANSEN_ASSET}) maps forest loss in {first}-{last}, got "
            f"{start}-{end}."
        )
    return Window(dt.date(start, 1, 1), dt.date(end, 12, 31))


def _options(preset: Preset, options: list[str], text: str) -> dict[str, str]:
    """The @options of a preset part: {"composite", setting keys, "suffix"}."""
    chosen: dict[str, str] = {}
    given: dict[str, str] = {}
    kinds = {"composite": "composites", "suffix": "name suffixes"}

    def choose(key: str, value: str, option: str) -> None:
        if key in chosen:
            raise RecipeError(
                f"{text}: two {kinds.get(key, key + ' settings')}, @{given[key]} and @{option}; keep one."
            )
        chosen[key], given[key] = value, option

    for raw in options:
        option = raw.strip()
        if not option:
            raise RecipeError(f"{text}: an empty option after '@'.")
        key, equals, value = option.partition("=")
        key = key.strip()
        if equals:
            value = value.strip()
            if key == "name":
                choose("suffix", _suffix(value, text), option)
            elif key in preset.settings:
                choose(key, _setting(key, value, text), option)
            else:
                raise RecipeError(f"{text}: unknown option @{option}; {_valid_options(preset)}.")
        elif key in preset.settings:
            raise RecipeError(f"{text}: @{key} takes a value, {preset.settings[key].split(' ')[0]}.")
        elif _is_composite(key):
            if not preset.composites:
                raise RecipeError(
                    f"{text}: {preset.name} has no choice of composite; {_valid_options(preset)}."
                )
            allowed = key if not _PERCENTILE.fullmatch(key) else "pNN"
            if allowed not in preset.composites:
                raise RecipeError(
                    f"{text}: @{key} does not apply to {preset.name}; {_valid_options(preset)}."
                )
            percentile = _PERCENTILE.fullmatch(key)
            if percentile and not 0 <= int(percentile.group(1)) <= 100:
                raise RecipeError(f"{text}: @{key}: a percentile is 0 to 100, e.g. @p25.")
            choose("composite", key, option)
        else:
            words = [c for c in preset.composites if c != "pNN"] + list(preset.settings)
            close = difflib.get_close_matches(key.lower(), words, n=1, cutoff=0.75)
            if close:
                raise RecipeError(
                    f"{text}: @{key} is not an option (did you mean @{close[0]}?); {_valid_options(preset)}. "
                    f"A name suffix that looks like an option is written @name={key}."
                )
            choose("suffix", _suffix(key, text), option)
    return chosen


def _is_composite(word: str) -> bool:
    return word in (MEDIAN, "mean", "greenest") or bool(_PERCENTILE.fullmatch(word))


def _setting(key: str, value: str, text: str) -> str:
    if key == "cs":
        try:
            threshold = float(value)
        except ValueError:
            threshold = -1.0
        if not 0.0 <= threshold <= 1.0:
            raise RecipeError(
                f"{text}: @cs={value}: the Cloud Score+ threshold is a number from 0 to 1 (default "
                f"{DEFAULT_CLEAR_THRESHOLD:.2f}; 0.50-0.65 generally work well)."
            )
        return value
    if key == "orbit":
        if value.upper() not in S1_ORBITS:
            raise RecipeError(f"{text}: @orbit={value}: the orbit is ASCENDING or DESCENDING.")
        return value.upper()
    raise RecipeError(f"{text}: unknown option @{key}={value}.")  # a setting declared but not handled


def _suffix(value: str, text: str) -> str:
    if not _SUFFIX.fullmatch(value):
        raise RecipeError(
            f"{text}: {value!r} is not a valid name suffix: use a simple identifier (a letter, then letters, "
            "digits or _), such as before, after or y2019."
        )
    return value


def _valid_options(preset: Preset) -> str:
    valid = []
    for composite in preset.composites:
        valid.append("@pNN (a percentile, e.g. @p25)" if composite == "pNN" else f"@{composite}")
    valid.extend(f"@{v}" for v in preset.settings.values())
    valid.append("a name suffix such as @before")
    return f"{preset.name} takes {', '.join(valid)}"


# --- building the images (needs an initialised Earth Engine session) ------------------------------
def build_image(recipe: Recipe | str) -> ee.Image:
    """The `ee.Image` of a recipe, its bands in recipe order."""
    import ee

    if isinstance(recipe, str):
        recipe = parse_recipe(recipe)
    images = [_build_part(part) for part in recipe.parts]
    return images[0] if len(images) == 1 else ee.Image.cat(*images)


def _build_part(part: Part):
    import ee

    if part.is_asset:
        image = ee.Image(part.name)
        bands = list(part.asset_bands)
        if part.suffix:
            return image.select(bands, list(part.bands or ()))
        return image.select(bands) if bands else image
    image = _BUILDERS[part.name](part)
    return image.rename(list(part.bands)) if part.suffix else image


def scene_collection(part: Part) -> ee.ImageCollection | None:
    """The scenes a dated part composites, filtered on their properties but not yet masked pixel by
    pixel (what a scene count measures); None for a part that is not a collection over a window."""
    import ee

    ids = collection_ids(part)
    if not ids:
        return None
    collection = ee.ImageCollection(ids[0])
    for other in ids[1:]:
        collection = collection.merge(ee.ImageCollection(other))
    collection = collection.filterDate(part.window.ee_start, part.window.ee_end)
    for filter_ in _SCENE_FILTERS.get(part.name, lambda part: [])(part):
        collection = collection.filter(filter_)
    return collection


def collection_ids(part: Part) -> tuple[str, ...]:
    """The Earth Engine collection ids a dated part reads its scenes from (empty for the others)."""
    if part.is_asset or part.window is None:
        return ()
    return _COLLECTION_IDS.get(part.name, ())


def sentinel2_median(year: int) -> ee.Image:
    """Cloud-masked median composite of a year of Sentinel-2 L1C scenes, the 13 bands as float: the
    preset s2-l1c-median, built as it always was."""
    return _s2_qa60_median(Window(dt.date(year, 1, 1), dt.date(year, 12, 31)))


def _s2_qa60_median(window: Window):
    import ee

    def mask_clouds(image):
        return image.updateMask(image.select("QA60").bitwiseAnd(S2_QA60_CLOUD_BITS).eq(0))

    return (
        ee.ImageCollection(S2_COLLECTION)
        .filterDate(window.ee_start, window.ee_end)
        .filter(ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", S2_MAX_CLOUDY_PIXEL_PERCENTAGE))
        .map(mask_clouds)
        .select(list(S2_BANDS))
        .median()
        .toFloat()
    )


def _sentinel2(part: Part):
    """Sentinel-2 (L1C or SR) over the window, Cloud Score+ masked, composited, as float."""
    import ee

    threshold = part.clear_threshold

    def mask_clouds(image):
        return image.updateMask(image.select(CLOUD_SCORE_BAND).gte(threshold))

    bands = PRESETS[part.name].bands
    scenes = (
        scene_collection(part)
        .linkCollection(ee.ImageCollection(CLOUD_SCORE_PLUS), [CLOUD_SCORE_BAND])
        .map(mask_clouds)
        .select(list(bands))
    )
    return _composite(scenes, bands, part.composite, S2_NDVI_BANDS).toFloat()


def _landsat(part: Part):
    """Landsat 8 and 9 surface reflectance over the window, QA_PIXEL and QA_RADSAT masked, scaled,
    composited."""

    def prepare(image):
        # QA_RADSAT is 0 where no band saturated; a saturated band's value is no measurement.
        clear = (
            image.select("QA_PIXEL").bitwiseAnd(LANDSAT_QA_BITS).eq(0).And(image.select("QA_RADSAT").eq(0))
        )
        reflectance = image.select(list(LANDSAT_BANDS)).multiply(LANDSAT_SCALE).add(LANDSAT_OFFSET)
        return reflectance.updateMask(clear)

    scenes = scene_collection(part).map(prepare)
    return _composite(scenes, LANDSAT_BANDS, part.composite, LANDSAT_NDVI_BANDS).toFloat()


def _sentinel1(part: Part):
    """Sentinel-1 GRD VV and VH (dB) over the window, composited."""
    scenes = scene_collection(part).select(list(S1_BANDS))
    return _composite(scenes, S1_BANDS, part.composite).toFloat()


def _composite(scenes, bands: tuple[str, ...], composite: str, ndvi_bands: tuple[str, str] | None = None):
    import ee

    if composite == MEDIAN:
        return scenes.median()
    if composite == "mean":
        return scenes.mean()
    if composite == "greenest" and ndvi_bands:

        def with_ndvi(image):
            return image.addBands(image.normalizedDifference(list(ndvi_bands)).rename("NDVI"))

        return scenes.map(with_ndvi).qualityMosaic("NDVI").select(list(bands))
    percentile = _PERCENTILE.fullmatch(composite)
    if percentile:
        # The reducer names its outputs BAND_pNN; the recipe's band names stay those of the scenes.
        return scenes.reduce(ee.Reducer.percentile([int(percentile.group(1))])).rename(list(bands))
    raise RecipeError(f"Unknown composite {composite!r}.")


def worldcover_dynamic_world(year: int = DEFAULT_YEAR) -> ee.Image:
    """ESA WorldCover classes as Dynamic World indices in band `landcover` (uint8)."""
    import ee

    codes = sorted(WORLDCOVER_TO_DYNAMIC_WORLD)
    return (
        ee.Image(WORLDCOVER_ASSETS[year])
        .select("Map")
        .remap(codes, [WORLDCOVER_TO_DYNAMIC_WORLD[c] for c in codes])
        .rename(LABEL_BAND)
        .toUint8()
    )


def _dynamic_world(part: Part):
    """Dynamic World's most frequent class over the window, in band `landcover` (uint8)."""
    return scene_collection(part).select([DYNAMIC_WORLD_BAND]).mode().rename(LABEL_BAND).toUint8()


def _hansen_loss(part: Part):
    """1 where Global Forest Change saw forest lost in the window's years, else 0 (uint8)."""
    import ee

    loss_year = ee.Image(HANSEN_ASSET).select(HANSEN_LOSS_BAND)
    first, last = part.window.start.year - 2000, part.window.end.year - 2000
    return loss_year.gte(first).And(loss_year.lte(last)).rename(LABEL_BAND).toUint8()


def _elevation(part: Part):
    import ee

    return ee.Image(DEM_ASSET).select(ELEVATION_BAND)


def _s1_filters(part: Part) -> list:
    import ee

    filters = [
        ee.Filter.eq("instrumentMode", S1_MODE),
        ee.Filter.listContains("transmitterReceiverPolarisation", "VV"),
        ee.Filter.listContains("transmitterReceiverPolarisation", "VH"),
    ]
    if part.orbit:
        filters.append(ee.Filter.eq("orbitProperties_pass", part.orbit))
    return filters


def _s2_legacy_filters(part: Part) -> list:
    import ee

    return [ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", S2_MAX_CLOUDY_PIXEL_PERCENTAGE)]


# Preset -> the collections its scenes come from, and the property filters its scenes must pass.
_COLLECTION_IDS: dict[str, tuple[str, ...]] = {
    "s2-l1c": (S2_COLLECTION,),
    "s2-sr": (S2_SR_COLLECTION,),
    "s2-l1c-median": (S2_COLLECTION,),
    "landsat": LANDSAT_COLLECTIONS,
    "s1-grd": (S1_COLLECTION,),
    "dynamicworld-label": (DYNAMIC_WORLD_COLLECTION,),
}
_SCENE_FILTERS: dict[str, Callable[[Part], list]] = {
    "s2-l1c-median": _s2_legacy_filters,
    "s1-grd": _s1_filters,
}
_BUILDERS: dict[str, Callable[[Part], object]] = {
    "s2-l1c": _sentinel2,
    "s2-sr": _sentinel2,
    "landsat": _landsat,
    "s1-grd": _sentinel1,
    "s2-l1c-median": lambda part: _s2_qa60_median(part.window),
    "elevation": _elevation,
    "worldcover-dynamicworld": lambda part: worldcover_dynamic_world(part.window.start.year),
    "dynamicworld-label": _dynamic_world,
    "hansen-loss": _hansen_loss,
}
