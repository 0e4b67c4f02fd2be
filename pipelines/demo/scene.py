"""The demo scene: what the pipelines run on when no Earth Engine project is given.

`ensure_demo_scene` generates, once per cache folder, a synthetic but plausible Sentinel-2 scene of an
Alpine valley: a mountain side rising to snow and bare rock, forests on the slopes, a meandering river
with two lakes and wetlands on their shores, a small town of blocks and parks, and rectangular fields
in the flat lowlands. Everything is drawn from one seed with numpy alone, so the same seed gives the
same arrays (for a given numpy version), and nothing is read from the network.

Two dates of the same place are written, all on one 10 m grid in UTM zone 32N. The first date, the one
the pipelines extract and train on:

- ``image.tif``: float32, the 13 Sentinel-2 L1C bands (TOA reflectance x10000, whole numbers as in
  the real product) followed by ``elevation`` in metres; band descriptions hold the band names.
  Each pixel's spectrum is drawn around the real per-class mean of `transforms.contracts.classes.SPECTRA_MEAN`,
  with an offset that is smooth within an object (a forest stand, a field, a town block) and a little
  per-pixel noise.
- ``labels.tif``: uint8 Dynamic World class indices, nodata 255 (no pixel is nodata), palette set.
- ``regions.geojson``: a few named lon/lat polygons to sample patches from, each at least
  `region_margin(size)` pixels inside the scene edge (`REGION_MARGIN_PX` unless the scene is tiny).

The second date, as a later acquisition would see the place, for comparing two dates' maps:

- ``image_after.tif`` and ``labels_after.tif``: as ``image.tif`` and ``labels.tif``. A few known changes
  have happened in between: a clearing in a forest stand (trees to bare or grass), a lake's level has
  dropped (a ring of its shore to flooded vegetation and bare mud), the town has grown by a few blocks
  at its edge (grass and crops to built), and a few whole fields have changed use (crops to grass,
  grass to crops). Every other pixel keeps its class and its object's offsets, with fresh per-pixel
  noise and a gain of a few per cent over the whole scene (another acquisition's calibration and
  atmosphere). The elevation band is the first date's.
- ``changes.json``: each change (name, from and to class, pixels, hectares, bounding box as west,
  south, east, north in the scene CRS; a change over two classes is one entry per class), the pixels
  per from-to pair, the second date's gain per band, and the label scheme.

The first date's pixels are those of generator version 2, before the second date existed: the second
date draws from a random stream of its own.

Run ``python -m pipelines.demo.scene --help`` to generate one from the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_geom
from rasterio.windows import Window

from transforms.contracts.classes import (
    CLASS_NAMES,
    NUM_CLASSES,
    S2_BANDS,
    SPECTRA_MEAN,
    SPECTRA_STD,
    palette_rgb,
)
from transforms.contracts.label_scheme import PRESETS, classes_tag
from transforms.runtime.command import HelpFormatter, add_verbose_flag, fill, prog, quiet_start

# Raise when the generated content changes: cached scenes of another version are then regenerated.
GENERATOR_VERSION = 3  # 3: the second date (the first date's pixels are those of version 2)

CRS = "EPSG:32632"  # UTM zone 32N
ORIGIN = (600_000.0, 5_120_000.0)  # upper-left corner (easting, northing), in the western Alps
PIXEL_SIZE = 10.0  # metres, Sentinel-2's finest band resolution
BLOCK_SIZE = 256  # internal tile size of both GeoTIFFs
ELEVATION_BAND = "elevation"
LABEL_NODATA = 255
# Regions stay this far inside the scene edge, so that 128-pixel patches centred inside them fit.
REGION_MARGIN_PX = 80
MIN_SIZE = 64
# A lake is this many metres deeper per unit of its shape field below 1 (its shore): a level drop of
# d metres lays bare the shore where the shape field is above 1 - d / LAKE_DEPTH_SLOPE.
LAKE_DEPTH_SLOPE = 12.0

IMAGE_FILE = "image.tif"
LABELS_FILE = "labels.tif"
REGIONS_FILE = "regions.geojson"
IMAGE_AFTER_FILE = "image_after.tif"
LABELS_AFTER_FILE = "labels_after.tif"
CHANGES_FILE = "changes.json"
SCENE_FILES = (IMAGE_FILE, LABELS_FILE, REGIONS_FILE, IMAGE_AFTER_FILE, LABELS_AFTER_FILE, CHANGES_FILE)
MANIFEST_FILE = "scene.json"  # written last; its presence marks a complete scene

WATER, TREES, GRASS, FLOODED, CROPS, SHRUB, BUILT, BARE, SNOW = (
    CLASS_NAMES.index(name)
    for name in (
        "water",
        "trees",
        "grass",
        "flooded_vegetation",
        "crops",
        "shrub_and_scrub",
        "built",
        "bare",
        "snow_and_ice",
    )
)


@dataclass(frozen=True)
class DemoScene:
    """Paths of a generated demo scene."""

    image: str  # 13 Sentinel-2 L1C bands + "elevation", float32, tiled GeoTIFF
    labels: str  # uint8 class indices on the same grid, nodata 255
    regions: str  # GeoJSON FeatureCollection of named lon/lat polygons
    bands: tuple[str, ...]  # band names of `image` and `image_after`, in file order
    image_after: str  # the second date: the same place, grid and bands, with known changes
    labels_after: str  # the second date's true classes, encoded as `labels`
    changes: str  # JSON: what changed between the dates, where, and how much


def default_cache_dir() -> pathlib.Path:
    """``$TERRABEAM_CACHE`` if set, else ``~/.cache/terrabeam``."""
    env = os.environ.get("TERRABEAM_CACHE")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "terrabeam"


def ensure_demo_scene(
    cache_dir: str | os.PathLike | None = None, size: int = 2048, seed: int = 0
) -> DemoScene:
    """Returns the demo scene for (size, seed), generating it first if the cache lacks it.

    The scene lives in ``<cache_dir>/demo-scene-<size>-seed<seed>/``. It is generated in a temporary
    folder next to it and renamed into place, so an interrupted run or two processes generating at
    once never leave a partial scene that a later call would take as complete. A scene already in
    place is only checked, not read.

    Args:
      cache_dir: folder holding the cache; `default_cache_dir()` when None.
      size: width and height in pixels (10 m each); at least 64.
      seed: any non-negative integer; the same seed gives the same arrays.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer of at least {MIN_SIZE} pixels, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    root = pathlib.Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"demo-scene-{size}-seed{seed}"
    if not _is_complete(target, size, seed):
        root.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=root))
        try:
            os.chmod(tmp, 0o755)
            generate_demo_scene(tmp, size, seed)
            _publish(tmp, target, size, seed)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return DemoScene(
        image=str(target / IMAGE_FILE),
        labels=str(target / LABELS_FILE),
        regions=str(target / REGIONS_FILE),
        bands=(*S2_BANDS, ELEVATION_BAND),
        image_after=str(target / IMAGE_AFTER_FILE),
        labels_after=str(target / LABELS_AFTER_FILE),
        changes=str(target / CHANGES_FILE),
    )


