"""The train/validation split: deterministic, and leak-free by default (no validation pixel in a
training patch)."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.extract import SplitConfig
from transforms.geometry.sampling import Point
from transforms.geometry.split import (
    GUARD,
    RULE_BLOCKS,
    RULE_PER_POINT,
    TRAIN,
    VALIDATION,
    auto_block_size,
    block_split_of,
    fold_count,
    guarded_block_split_of,
    overlap_fraction,
    split_of,
)

PATCH = 32  # pixels
SCALE = 10.0  # CRS units per pixel


def test_split_is_deterministic_and_near_the_fraction():
    ids = [f"r/{i}/{i * 7 % 13}" for i in range(5000)]
    first = [split_of(i, 0.1) for i in ids]
    assert first == [split_of(i, 0.1) for i in ids]
    share = first.count(VALIDATION) / len(ids)
    assert 0.085 < share < 0.115
    assert all(s == TRAIN for s in (split_of(i, 0.0) for i in ids))


def test_block_split_keeps_neighbours_together():
    sides = {
        block_split_of(1300 + dx, 2600 + dy, 1280, 0.5)  # every point in block (1, 2)
        for dx in range(0, 1200, 100)
        for dy in range(0, 1200, 100)
    }
    assert len(sides) == 1
    blocks = [block_split_of(x * 1280 + 5, 5, 1280, 0.3) for x in range(2000)]
    assert 0.25 < blocks.count(VALIDATION) / 2000 < 0.35


def dense_points(n: int = 4000, side: float = 10_000.0, seed: int = 0) -> list[Point]:
    """Points much closer together than a patch extent, as stratified sampling makes them."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, side, (n, 2))
    return [Point(f"r/{i}", "r", x, y, "EPSG:32632", 0.0, 0.0, 0, 0) for i, (x, y) in enumerate(xy)]


def centres_by_side(config: SplitConfig, points: list[Point]) -> dict[str, list[tuple[float, float]]]:
    sides: dict[str, list[tuple[float, float]]] = {TRAIN: [], VALIDATION: [], GUARD: []}
    for p in points:
        sides[config.split_of(p)].append((p.x, p.y))
    return sides


def test_overlap_fraction_counts_covered_validation_pixels():
    assert overlap_fraction([(0.0, 0.0)], [(0.0, 0.0)], PATCH, SCALE) == 1.0
    assert overlap_fraction([(PATCH * SCALE / 2, 0.0)], [(0.0, 0.0)], PATCH, SCALE) == 0.5
    assert overlap_fraction([(PATCH * SCALE, 0.0)], [(0.0, 0.0)], PATCH, SCALE) == 0.0
    # Two training patches covering the same quarter count once.
    quarter = (PATCH * SCALE / 2, PATCH * SCALE / 2)
    assert overlap_fraction([quarter, quarter], [(0.0, 0.0)], PATCH, SCALE) == 0.25
    assert overlap_fraction([(0.0, 0.0)], [], PATCH, SCALE) == 0.0


def test_per_point_split_leaks_and_the_default_split_does_not():
    points = dense_points()
    leaky = centres_by_side(SplitConfig.for_patches(0.1, 0, PATCH, SCALE), points)
    default = centres_by_side(SplitConfig.for_patches(0.1, None, PATCH, SCALE), points)
    assert overlap_fraction(leaky[TRAIN], leaky[VALIDATION], PATCH, SCALE) > 0.9
    assert default[VALIDATION], "the default split must still give a validation set"
    assert overlap_fraction(default[TRAIN], default[VALIDATION], PATCH, SCALE) == 0.0
    # The guard band costs about 1.25 x the validation blocks' points at 4 patch extents (~13 % at 0.1).
    guarded = len(default[GUARD]) / len(points)
    assert 0.03 < guarded < 0.2, guarded


def test_guarded_split_is_deterministic_and_refuses_blocks_smaller_than_a_patch():
    config = SplitConfig.for_patches(0.3, None, PATCH, SCALE)
    points = dense_points(500)
    assert [config.split_of(p) for p in points] == [config.split_of(p) for p in points]
    with pytest.raises(ValueError, match="smaller than a patch"):
        guarded_block_split_of(0.0, 0.0, 100.0, 80.0, 0.1)
    with pytest.raises(ValueError, match="smaller than a patch"):
        SplitConfig.for_patches(0.1, 200.0, PATCH, SCALE)


def test_split_rules_are_named_for_the_manifest():
    default = SplitConfig.for_patches(0.1, None, PATCH, SCALE)
    assert default.rule == RULE_BLOCKS
    assert default.describe() == {
        "rule": RULE_BLOCKS,
        "validation_fraction": 0.1,
        "block_size": 4 * PATCH * SCALE,
        "guard_half_extent": (PATCH / 2 + 1) * SCALE,
        "fold": 0,
        "folds": 10,
    }
    assert SplitConfig.for_patches(0.1, 0, PATCH, SCALE).rule == RULE_PER_POINT
    assert SplitConfig.for_patches(0.25, None, PATCH, SCALE, fold=3).describe()["folds"] == 4


def test_folds_hold_out_disjoint_shares_that_cover_every_block_and_point():
    blocks = [(bx + 0.5, by + 0.5) for bx in range(40) for by in range(40)]
    held = [{b for b in blocks if block_split_of(*b, 1.0, 0.1, fold) == VALIDATION} for fold in range(10)]
    assert all(130 <= len(h) <= 190 for h in held), [len(h) for h in held]  # each about a tenth
    assert sum(len(h) for h in held) == len(blocks) and set().union(*held) == set(blocks)
    assert held[0] == {b for b in blocks if block_split_of(*b, 1.0, 0.1) == VALIDATION}  # fold 0: no folds
    ids = [f"r/{i}" for i in range(3000)]
    by_point = [{i for i in ids if split_of(i, 0.25, fold) == VALIDATION} for fold in range(fold_count(0.25))]
    assert sum(len(p) for p in by_point) == len(ids) and set().union(*by_point) == set(ids)
    assert fold_count(0.1) == 10 and fold_count(0.3) == 4 and fold_count(0.0) == 1
    folded, plain = (SplitConfig.for_patches(0.1, None, PATCH, SCALE, fold=f) for f in (4, 0))
    points = dense_points(2000)
    sides = [folded.split_of(p) for p in points]
    assert set(sides) == {TRAIN, VALIDATION, GUARD} and sides != [plain.split_of(p) for p in points]
    with pytest.raises(ValueError, match="split fold must be 0 to 9 .* got 10"):
        SplitConfig.for_patches(0.1, None, PATCH, SCALE, fold=10)


def test_auto_blocks_are_four_patch_extents_unless_the_regions_are_small():
    extent = PATCH * SCALE
    assert auto_block_size(None, extent) == 4 * extent
    assert auto_block_size(64 * (4 * extent) ** 2 * 10, extent) == 4 * extent
    assert auto_block_size(64 * (3 * extent) ** 2, extent) == pytest.approx(3 * extent)
    assert auto_block_size(10 * extent**2, extent) == 2 * extent


def test_validation_blocks_are_spread_evenly():
    """Every window of 10 x 10 blocks holds close to the fraction of validation blocks (coin flips would
    leave some windows without any)."""
    for wx in range(0, 100, 10):
        for wy in range(0, 100, 10):
            sides = [
                block_split_of(bx + 0.5, by + 0.5, 1.0, 0.1)
                for bx in range(wx, wx + 10)
                for by in range(wy, wy + 10)
            ]
            assert 6 <= sides.count(VALIDATION) <= 14
