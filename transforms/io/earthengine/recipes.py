"""Earth Engine images by recipe: the talk's inputs and labels as named presets, or any asset.

Extraction and prediction both build their images here, so a model is trained on exactly the pixels it
will later be applied to. A recipe is a string, parts joined by ``+`` (their bands are stacked):

- ``s2-l1c-median[:YEAR]``: the 13 Sentinel-2 L1C bands (``COPERNICUS/S2_HARMONIZED``, TOA reflectance
  x10000), scenes under 20 % cloudy pixels, clouds and cirrus masked with the QA60 bits, median
  composite of the calendar year (default 2020, the year of the WorldCover labels);
- ``elevation``: ``elevation`` in metres from the SRTM 30 m DEM (``USGS/SRTMGL1_003``);
- ``worldcover-dynamicworld[:YEAR]``: ``landcover``, ESA WorldCover (2020: v100, 2021: v200) remapped to
  the 9 Dynamic World class indices of `transforms.contracts.classes`;
- ``ASSET_ID[:BAND,BAND,...]``: any image asset (an ID holds a ``/``), optionally a subset of its bands;
  without a band list the bands are looked up from Earth Engine when first needed.

Masked pixels (cloudy in every scene of the year, outside a DEM's coverage, no WorldCover class) stay
masked here; the reader fills them with its fill value, as nodata in local rasters.

Parsing needs no Earth Engine session; `build_image` does (call it after `ee.Initialize`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from transforms.contracts.classes import S2_BANDS, WORLDCOVER_TO_DYNAMIC_WORLD

DEFAULT_INPUTS = "s2-l1c-median:2020+elevation"
DEFAULT_LABELS = "worldcover-dynamicworld"
LABEL_BAND = "landcover"
DEFAULT_YEAR = 2020

S2_COLLECTION = "COPERNICUS/S2_HARMONIZED"
S2_MAX_CLOUDY_PIXEL_PERCENTAGE = 20
# QA60 bits: opaque clouds and cirrus (Sentinel-2 L1C product specification).
S2_QA60_CLOUD_BITS = (1 << 10) | (1 << 11)
S2_FIRST_YEAR = 2015  # Sentinel-2A launched in June 2015
DEM_ASSET = "USGS/SRTMGL1_003"
ELEVATION_BAND = "elevation"
WORLDCOVER_ASSETS = {2020: "ESA/WorldCover/v100/2020", 2021: "ESA/WorldCover/v200/2021"}


class RecipeError(ValueError):
    """A recipe string that names no preset or asset, or a bad preset argument."""


@dataclasses.dataclass(frozen=True)
class Part:
    """One `+`-separated part of a recipe: a preset with its argument, or an asset with its bands."""

    name: str
    argument: str | None = None

    @property
    def is_asset(self) -> bool:
        return "/" in self.name


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A parsed recipe; `bands` is None when an asset's bands must be looked up from Earth Engine."""

    spec: str
    parts: tuple[Part, ...]
    bands: tuple[str, ...] | None


def _year(part: Part) -> int:
    if part.argument is None:
        return DEFAULT_YEAR
    if not re.fullmatch(r"\d{4}", part.argument):
        raise RecipeError(f"{part.name}: the argument is a year such as 2020, got {part.argument!r}.")
    return int(part.argument)


def _s2_bands(part: Part) -> tuple[str, ...]:
    year = _year(part)
    if year < S2_FIRST_YEAR:
        raise RecipeError(f"{part.name}: Sentinel-2 data starts in {S2_FIRST_YEAR}, got year {year}.")
    return S2_BANDS


def _no_argument(bands: tuple[str, ...]) -> Callable[[Part], tuple[str, ...]]:
    def check(part: Part) -> tuple[str, ...]:
        if part.argument is not None:
            raise RecipeError(f"{part.name} takes no argument, got {part.argument!r}.")
        return bands

    return check


def _worldcover_bands(part: Part) -> tuple[str, ...]:
    year = _year(part)
    if year not in WORLDCOVER_ASSETS:
        raise RecipeError(f"{part.name}: ESA WorldCover exists for {sorted(WORLDCOVER_ASSETS)}, got {year}.")
    return (LABEL_BAND,)


# Preset name -> band names (and the check of its argument).
PRESETS: dict[str, Callable[[Part], tuple[str, ...]]] = {
    "s2-l1c-median": _s2_bands,
    "elevation": _no_argument((ELEVATION_BAND,)),
    "worldcover-dynamicworld": _worldcover_bands,
}


def parse_recipe(spec: str) -> Recipe:
    """Parse and check a recipe string; raises RecipeError with what to change."""
    if not spec or not spec.strip():
        raise RecipeError("An empty Earth Engine image recipe; name a preset or an asset ID.")
    parts = []
    for text in spec.split("+"):
        name, _, argument = text.strip().partition(":")
        if not name:
            raise RecipeError(f"Recipe {spec!r} has an empty part.")
        parts.append(Part(name, argument or None))
    bands: list[str] | None = []
    for part in parts:
        if part.is_asset:
            asset_bands = [b.strip() for b in (part.argument or "").split(",") if b.strip()]
            if not asset_bands:
                bands = None
            elif bands is not None:
                bands.extend(asset_bands)
        elif part.name in PRESETS:
            part_bands = PRESETS[part.name](part)
            if bands is not None:
                bands.extend(part_bands)
        else:
            raise RecipeError(
                f"Unknown Earth Engine image {part.name!r} in {spec!r}: use one of the presets "
                f"{', '.join(sorted(PRESETS))}, or an asset ID such as USGS/SRTMGL1_003[:elevation]."
            )
    if bands is not None:
        duplicates = sorted({b for b in bands if bands.count(b) > 1})
        if duplicates:
            raise RecipeError(f"Recipe {spec!r} names band(s) {', '.join(duplicates)} more than once.")
    return Recipe(spec, tuple(parts), tuple(bands) if bands is not None else None)


# --- building the images (needs an initialised Earth Engine session) ------------------------------
def build_image(recipe: Recipe | str):
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
        bands = [b.strip() for b in (part.argument or "").split(",") if b.strip()]
        return image.select(bands) if bands else image
    if part.name == "s2-l1c-median":
        return sentinel2_median(_year(part))
    if part.name == "elevation":
        return ee.Image(DEM_ASSET).select(ELEVATION_BAND)
    if part.name == "worldcover-dynamicworld":
        return worldcover_dynamic_world(_year(part))
    raise RecipeError(f"Unknown preset {part.name!r}.")


def sentinel2_median(year: int):
    """Cloud-masked median composite of a year of Sentinel-2 L1C scenes, the 13 bands as float."""
    import ee

    def mask_clouds(image):
        return image.updateMask(image.select("QA60").bitwiseAnd(S2_QA60_CLOUD_BITS).eq(0))

    return (
        ee.ImageCollection(S2_COLLECTION)
        .filterDate(f"{year}-01-01", f"{year + 1}-01-01")
        .filter(ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", S2_MAX_CLOUDY_PIXEL_PERCENTAGE))
        .map(mask_clouds)
        .select(list(S2_BANDS))
        .median()
        .toFloat()
    )


def worldcover_dynamic_world(year: int = DEFAULT_YEAR):
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
