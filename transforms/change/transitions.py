"""Transition codes between two class maps of the same label scheme.

Code 0 is "unchanged" whatever the class; each ordered pair of different classes (from, to) has its own
code, in a fixed order (from 0 → to 1, from 0 → to 2, ..., from 1 → to 0, ...) so the same pair has the
same code in every run and every map; with a confidence floor, code n·(n−1)+1 is "uncertain" (the maps
differ, but the probability that the place changed is below the floor). 255 is no data (either map has
none). The codes form a `LabelScheme`, so a transitions map is a class map like any other: the viewer
draws it, `terrabeam assess` samples and scores it.

The change probability of a pixel is P(from ≠ to) = 1 − Σ_k p_before(k) · p_after(k): the chance that
two independent draws from the two dates' class probabilities disagree.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from transforms.contracts.label_scheme import MAX_CLASSES, LabelClass, LabelScheme
from transforms.contracts.schema import CLASS_NODATA

CHANGE_NODATA = CLASS_NODATA  # 255, as in every class map
UNCHANGED = "unchanged"
UNCERTAIN = "uncertain"
NO_CHANGE, CHANGE = "no_change", "change"
# Unchanged pixels are drawn pale, uncertain ones dark: the transitions' own colours (the colour of the
# class they turn into) stand out between them.
UNCHANGED_COLOR = "#e8e8e8"
UNCERTAIN_COLOR = "#5a5a5a"
CHANGE_COLOR = "#d7301f"


class ChangeError(ValueError):
    """Two maps that cannot be compared, or a bad change option; the message says what to change."""


def pair_name(before: str, after: str) -> str:
    """The class name of a transition: 'trees_to_crops'."""
    return f"{before}_to_{after}"


@dataclasses.dataclass(frozen=True)
class TransitionScheme:
    """The transitions between the classes of `classes` (the two maps' scheme)."""

    classes: LabelScheme
    with_uncertain: bool = False

    def __post_init__(self) -> None:
        if self.num_codes > MAX_CLASSES:
            n = self.classes.num_classes
            raise ChangeError(
                f"{n} classes make {n * (n - 1)} transitions, more than the {MAX_CLASSES} codes a uint8 "
                "transitions map holds; group the classes into at most 16 (a label scheme with fewer "
                "classes) before comparing."
            )

    @property
    def num_pairs(self) -> int:
        n = self.classes.num_classes
        return n * (n - 1)

    @property
    def num_codes(self) -> int:
        return 1 + self.num_pairs + (1 if self.with_uncertain else 0)

    @property
    def uncertain_code(self) -> int | None:
        return self.num_pairs + 1 if self.with_uncertain else None

    def code(self, before: int, after: int) -> int:
        """The code of the pair (before, after) of class indices; 0 when they are equal."""
        if before == after:
            return 0
        n = self.classes.num_classes
        return 1 + before * (n - 1) + (after if after < before else after - 1)

    def pair(self, code: int) -> tuple[int, int] | None:
        """(before, after) class indices of a pair code; None for unchanged, uncertain and no data."""
        if not 1 <= code <= self.num_pairs:
            return None
        n = self.classes.num_classes
        before, rest = divmod(code - 1, n - 1)
        return before, rest if rest < before else rest + 1

    def code_table(self) -> np.ndarray:
        """(n, n) code of every (before, after) pair, the diagonal 0."""
        n = self.classes.num_classes
        return np.array([[self.code(i, j) for j in range(n)] for i in range(n)], dtype=np.uint8)

    def label_scheme(self) -> LabelScheme:
        """The transitions as classes: 'unchanged', each pair ('trees_to_crops', coloured as the class it
        turns into), and 'uncertain' with a confidence floor."""
        names, colors = self.classes.names, self.classes.colors
        classes = [LabelClass(UNCHANGED, (0,), UNCHANGED_COLOR)]
        for code in range(1, self.num_pairs + 1):
            before, after = self.pair(code)
            classes.append(LabelClass(pair_name(names[before], names[after]), (code,), colors[after]))
        if self.with_uncertain:
            classes.append(LabelClass(UNCERTAIN, (self.uncertain_code,), UNCERTAIN_COLOR))
        return LabelScheme(f"{self.classes.name}-transitions", tuple(classes))

    def changed_scheme(self) -> LabelScheme:
        """The binary change map's classes (and 'uncertain' with a confidence floor)."""
        classes = [LabelClass(NO_CHANGE, (0,), UNCHANGED_COLOR), LabelClass(CHANGE, (1,), CHANGE_COLOR)]
        if self.with_uncertain:
            classes.append(LabelClass(UNCERTAIN, (2,), UNCERTAIN_COLOR))
        return LabelScheme(f"{self.classes.name}-change", tuple(classes))


def transition_codes(
    scheme: TransitionScheme,
    before: np.ndarray,
    after: np.ndarray,
    probability: np.ndarray | None = None,
    min_confidence: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(transition codes, binary change map) of two class-index maps of the same shape.

    Pixels where either map is no data (≥ the number of classes) are `CHANGE_NODATA` in both. With
    `probability` (the change probability, NaN where unknown) and a floor above 0, a pixel whose classes
    differ but whose change probability is below the floor is 'uncertain' (code `uncertain_code`, 2 in
    the binary map).
    """
    if before.shape != after.shape:
        raise ChangeError(f"the two maps' windows differ in shape: {before.shape} and {after.shape}.")
    n = scheme.classes.num_classes
    valid = (before < n) & (after < n)
    table = scheme.code_table()
    codes = np.full(before.shape, CHANGE_NODATA, np.uint8)
    codes[valid] = table[before[valid], after[valid]]
    changed = np.full(before.shape, CHANGE_NODATA, np.uint8)
    changed[valid] = (codes[valid] != 0).astype(np.uint8)
    if scheme.with_uncertain and probability is not None and min_confidence > 0:
        # NaN probability (no probabilities there) fails the floor: a change nobody can vouch for.
        unsure = valid & (codes != 0) & ~(probability >= min_confidence)
        codes[unsure] = scheme.uncertain_code
        changed[unsure] = 2
    return codes, changed


def change_probability(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """P(from ≠ to) per pixel from two (h, w, classes) probability stacks (NaN where either has none)."""
    if before.shape != after.shape:
        raise ChangeError(
            f"the two dates' probabilities have different shapes {before.shape} and {after.shape}: were "
            "they predicted with the same model?"
        )
    same = np.einsum("hwk,hwk->hw", before.astype(np.float32), after.astype(np.float32))
    return np.clip(1.0 - same, 0.0, 1.0).astype(np.float32)
