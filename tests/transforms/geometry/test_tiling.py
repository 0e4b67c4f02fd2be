"""Tile plans: cores partition the output exactly, windows carry the border, trimming undoes it."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.geometry.grid import GridSpec
from transforms.geometry.tiling import (
    RegionMask,
    TilePlan,
    TilingError,
    TilingSpec,
    plan_for_bounds,
    tiles_of_row,
    trim,
)

LATTICE = GridSpec("EPSG:32632", 10.0, 600_000.0, 5_120_000.0)


@pytest.mark.parametrize(
    ("tile_size", "overlap", "message"),
    [
        (256, 63, "must be even"),
        (64, 64, "must be smaller than --tile-size"),
        (64, 80, "must be smaller than --tile-size"),
        (0, 0, "--tile-size must be a positive"),
        (64, -2, "--overlap must be a non-negative"),
    ],
)
def test_bad_tiling_is_refused_with_a_clear_message(tile_size, overlap, message):
    with pytest.raises(TilingError, match=message):
        TilingSpec(tile_size, overlap)


def test_earth_engine_overlap_semantics():
    spec = TilingSpec(256, 64)  # inputOverlapSize [64, 64]: a 32-pixel border on each side
    assert (spec.border, spec.step) == (32, 192)


@pytest.mark.parametrize(
    ("width", "height", "tile_size", "overlap"), [(200, 150, 64, 8), (192, 192, 64, 0), (7, 300, 32, 16)]
)
def test_cores_cover_every_output_pixel_exactly_once(width, height, tile_size, overlap):
    spec = TilingSpec(tile_size, overlap)
    plan = TilePlan(LATTICE, 10, 20, width, height, spec)
    hits = np.zeros((height, width), np.int32)
    for tile in plan:
        hits[tile.row_off : tile.row_off + tile.height, tile.col_off : tile.col_off + tile.width] += 1
        # The input window is the core grown by the border, always tile_size square.
        assert (tile.grid.width, tile.grid.height) == (tile_size, tile_size)
        a, _, c, _, e, f = tile.grid.transform
        ca, _, cc, _, ce, cf = tile.core.transform
        assert (a, e) == (ca, ce) == (10.0, -10.0)
        assert cc - c == pytest.approx(spec.border * 10.0)
        assert f - cf == pytest.approx(spec.border * 10.0)
        assert (tile.core.width, tile.core.height) == (tile.width, tile.height)
    assert (hits == 1).all()
    assert len(plan) == plan.rows * plan.cols == len(list(plan))


def test_output_grid_is_the_region_on_the_lattice():
    plan = TilePlan(LATTICE, 10, 20, 200, 150, TilingSpec(64, 8))
    assert plan.output.transform == (10.0, 0.0, 600_100.0, 0.0, -10.0, 5_119_800.0)
    assert (plan.output.width, plan.output.height) == (200, 150)
    first = plan.tile(0, 0)
    assert first.core.transform == plan.output.transform
    assert first.grid.transform[2] == 600_100.0 - 4 * 10.0


def test_bounds_on_lattice_lines_give_exactly_that_grid_and_others_grow_outwards():
    spec = TilingSpec(64, 8)
    exact = plan_for_bounds(LATTICE, (600_000.0, 5_118_000.0, 602_000.0 + 1e-9, 5_120_000.0), spec)
    assert (exact.col0, exact.row0, exact.width, exact.height) == (0, 0, 200, 200)
    inside = plan_for_bounds(LATTICE, (600_005.0, 5_118_005.0, 600_095.0, 5_119_995.0), spec)
    assert (inside.col0, inside.row0, inside.width, inside.height) == (0, 0, 10, 200)
    with pytest.raises(TilingError, match="empty"):
        plan_for_bounds(LATTICE, (1.0, 1.0, 1.0, 2.0), spec)


def test_trim_keeps_the_core_of_edge_tiles_and_broadcasts_patch_classifications():
    spec = TilingSpec(64, 8)
    plan = TilePlan(LATTICE, 0, 0, 100, 70, spec)
    edge = plan.tile(1, 1)
    assert (edge.width, edge.height) == (44, 14)
    prediction = np.arange(64 * 64, dtype=np.float32).reshape(64, 64, 1)
    core = trim(prediction, edge, spec)
    assert core.shape == (14, 44, 1)
    assert core[0, 0, 0] == prediction[4, 4, 0]
    patch = trim(np.array([[[0.2, 0.8]]], np.float32), plan.tile(0, 0), spec)
    assert patch.shape == (56, 56, 2) and (patch[..., 1] == 0.8).all()
    with pytest.raises(ValueError, match="must keep the input size"):
        trim(np.zeros((32, 32, 2)), edge, spec)


def test_region_mask_and_tiles_outside_the_region_are_skipped():
    plan = TilePlan(LATTICE, 0, 0, 100, 100, TilingSpec(40, 8))  # 4×4 tiles of 32-pixel cores
    x0, y0 = 600_000.0, 5_120_000.0
    # A triangle over the top-left corner: 30 pixels along each edge.
    triangle = {
        "type": "Polygon",
        "coordinates": [[[x0, y0], [x0 + 300.0, y0], [x0, y0 - 300.0], [x0, y0]]],
    }
    region = RegionMask(triangle)
    kept = [t.id for row in range(plan.rows) for t in tiles_of_row(row, plan, region)]
    assert kept == ["r00000_c00000"]
    outside = region(plan.tile(0, 0))
    assert outside.shape == (32, 32)
    assert not outside[0, 0] and outside[31, 31] and outside[0, 31]
    assert len(list(tiles_of_row(0, plan))) == 4