def generate_demo_scene(directory: str | os.PathLike, size: int, seed: int) -> None:
    """Writes the scene's files into an existing folder, in place (use `ensure_demo_scene` instead)."""
    directory = pathlib.Path(directory)
    # The second date draws from a fourth stream of its own: spawn(4)'s first three children are
    # spawn(3)'s, so the first date's arrays stay those of earlier versions.
    *first_date, second_date = np.random.SeedSequence(seed).spawn(4)
    terrain_rng, cover_rng, spectra_rng = (np.random.default_rng(s) for s in first_date)
    change_rng, after_spectra_rng = (np.random.default_rng(s) for s in second_date.spawn(2))
    layout = _draw_layout(terrain_rng, size)
    elevation, lakes, nearest_lake = _terrain(terrain_rng, layout)
    cover = _landcover(cover_rng, layout, elevation, lakes)
    tables = _spectra_tables(spectra_rng)
    _write_labels(directory / LABELS_FILE, cover.labels, size, seed)
    _write_image(
        directory / IMAGE_FILE, cover.labels, elevation, cover.offsets, tables, spectra_rng, size, seed
    )
    _write_regions(directory / REGIONS_FILE, layout)

    labels_after, offsets_after, changes = _second_date(change_rng, layout, cover, lakes, nearest_lake)
    gain = _acquisition_gain(after_spectra_rng)
    _write_labels(directory / LABELS_AFTER_FILE, labels_after, size, seed)
    _write_image(
        directory / IMAGE_AFTER_FILE,
        labels_after,
        elevation,
        offsets_after,
        tables,
        after_spectra_rng,
        size,
        seed,
        gain=gain,
    )
    changes_json = _changes_json(changes, size, seed, gain)
    (directory / CHANGES_FILE).write_text(json.dumps(changes_json, indent=1) + "\n")
    files = {name: (directory / name).stat().st_size for name in SCENE_FILES}
    manifest = {"version": GENERATOR_VERSION, "size": size, "seed": seed, "files": files}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def _is_complete(folder: pathlib.Path, size: int, seed: int) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        if (manifest["version"], manifest["size"], manifest["seed"]) != (GENERATOR_VERSION, size, seed):
            return False
        files = manifest["files"]
        return all((folder / name).stat().st_size == files[name] for name in SCENE_FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _publish(tmp: pathlib.Path, target: pathlib.Path, size: int, seed: int) -> None:
    """Renames a freshly generated scene into place, replacing an incomplete or outdated one."""
    for _ in range(3):
        try:
            os.rename(tmp, target)
            return
        except OSError:
            if _is_complete(target, size, seed):
                return  # another process published the same scene first
        stale = target.with_name(f".{target.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(target, stale)
        except FileNotFoundError:
            continue
        shutil.rmtree(stale, ignore_errors=True)
    raise OSError(f"could not move the generated demo scene into {target}")


# --- Layout and terrain ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Where the big features go. Lengths are in pixels; the scene is `size` pixels square."""

    size: int
    detail: float  # scale of small features (river width, fields, blocks) relative to a 2048 scene
    front: np.ndarray  # per column: row of the foot of the mountain side (mountains lie north of it)
    river: np.ndarray  # per column: row of the river's centre line
    river_slope: np.ndarray  # per column: d(row)/d(column) of the centre line
    river_half_width: float
    lakes: tuple[tuple[float, float, float, float, float], ...]  # (col, row, semi-axis a, b, angle)
    town: tuple[float, float, float, float]  # centre col, centre row, half width, half height
    field_angle: float  # radians, rotation of the field grid


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Smoothly interpolates a (n + 1) x (n + 1) lattice spanning the scene to size x size pixels."""
    n = grid.shape[0] - 1
    t = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(n / size)
    i0 = np.minimum(t.astype(np.int64), n - 1)
    f = t - i0
    f = f * f * (3 - 2 * f)  # smoothstep: no creases at lattice lines
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _fractal(
    rng: np.random.Generator, size: int, cells: int, octaves: int, persistence: float = 0.5
) -> np.ndarray:
    """Zero-mean, unit-variance value noise: a sum of octaves of smoothly upsampled random lattices.

    Lattices are fixed fractions of the scene and all are drawn whatever the size, so one seed gives
    the same large-scale pattern at every size; octaves finer than 4 pixels are left out.
    """
    out = np.zeros((size, size), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        n = cells * 2**octave
        grid = rng.standard_normal((n + 1, n + 1), dtype=np.float32)
        if size >= 4 * n:
            out += np.float32(amplitude) * _upsample(grid, size)
        amplitude *= persistence
    out -= out.mean()
    out /= max(float(out.std()), 1e-6)
    return out


def _noise_1d(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.standard_normal(cells + 1)
    return np.interp((np.arange(size) + 0.5) / size * cells, np.arange(cells + 1), grid)


def _draw_layout(rng: np.random.Generator, size: int) -> _Layout:
    u = (np.arange(size) + 0.5) / size  # column centres as fractions of the scene
    detail = min(max(size / 2048, 0.375), 1.0)
    # The mountain side fills the north, its foot running roughly west-east at about half height.
    tilt = rng.uniform(-0.12, 0.12)
    front = size * (0.5 + tilt * (u - 0.5) + 0.04 * _noise_1d(rng, size, 6))
    # The river meanders west-east through the lowlands south of the foot.
    k1, k2 = rng.uniform(1.2, 1.8), rng.uniform(3.0, 4.5)
    p1, p2 = rng.uniform(0, 1, 2)
    v = (
        0.75
        + 0.04 * np.sin(2 * np.pi * (k1 * u + p1))
        + 0.012 * np.sin(2 * np.pi * (k2 * u + p2))
        + 0.01 * _noise_1d(rng, size, 10)
    )
    river = size * v
    river_slope = np.gradient(river)
    # A lake at the foot of the mountains, one in the southern lowlands.
    lake_cols = (rng.uniform(0.12, 0.22), rng.uniform(0.7, 0.85))
    lakes = []
    for i, (uc, a, b) in enumerate(zip(lake_cols, (0.075, 0.05), (0.03, 0.035), strict=True)):
        col = int(uc * size)
        row = front[col] + 0.045 * size if i == 0 else river[col] + 0.12 * size
        lakes.append((uc * size, row, a * size, b * size, rng.uniform(-0.3, 0.3)))
    # The town sits on the river between the lakes.
    town_col = int(rng.uniform(0.4, 0.52) * size)
    town = (town_col + 0.5, river[town_col] - 0.02 * size, 0.085 * size, 0.07 * size)
    return _Layout(
        size=size,
        detail=detail,
        front=front.astype(np.float32),
        river=river.astype(np.float32),
        river_slope=river_slope.astype(np.float32),
        river_half_width=max(1.5, 3.5 * detail),
        lakes=tuple(lakes),
        town=town,
        field_angle=math.radians(rng.uniform(-12, 12)),
    )


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre column and row coordinates, as broadcastable (1, size) and (size, 1) arrays."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, :], c[:, None]


def _river_distance(layout: _Layout) -> np.ndarray:
    """Signed distance in pixels from the river's centre line, positive to the south."""
    _, rows = _grid(layout.size)
    return (rows - layout.river[None, :]) / np.sqrt(1 + layout.river_slope[None, :] ** 2)


def _lake_shape(
    layout: _Layout, lake: tuple[float, float, float, float, float], wobble: np.ndarray
) -> np.ndarray:
    """Below 1 inside the lake; grows quadratically with distance from its centre."""
    cols, rows = _grid(layout.size)
    col, row, a, b, angle = lake
    dx, dy = cols - col, rows - row
    along = (dx * math.cos(angle) + dy * math.sin(angle)) / a
    across = (-dx * math.sin(angle) + dy * math.cos(angle)) / b
    return along**2 + across**2 + 0.3 * wobble


def _mountainness(layout: _Layout) -> np.ndarray:
    """0 on and south of the mountain foot, rising to 1 at the northern edge."""
    _, rows = _grid(layout.size)
    front = layout.front[None, :]
    return np.clip((front - rows) / front, 0, 1)


def _terrain(rng: np.random.Generator, layout: _Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Elevation in metres, the lakes' shape field (below 1 in a lake), and per pixel the index in
    `layout.lakes` of the lake whose shape field that is.

    Flat lowlands around 400 m with the river and lakes in the lowest parts, and a mountain side
    rising above 3000 m in the north.
    """
    size = layout.size
    m = _mountainness(layout)
    ridges = 0.8 - np.abs(_fractal(rng, size, 4, 7, 0.5))
    hills = _fractal(rng, size, 3, 6, 0.55)
    lift = m * m * (3 - 2 * m)
    river = np.abs(_river_distance(layout))
    elevation = (
        390
        + 30 * hills
        + 110 * np.clip(river / (0.2 * size), 0, 1)
        + 2750 * lift
        + 220 * hills * np.sqrt(m)
        + 700 * ridges * m**0.7
    )
    elevation -= 15 * np.exp(-((river / (12 * layout.detail)) ** 2))  # the river's bed
    wobble = _fractal(rng, size, 16, 3)
    lakes = np.full((size, size), np.inf, np.float32)
    nearest = np.zeros((size, size), np.uint8)
    for i, lake in enumerate(layout.lakes):
        q = _lake_shape(layout, lake, wobble)
        col, row = int(lake[0]), int(min(lake[1], size - 1))
        level = float(elevation[row, col]) - 10
        basin = np.where(q < 1, level - LAKE_DEPTH_SLOPE * (1 - q), level + 40 * (q - 1))
        elevation = np.minimum(elevation, basin)
        nearest[q < lakes] = i
        np.minimum(lakes, q, out=lakes)
    return elevation.astype(np.float32), lakes, nearest


# --- Land cover -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cover:
    """The first date's land cover, and the objects it was drawn from (the second date reuses them)."""

    labels: np.ndarray  # uint8 class indices
    offsets: tuple[np.ndarray, np.ndarray]  # brightness and tint, standardised per class
    smooth: tuple[np.ndarray, np.ndarray]  # the smooth brightness and tint fields before that
    farmland: np.ndarray  # bool: where the field grid is farmed
    field_id: np.ndarray  # field index of every pixel
    field_edge: np.ndarray  # bool: the lanes between fields
    block_id: np.ndarray  # town block index of every pixel
    town: np.ndarray  # bool: the town's extent
    town_reach: np.ndarray  # per pixel, its block's distance from the town centre (see `_town`)


def _landcover(
    rng: np.random.Generator, layout: _Layout, elevation: np.ndarray, lake_q: np.ndarray
) -> _Cover:
    """Class indices, two offset fields for the spectra (smooth, or constant per field/block), and the
    objects they were drawn from."""
    size, detail = layout.size, layout.detail
    _, rows = _grid(size)
    forest = _fractal(rng, size, 6, 4, 0.5)
    scrub = _fractal(rng, size, 10, 3, 0.5)
    wet = _fractal(rng, size, 12, 2, 0.5)
    farm = _fractal(rng, size, 3, 3, 0.5)
    brightness = _fractal(rng, size, 16, 3, 0.5)
    tint = _fractal(rng, size, 8, 4, 0.5)

    # Slope in m/m as if the scene were 2048 pixels wide, so smaller scenes look like shrunk copies.
    gy, gx = np.gradient(elevation)
    slope = np.hypot(gx, gy) * np.float32(size / 2048 / PIXEL_SIZE)
    del gx, gy
    snow_line = min(
        2850.0, float(np.quantile(elevation[:: max(1, size // 256), :: max(1, size // 256)], 0.95))
    )
    tree_line = snow_line - 850.0

    labels = np.full((size, size), GRASS, np.uint8)
    # Forest stands: dense on the mid slopes, thinning out to the tree line, small woods in the lowlands.
    threshold = np.interp(elevation, [550, 800, tree_line - 200, tree_line], [1.1, -0.5, -0.5, 2.5]).astype(
        np.float32
    )
    trees = forest > threshold
    # Scrub at the transitions: forest fringes and the band just above the tree line.
    fringe = (forest > threshold - 0.35) & ~trees & (scrub > -0.3)
    alpine = (elevation > tree_line - 80) & (elevation < tree_line + 250) & (scrub > -0.2)
    labels[fringe | alpine | ((scrub > 1.6) & (elevation > 500))] = SHRUB
    labels[trees & (elevation < tree_line)] = TREES
    labels[(elevation > snow_line - 300) | ((elevation > tree_line + 100) & (slope > 0.75))] = BARE
    labels[elevation > snow_line] = SNOW

    river = _river_distance(layout)
    half_width = np.float32(layout.river_half_width)

    # Fields: a slightly rotated grid of rectangles on the flat lowlands, crops or pasture.
    field_id, field_edge = _field_grid(rng, layout)
    kinds = rng.random(field_id.max() + 1)
    lowland = (rows > layout.front[None, :] + 0.04 * size + 0.03 * size * farm) & (
        elevation < 560 + 40 * farm
    )
    farmland = lowland & (farm > -0.8) & (np.abs(river) > 22 * detail) & (lake_q > 1.6)
    labels[farmland & (kinds[field_id] < 0.78)] = CROPS
    labels[farmland & (kinds[field_id] >= 0.78)] = GRASS
    labels[farmland & field_edge] = GRASS
    labels[lowland & (forest > 1.25)] = TREES  # woods between the fields

    # Wetlands and gallery forest along the river and the lake shores.
    bank = np.abs(river) - half_width
    labels[(bank > 8 * detail) & (bank < 16 * detail) & (wet > 0.3) & (elevation < 800)] = TREES
    labels[(bank > 0) & (bank < 9 * detail) & (wet > -0.2)] = FLOODED
    labels[(lake_q > 0.95) & (lake_q < 1.3) & (wet > -0.5)] = FLOODED

    # The town: blocks between streets, with a few parks, its outline frayed by noise.
    block_id, street, inside, block_reach = _town(rng, layout, farm)
    block_kind = rng.random(block_id.max() + 1)
    labels[inside & (block_kind[block_id] < 0.88)] = BUILT
    labels[inside & (block_kind[block_id] >= 0.88)] = GRASS
    labels[inside & street] = BUILT

    labels[(np.abs(river) < half_width) | (lake_q < 1)] = WATER

    # Spectral offsets: per field and per block a constant, elsewhere smooth; standardised per class so
    # that every class keeps its real mean spectrum.
    field_offset = rng.standard_normal(field_id.max() + 1).astype(np.float32)
    block_offset = rng.standard_normal(block_id.max() + 1).astype(np.float32)
    smooth = brightness
    brightness = np.where(farmland, field_offset[field_id], brightness)
    brightness = np.where(inside, block_offset[block_id], brightness)
    return _Cover(
        labels=labels,
        offsets=(_standardise_per_class(brightness, labels), _standardise_per_class(tint, labels)),
        smooth=(smooth, tint),
        farmland=farmland,
        field_id=field_id,
        field_edge=field_edge,
        block_id=block_id,
        town=inside,
        town_reach=block_reach,
    )


def _field_grid(rng: np.random.Generator, layout: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """Field index of every pixel on a rotated grid of rectangles, and the lanes between them."""
    size, detail = layout.size, layout.detail
    cols, rows = _grid(size)
    cos, sin = math.cos(layout.field_angle), math.sin(layout.field_angle)
    x = cols * cos + rows * sin + size  # rotated coordinates, made positive
    y = -cols * sin + rows * cos + size
    width = 70 * detail
    n_strips = int(3 * size / width) + 2
    strip = (x / width).astype(np.int32)
    # Each strip of fields has its own field length and offset, as where parcels were split over time.
    lengths = (rng.uniform(35, 110, n_strips) * detail).astype(np.float32)
    shifts = rng.uniform(0, 110 * detail, n_strips).astype(np.float32)
    along = y + shifts[strip]
    length = lengths[strip]
    index = (along / length).astype(np.int32)
    max_index = int(3 * size / (35 * detail)) + 4
    field_id = strip * max_index + index
    # Lanes between fields; left out where they would be a single pixel between fields a few pixels long.
    lane = 1.5 * detail
    if lane < 1:
        return field_id, np.zeros_like(field_id, bool)
    edge = (x - strip * width < lane) | (along - index * length < lane)
    return field_id, edge


def _town(
    rng: np.random.Generator, layout: _Layout, frayed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Block index of every pixel, the street grid, the town's extent, and each pixel's block's reach.

    The reach grows outwards from the centre, block by block (1 at the town's edge, give or take the
    fraying); the second date's town takes the blocks a little further out.
    """
    size, detail = layout.size, layout.detail
    cols, rows = _grid(size)
    col, row, half_w, half_h = layout.town
    dx, dy = cols - col, rows - row
    block = 24 * detail
    street = max(1.0, 2.0 * detail)
    bx = np.floor(dx / block).astype(np.int32)
    by = np.floor(dy / block).astype(np.int32)
    n = int(size / block) + 2
    block_id = (bx + n) * (2 * n) + (by + n)
    streets = (dx - bx * block < street) | (dy - by * block < street)
    # Blocks near the centre are all built; the outline frays block by block.
    radius = np.maximum(np.abs((bx + 0.5) * block / half_w), np.abs((by + 0.5) * block / half_h))
    jitter = rng.uniform(-0.25, 0.25, (2 * n) * (2 * n)).astype(np.float32)
    reach = radius + jitter[block_id]
    inside = reach + 0.1 * frayed < 1
    return block_id, streets, inside, reach


def _standardise_per_class(field: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Shifts and scales the field to zero mean and unit variance within each class."""
    flat_labels = labels.ravel()
    values = field.ravel().astype(np.float64)
    count = np.maximum(np.bincount(flat_labels, minlength=NUM_CLASSES), 1)
    mean = np.bincount(flat_labels, values, NUM_CLASSES) / count
    var = np.bincount(flat_labels, values**2, NUM_CLASSES) / count - mean**2
    std = np.sqrt(np.maximum(var, 1e-6))
    return ((field - mean[labels].astype(np.float32)) / std[labels].astype(np.float32)).astype(np.float32)


# --- The second date -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Change:
    """One known change between the dates: the pixels that went from class `source` to `target`."""

    name: str
    source: int
    target: int
    pixels: np.ndarray  # flat indices into the scene, ascending
    brightness: np.ndarray | None = None  # the pixels' new brightness offsets; None: the smooth field's


def _change(
    name: str, source: int, target: int, where: np.ndarray, brightness: np.ndarray | None = None
) -> _Change:
    return _Change(name, source, target, np.flatnonzero(where), brightness)


def _second_date(
    rng: np.random.Generator, layout: _Layout, cover: _Cover, lake_q: np.ndarray, nearest_lake: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], list[_Change]]:
    """The second date's labels and spectral offsets, and the changes that lead there from the first.

    A lake's level drops, a forest stand has a clearing, the town grows at its edge and a few fields
    change use. Every other pixel keeps its class and its offsets, so that there only the per-pixel
    noise and the acquisition's gain tell the dates apart. The changes never overlap.
    """
    changes = _lake_drop(rng, layout, cover.labels, lake_q, nearest_lake)
    changes += _clearing(rng, layout, cover.labels)
    changes += _town_growth(rng, layout, cover)
    taken = np.zeros(cover.labels.size, bool)
    for change in changes:
        taken[change.pixels] = True
    changes += _field_changes(rng, layout, cover, taken.reshape(cover.labels.shape))

    labels = cover.labels.copy()
    brightness, tint = (offset.copy() for offset in cover.offsets)
    smooth_brightness, smooth_tint = (field.reshape(-1) for field in cover.smooth)
    for change in changes:
        pixels = change.pixels
        labels.reshape(-1)[pixels] = change.target
        new = smooth_brightness[pixels] if change.brightness is None else change.brightness
        brightness.reshape(-1)[pixels] = new
        tint.reshape(-1)[pixels] = smooth_tint[pixels]
    return labels, (brightness, tint), changes


def _lake_drop(
    rng: np.random.Generator,
    layout: _Layout,
    labels: np.ndarray,
    lake_q: np.ndarray,
    nearest_lake: np.ndarray,
) -> list[_Change]:
    """A drier year: one lake's level is 1.5-2.5 m lower and lays bare a ring of its shallow shore.

    The upper part of the ring, next to the old shore, is flooded vegetation (the reeds follow the
    water down); the rest is bare mud.
    """
    drop = rng.uniform(1.5, 2.5)
    lake_water = (
        (labels == WATER) & (lake_q < 1) & (np.abs(_river_distance(layout)) >= layout.river_half_width)
    )
    present = np.flatnonzero(np.bincount(nearest_lake[lake_water], minlength=len(layout.lakes)))
    if not present.size:
        return []
    lake = int(rng.choice(present))
    depth = LAKE_DEPTH_SLOPE * (1 - lake_q)  # metres below the first date's level
    ring = lake_water & (nearest_lake == lake) & (depth < drop)
    reeds = ring & (depth < 0.4 * drop)
    changes = [
        _change("lake level drop", WATER, FLOODED, reeds),
        _change("lake level drop", WATER, BARE, ring & ~reeds),
    ]
    return [change for change in changes if change.pixels.size]


def _all_within(mask: np.ndarray, half: int) -> np.ndarray:
    """True where the (2 half + 1)-pixel square window centred on the pixel lies in the scene and in `mask`."""
    size = mask.shape[0]
    n = 2 * half + 1
    out = np.zeros_like(mask, bool)
    if n > size:
        return out
    # Integral image of the pixels outside the mask: a window sum of 0 means all inside.
    total = np.zeros((size + 1, size + 1), np.int32)
    np.cumsum(np.cumsum(~mask, axis=0, dtype=np.int32), axis=1, out=total[1:, 1:])
    outside = total[n:, n:] - total[:-n, n:] - total[n:, :-n] + total[:-n, :-n]
    out[half : size - half, half : size - half] = outside == 0
    return out


def _clearing(rng: np.random.Generator, layout: _Layout, labels: np.ndarray) -> list[_Change]:
    """A clear-cut: a compact, irregular patch of a few hectares well inside a forest stand, now bare
    soil or grass."""
    size = layout.size
    radius = rng.uniform(9, 13) * layout.detail  # pixels: 2.5-5 ha in the default scene
    # The outline: a circle bent by a few harmonics, so it is irregular but stays compact.
    amplitudes = rng.uniform(0, 0.1, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    target = BARE if rng.random() < 0.5 else GRASS
    reach = 1 + float(amplitudes.sum())  # the outline's largest radius, in radii
    trees = labels == TREES
    for _ in range(4):  # smaller clearings where no stand fits this one with a margin of forest around
        half = math.ceil(reach * radius) + max(2, round(0.5 * radius))
        centres = np.flatnonzero(_all_within(trees, half))
        if centres.size:
            break
        radius *= 0.75
    else:
        return []
    row, col = divmod(int(rng.choice(centres)), size)
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
    angle = np.arctan2(dy, dx)
    outline = radius * (
        1 + sum(a * np.cos(k * angle + p) for k, a, p in zip((2, 3, 4), amplitudes, phases, strict=True))
    )
    inside = np.hypot(dx, dy) <= outline
    pixels = ((row + dy) * size + (col + dx))[inside]
    return [_Change("forest clearing", TREES, target, np.sort(pixels))]


def _town_growth(rng: np.random.Generator, layout: _Layout, cover: _Cover) -> list[_Change]:
    """New blocks at the town's edge: on one side the town takes whole blocks a little further out,
    where they are grass and crops (woods, wetlands and water are left alone)."""
    size = layout.size
    col, row, half_w, half_h = layout.town
    grow = rng.uniform(0.12, 0.2)  # how much further the town reaches: a block or so
    new_offsets = rng.standard_normal(int(cover.block_id.max()) + 1).astype(np.float32)
    labels = cover.labels
    ring = ~cover.town & (cover.town_reach < 1 + grow) & ((labels == GRASS) | (labels == CROPS))
    if not ring.any():
        return []
    # Whole blocks: each block's direction from the town centre is that of its pixels' centroid.
    cols, rows = _grid(size)
    ids = cover.block_id.reshape(-1)
    count = np.maximum(np.bincount(ids), 1)
    block_col = np.bincount(ids, np.broadcast_to(cols, (size, size)).reshape(-1)) / count
    block_row = np.bincount(ids, np.broadcast_to(rows, (size, size)).reshape(-1)) / count
    block_angle = np.arctan2((block_row - row) / half_h, (block_col - col) / half_w)
    # The town grows where there is room: towards a random pixel of the open ring.
    towards = block_angle[ids[rng.choice(np.flatnonzero(ring))]]
    turn = np.angle(np.exp(1j * (block_angle - towards)))  # wrapped to [-pi, pi]
    grown = ring & (np.abs(turn[cover.block_id]) < np.pi / 6)
    changes = []
    for source in (GRASS, CROPS):
        where = grown & (labels == source)
        if where.any():
            pixels = np.flatnonzero(where)
            changes.append(_Change("town growth", source, BUILT, pixels, new_offsets[ids[pixels]]))
    return changes


def _field_changes(
    rng: np.random.Generator, layout: _Layout, cover: _Cover, taken: np.ndarray
) -> list[_Change]:
    """Fields that changed use: a few crop fields are grass now and as many grass fields are crops.

    Only whole fields change (every pixel between its lanes), and only fields that are whole on the
    first date: all farmed, all of one class, untouched by the other changes and not cut small by the
    scene edge. Each gets a new brightness of its own, as a new crop or sward would.
    """
    detail = layout.detail
    field_id, labels = cover.field_id, cover.labels
    interior = ~cover.field_edge
    n = int(field_id.max()) + 1
    total = np.bincount(field_id[interior], minlength=n)
    min_pixels = 0.5 * (70 * detail) * (35 * detail)  # half the smallest field of `_field_grid`
    eligible = {}
    for source in (CROPS, GRASS):
        whole = np.bincount(field_id[interior & cover.farmland & (labels == source) & ~taken], minlength=n)
        eligible[source] = np.flatnonzero((whole == total) & (total >= min_pixels))
    # About one field in forty changes each way, at least one.
    count = max(1, round((eligible[CROPS].size + eligible[GRASS].size) / 40))
    changes = []
    for source, target, name in ((CROPS, GRASS, "field to grass"), (GRASS, CROPS, "field to crops")):
        if not eligible[source].size:
            continue
        chosen = np.sort(rng.choice(eligible[source], min(count, eligible[source].size), replace=False))
        for field, brightness in zip(
            chosen, rng.standard_normal(chosen.size).astype(np.float32), strict=True
        ):
            where = (field_id == field) & interior
            changes.append(_change(name, source, target, where, np.full(int(total[field]), brightness)))
    return changes


def _acquisition_gain(rng: np.random.Generator) -> np.ndarray:
    """Per band, how another acquisition's calibration and atmosphere scale the spectra: the same
    2-5 % up or down in every band, give or take half a per cent per band."""
    common = rng.uniform(0.02, 0.05) * rng.choice((-1.0, 1.0))
    return (1 + common + 0.005 * rng.standard_normal(len(S2_BANDS))).astype(np.float32)


def _changes_json(changes: Sequence[_Change], size: int, seed: int, gain: np.ndarray) -> dict:
    """`changes.json`: every change with its classes, size and bounding box, and the totals per class pair."""

    def hectares(pixels: int) -> float:
        return round(pixels * PIXEL_SIZE**2 / 10_000, 2)

    events = []
    pairs: dict[tuple[int, int], int] = {}
    for change in changes:
        rows, cols = np.divmod(change.pixels, size)
        pixels = int(change.pixels.size)
        events.append(
            {
                "name": change.name,
                "from": CLASS_NAMES[change.source],
                "to": CLASS_NAMES[change.target],
                "pixels": pixels,
                "hectares": hectares(pixels),
                # west, south, east, north: the outer edges of the pixels, in the scene CRS (metres)
                "bbox": [
                    ORIGIN[0] + int(cols.min()) * PIXEL_SIZE,
                    ORIGIN[1] - (int(rows.max()) + 1) * PIXEL_SIZE,
                    ORIGIN[0] + (int(cols.max()) + 1) * PIXEL_SIZE,
                    ORIGIN[1] - int(rows.min()) * PIXEL_SIZE,
                ],
            }
        )
        pairs[change.source, change.target] = pairs.get((change.source, change.target), 0) + pixels
    changed = sum(pairs.values())
    return {
        "version": GENERATOR_VERSION,
        "size": size,
        "seed": seed,
        "crs": CRS,
        "pixel_size": PIXEL_SIZE,
        "before": {"image": IMAGE_FILE, "labels": LABELS_FILE},
        "after": {
            "image": IMAGE_AFTER_FILE,
            "labels": LABELS_AFTER_FILE,
            "gain": {band: round(float(g), 5) for band, g in zip(S2_BANDS, gain, strict=True)},
        },
        "label_scheme": PRESETS["dynamic-world"].to_json(),
        "events": events,
        "pairs": [
            {"from": CLASS_NAMES[a], "to": CLASS_NAMES[b], "pixels": n, "hectares": hectares(n)}
            for (a, b), n in sorted(pairs.items())
        ],
        "changed": {"pixels": changed, "hectares": hectares(changed)},
    }


# --- Spectra and files ----------------------------------------------------------------------------------


def _spectra_tables(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Per class and band: mean, and the weights of the brightness, tint and pixel-noise terms."""
    mean = np.array([SPECTRA_MEAN[name] for name in CLASS_NAMES], np.float32)
    std = np.array([SPECTRA_STD[name] for name in CLASS_NAMES], np.float32)
    bands = len(S2_BANDS)
    # Brightness moves all bands together; tint tilts the spectrum a class-specific way.
    brightness = 1 + 0.15 * rng.standard_normal((NUM_CLASSES, bands))
    tint = rng.standard_normal((NUM_CLASSES, bands))
    tint /= np.sqrt((tint**2).mean(axis=1, keepdims=True))
    k_brightness = (0.45 * std * brightness).astype(np.float32)
    k_tint = (0.25 * std * tint).astype(np.float32)
    k_noise = (0.2 * std).astype(np.float32)
    return mean, k_brightness, k_tint, k_noise


def _profile(size: int, count: int, dtype: str, predictor: int | None) -> dict:
    """Tiled 256×256, pixel-interleaved: one tile read serves all bands of a patch. The image is left
    uncompressed (predictor None): patch reads run ~3× faster than DEFLATE for 2.2× the bytes
    (benchmarks/results/scene_layout.json); the small label raster stays DEFLATE."""
    compression = {"compress": "deflate", "predictor": predictor, "zlevel": 1} if predictor else {}
    return {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": count,
        "dtype": dtype,
        "crs": CRS,
        "transform": from_origin(ORIGIN[0], ORIGIN[1], PIXEL_SIZE, PIXEL_SIZE),
        "tiled": True,
        "blockxsize": BLOCK_SIZE,
        "blockysize": BLOCK_SIZE,
        "interleave": "pixel",
        **compression,
        "num_threads": "all_cpus",
    }


def _write_image(
    path: pathlib.Path,
    labels: np.ndarray,
    elevation: np.ndarray,
    offsets: tuple[np.ndarray, np.ndarray],
    tables: tuple[np.ndarray, ...],
    rng: np.random.Generator,
    size: int,
    seed: int,
    gain: np.ndarray | None = None,
) -> None:
    """Writes the spectra and elevation strip by strip: one strip of tiles is in memory at a time.

    `tables` are `_spectra_tables`; `rng` draws the per-pixel noise; `gain`, per band, scales the
    spectra as another acquisition's calibration and atmosphere would (None: no scaling).
    """
    mean, k_brightness, k_tint, k_noise = tables
    brightness, tint = offsets
    bands = (*S2_BANDS, ELEVATION_BAND)
    with rasterio.open(path, "w", **_profile(size, len(bands), "float32", predictor=None)) as dst:
        for i, name in enumerate(bands, start=1):
            dst.set_band_description(i, name)
            if name == ELEVATION_BAND:
                dst.update_tags(i, units="m")
            else:
                dst.update_tags(i, units="TOA reflectance x10000")
        dst.update_tags(generator=f"terrabeam.demo_scene v{GENERATOR_VERSION}", seed=str(seed))
        for top in range(0, size, BLOCK_SIZE):
            rows = slice(top, min(top + BLOCK_SIZE, size))
            lab = labels[rows]
            noise = rng.standard_normal((len(S2_BANDS) + 1, *lab.shape), dtype=np.float32)
            common = np.float32(0.8) * noise[-1]
            strip = np.empty((len(bands), *lab.shape), np.float32)
            for b in range(len(S2_BANDS)):
                value = mean[:, b][lab] + k_brightness[:, b][lab] * brightness[rows]
                value += k_tint[:, b][lab] * tint[rows]
                value += k_noise[:, b][lab] * (common + np.float32(0.6) * noise[b])
                if gain is not None:
                    value *= gain[b]
                np.maximum(np.rint(value, out=value), 0, out=strip[b])
            strip[-1] = elevation[rows]
            dst.write(strip, window=Window(0, top, size, lab.shape[0]))


def _write_labels(path: pathlib.Path, labels: np.ndarray, size: int, seed: int) -> None:
    profile = _profile(size, 1, "uint8", predictor=2)
    with rasterio.open(path, "w", nodata=LABEL_NODATA, **profile) as dst:
        dst.set_band_description(1, "landcover")
        dst.update_tags(1, classes=classes_tag(CLASS_NAMES))
        dst.update_tags(generator=f"terrabeam.demo_scene v{GENERATOR_VERSION}", seed=str(seed))
        dst.write(labels, 1)
        colormap = {i: (*rgb, 255) for i, rgb in enumerate(palette_rgb())}
        colormap[LABEL_NODATA] = (0, 0, 0, 0)
        dst.write_colormap(1, colormap)


def _regions(layout: _Layout) -> list[tuple[str, list[tuple[float, float]]]]:
    """Named polygons in pixel (col, row) coordinates, inside the margin.

    A region that the margin would squeeze below `min_extent` is moved inwards instead, which only
    happens in scenes much smaller than the default.
    """
    size = layout.size
    margin = region_margin(size)
    lo, hi = float(margin), float(size - margin)
    min_extent = min(32.0, hi - lo)

    def squeeze(a: float, b: float) -> tuple[float, float]:
        a, b = min(max(a, lo), hi), min(max(b, lo), hi)
        if b - a < min_extent:
            mid = min(max((a + b) / 2, lo + min_extent / 2), hi - min_extent / 2)
            a, b = mid - min_extent / 2, mid + min_extent / 2
        return a, b

    def rect(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
        (x0, x1), (y0, y1) = squeeze(x0, x1), squeeze(y0, y1)
        # Densified edges, so that the lon/lat polygon follows the UTM rectangle closely.
        n = max(2, int(max(x1 - x0, y1 - y0) / 64) + 1)
        xs, ys = np.linspace(x0, x1, n).tolist(), np.linspace(y0, y1, n).tolist()
        return (
            [(x, y0) for x in xs]
            + [(x1, y) for y in ys[1:]]
            + [(x, y1) for x in xs[-2::-1]]
            + [(x0, y) for y in ys[-2::-1]]
        )

    col, row, half_w, half_h = layout.town
    regions = [
        ("mountains", rect(0.5 * size, 0, size, float(layout.front.min()) - 0.05 * size)),
        ("town", rect(col - 1.3 * half_w, row - 1.3 * half_h, col + 1.3 * half_w, row + 1.3 * half_h)),
        ("lowlands", rect(0, float(layout.front.max()) + 0.06 * size, 0.38 * size, size)),
    ]
    # The valley: a band following the river from west to east.
    columns = np.unique(np.append(np.arange(lo, hi, max(1, size // 32)), hi))
    band = min(0.05 * size, (hi - lo) / 2)
    centre = np.clip(layout.river[np.minimum(columns.astype(int), size - 1)], lo + band, hi - band)
    north = list(zip(columns.tolist(), (centre - band).tolist(), strict=True))
    south = list(zip(columns.tolist(), (centre + band).tolist(), strict=True))
    regions.append(("river", north + south[::-1]))
    return regions


def region_margin(size: int) -> int:
    """How far (pixels) the regions stay inside the edge: `REGION_MARGIN_PX`, less in tiny scenes."""
    return min(REGION_MARGIN_PX, size // 2 - 16)


def _write_regions(path: pathlib.Path, layout: _Layout) -> None:
    features = []
    for name, ring in _regions(layout):
        # Pixel rings run clockwise on the map; GeoJSON (RFC 7946) wants exterior rings anticlockwise.
        utm = [(ORIGIN[0] + c * PIXEL_SIZE, ORIGIN[1] - r * PIXEL_SIZE) for c, r in reversed(ring)]
        utm.append(utm[0])
        geometry = transform_geom(CRS, "EPSG:4326", {"type": "Polygon", "coordinates": [utm]})
        coordinates = [
            [[round(lon, 8), round(lat, 8)] for lon, lat in part] for part in geometry["coordinates"]
        ]
        features.append(
            {
                "type": "Feature",
                "properties": {"name": name},
                "geometry": {"type": "Polygon", "coordinates": coordinates},
            }
        )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, indent=1) + "\n")


EPILOG = """\
files, in <cache-dir>/demo-scene-<size>-seed<seed>/:
  image.tif (13 Sentinel-2 L1C bands and elevation), labels.tif (its 9 Dynamic World classes) and
  regions.geojson: the first date, which extraction and training use. image_after.tif and
  labels_after.tif: a second date of the same place with known changes (a forest clearing, a lake
  lower in a drier year, new town blocks, fields that changed use). changes.json: what changed,
  where and how much.

It prints the files' paths as JSON."""


def main(argv: Sequence[str] | None = None) -> int:
    quiet_start(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog=prog("pipelines.demo.scene"),
        description=fill(__doc__.split("\n\n")[0]),
        epilog=fill(EPILOG),
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--cache-dir", help="cache folder (default: $TERRABEAM_CACHE or ~/.cache/terrabeam)")
    parser.add_argument("--size", type=int, default=2048, help="width and height in pixels (default: 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        scene = ensure_demo_scene(args.cache_dir, size=args.size, seed=args.seed)
    except ValueError as e:
        parser.error(str(e))
    print(json.dumps(asdict(scene), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
