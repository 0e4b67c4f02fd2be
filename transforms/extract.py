"""Extraction transforms: points -> patches -> records, with retries and a dead-letter output.

`FetchPatches` fuses fetch, encode and split for each point, so the ~1 MB pixel arrays never cross a
Beam stage boundary; only the encoded record bytes move on to the writer.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import pvalue

from transforms.contracts.label_scheme import UNKNOWN_IGNORE, UNKNOWN_INDEX, LabelScheme, describe_histogram
from transforms.contracts.schema import (
    LABEL_NODATA,
    META_ID,
    META_LAT,
    META_LON,
    META_PADDED,
    META_REGION,
    PatchSchema,
)
from transforms.geometry.grid import GridSpec
from transforms.geometry.sampling import Point, Region, sample_region
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
    split_of,
)
from transforms.io.rasters import PixelSource, Resampling, SourceError, TransientSourceError
from transforms.io.retry import RetryConfig
from transforms.runtime import progress
from transforms.runtime.outcome import letter_fields

ERRORS = "errors"
STATS = "stats"
# (split, x, y) of every written patch in the patch grid's CRS: what the split's overlap is measured on.
CENTRES = "centres"
_NO_LABEL = np.zeros((0,), dtype=np.uint8)


class PatchError(Exception):
    """A point whose patch cannot be made (off the raster edge, no labelled pixel): left out by policy,
    not a failure of the job."""

    skipped = True

    @property
    def reason(self) -> str:
        # The message names the point's coordinates; the reason is the same for every such point.
        if "raster edge" in str(self):
            return "the patch runs off the raster edge (keep such points with --pad-edges)"
        return str(self)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """How points are divided (transforms/geometry/split.py has the rules).

    `block_size` 0 hashes each point on its own; otherwise points are split by square blocks of that
    size (CRS units of the patch grid), and with `half_extent` > 0 a point whose patch would reach a
    block of the other side is left out (GUARD), so no validation pixel lies in a training patch.
    """

    validation_fraction: float = 0.1
    block_size: float = 0.0
    half_extent: float = 0.0
    fold: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation fraction must be in [0, 1), got {self.validation_fraction}.")
        folds = fold_count(self.validation_fraction)
        if not 0 <= self.fold < folds:
            raise ValueError(
                f"split fold must be 0 to {folds - 1} at a validation fraction of "
                f"{self.validation_fraction:g} ({folds} folds), got {self.fold}."
            )
        if self.block_size < 0:
            raise ValueError(f"split block size must be >= 0, got {self.block_size}.")
        if self.half_extent and self.block_size and self.block_size < 2 * self.half_extent:
            raise ValueError(
                f"split block size {self.block_size:g} is smaller than a patch ({2 * self.half_extent:g} "
                "CRS units): every patch would cross blocks. Use at least one patch extent, or 0 for a "
                "per-point split."
            )

    @classmethod
    def for_patches(
        cls,
        validation_fraction: float,
        block_size: float | None,
        patch_size: int,
        scale: float,
        sampled_area: float | None = None,
        fold: int = 0,
    ) -> SplitConfig:
        """The leak-free default for patches of `patch_size` pixels of `scale` CRS units: blocks of
        `auto_block_size` (`block_size` None; `sampled_area` in CRS units² sizes them) or of
        `block_size`, with a guard band; `block_size` 0 is the per-point split."""
        if block_size == 0:
            return cls(validation_fraction, fold=fold)
        # The patch's centre pixel holds the point, so its edges are within half a patch plus one pixel.
        half_extent = (patch_size / 2 + 1) * scale
        if block_size is None:
            block_size = auto_block_size(sampled_area, patch_size * scale)
        return cls(validation_fraction, block_size, half_extent, fold)

    @property
    def rule(self) -> str:
        if not self.block_size:
            return RULE_PER_POINT
        return RULE_BLOCKS if self.half_extent else "spatial-blocks"

    def describe(self) -> dict[str, Any]:
        """The rule as the manifest records it."""
        return {
            "rule": self.rule,
            "validation_fraction": self.validation_fraction,
            "block_size": self.block_size,
            "guard_half_extent": self.half_extent,
            "fold": self.fold,
            "folds": fold_count(self.validation_fraction),
        }

    def split_of(self, point: Point, x: float | None = None, y: float | None = None) -> str:
        """TRAIN, VALIDATION or GUARD; (x, y) is the point in the patch grid's CRS (default: its own)."""
        x = point.x if x is None else x
        y = point.y if y is None else y
        fraction, fold = self.validation_fraction, self.fold
        if not self.block_size:
            return split_of(point.id, fraction, fold)
        if not self.half_extent:
            return block_split_of(x, y, self.block_size, fraction, fold)
        return guarded_block_split_of(x, y, self.block_size, self.half_extent, fraction, fold)


def sample_points(
    region: Region,
    labels_path: str,
    points_per_class: int,
    seed: int,
    classes: Sequence[int] | None = None,
    strata_band: tuple[str, int] | None = None,
    strata_edges: Sequence[float] = (),
    scheme: LabelScheme | None = None,
    label_band: int = 1,
) -> list[Point]:
    """Beam-friendly wrapper of `sample_region` that counts points per region."""
    points = sample_region(
        region,
        labels_path,
        points_per_class,
        seed,
        classes=classes,
        strata_band=strata_band,
        strata_edges=strata_edges,
        scheme=scheme,
        label_band=label_band,
    )
    progress.counter("extract", "points_sampled").inc(len(points))
    return points


def dead_letter(point: Point, stage: str, error: BaseException) -> str:
    """A JSON line that keeps everything needed to retry the point later."""
    return json.dumps(
        {
            "stage": stage,
            "error_type": type(error).__name__,
            "error": str(error),
            "point": dataclasses.asdict(point),
            **letter_fields(error),
        },
        sort_keys=True,
    )


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """How label pixels become class indices.

    `remapped_by_source`: the label source applies the scheme itself (Earth Engine remaps on the
    server), so its pixels are class indices already. `unknown`: what a value no class lists becomes
    ("error" dead-letters the patch, "ignore" makes it no label).
    """

    scheme: LabelScheme
    unknown: str = "error"
    remapped_by_source: bool = False
    # How raw label values are read: float64 with NaN holds any label type; an integer raster reads
    # faster as int32 filled with its own nodata (no masking) and remaps through a lookup table.
    raw_dtype: str = "float64"
    raw_fill: float = float("nan")


def raw_label_reading(dtype: str, nodata: float | None) -> dict[str, Any]:
    """`LabelConfig` fields for reading a label band of `dtype` with `nodata`.

    Integer bands read fastest in their own type filled with their own nodata (no masking, a table
    lookup to remap); without a nodata value they read one size up, filled with a value the band
    cannot hold. Anything else reads as float64 filled with NaN.
    """
    kind = np.dtype(dtype)
    if kind.kind in "iu" and kind.itemsize <= 2:
        if (
            nodata is not None
            and float(nodata).is_integer()
            and np.iinfo(kind).min <= nodata <= np.iinfo(kind).max
        ):
            return {"raw_dtype": kind.name, "raw_fill": float(nodata)}
        wider = np.int16 if kind.itemsize == 1 else np.int32
        return {"raw_dtype": np.dtype(wider).name, "raw_fill": float(np.iinfo(wider).min)}
    return {"raw_dtype": "float64", "raw_fill": float("nan")}


def read_label_patch(
    labels: PixelSource, band: str, grid, config: LabelConfig, retry: RetryConfig
) -> tuple[np.ndarray, bool]:
    """The label patch as uint8 class indices (LABEL_NODATA where there is no label) and its padded flag."""
    raw = None
    if config.remapped_by_source:
        result = retry.call(
            labels.read, grid, [band], fill=LABEL_NODATA, dtype="uint8", resampling=Resampling.nearest
        )
        classes = result.pixels[..., 0]
    else:
        result = retry.call(
            labels.read,
            grid,
            [band],
            fill=config.raw_fill,
            dtype=config.raw_dtype,
            resampling=Resampling.nearest,
        )
        raw = result.pixels[..., 0]
        classes = config.scheme.remap(raw, nodata=config.raw_fill)
    unknown = classes == UNKNOWN_INDEX
    if unknown.any():
        if config.unknown != UNKNOWN_IGNORE:
            detail = ""
            if raw is not None:
                values, counts = np.unique(raw[unknown], return_counts=True)
                detail = f" ({describe_histogram(dict(zip(values.tolist(), counts.tolist())))})"
            raise PatchError(
                f"the label patch holds {int(unknown.sum())} pixels of values the label scheme "
                f"{config.scheme.name!r} does not list{detail}; add them to the classes file or pass "
                "--unknown-labels ignore"
            )
        classes = np.where(unknown, LABEL_NODATA, classes).astype(np.uint8)
    return classes, result.padded


def make_record(
    point: Point,
    inputs: PixelSource,
    labels: PixelSource,
    label_band: str,
    schema: PatchSchema,
    grid: GridSpec,
    pad_edges: bool,
    retry: RetryConfig,
    label_config: LabelConfig,
) -> tuple[bytes, np.ndarray]:
    """Fetch and encode one patch; returns the record and its label patch (for statistics)."""
    x, y = (point.x, point.y) if point.crs == grid.crs else _reproject_point(point, grid.crs)
    patch_grid = grid.patch_around(x, y, schema.patch_size)
    image = retry.call(inputs.read, patch_grid, schema.bands)
    label_patch, label_padded = read_label_patch(labels, label_band, patch_grid, label_config, retry)
    padded = image.padded or label_padded
    if padded and not pad_edges:
        raise PatchError(
            f"the {schema.patch_size}x{schema.patch_size} patch around ({x:.1f}, {y:.1f}) runs off the "
            "raster edge; keep such points padded with --pad-edges, or move the region inwards"
        )
    if not (label_patch != LABEL_NODATA).any():
        raise PatchError("the patch holds no labelled pixel")
    metadata = {
        META_ID: point.id,
        META_LON: point.lon,
        META_LAT: point.lat,
        META_REGION: point.region,
        META_PADDED: int(padded),
    }
    return schema.encode(image.pixels, label_patch, metadata), label_patch


def _reproject_point(point: Point, crs: str) -> tuple[float, float]:
    from rasterio.warp import transform

    xs, ys = transform(point.crs, crs, [point.x], [point.y])
    return xs[0], ys[0]


class FetchPatches(beam.DoFn):
    """Point -> encoded record on the TRAIN or VALIDATION output; failures to ERRORS; counts to STATS."""

    def __init__(
        self,
        inputs: PixelSource,
        labels: PixelSource,
        label_band: str,
        schema: PatchSchema,
        grid: GridSpec,
        split: SplitConfig,
        label_config: LabelConfig,
        pad_edges: bool = False,
        retry: RetryConfig | None = None,
    ) -> None:
        self.inputs = inputs
        self.labels = labels
        self.label_band = label_band
        self.schema = schema
        self.grid = grid
        self.split = split
        self.label_config = label_config
        self.num_classes = label_config.scheme.num_classes
        self.pad_edges = pad_edges
        self.retry = retry or RetryConfig()
        self.failed = progress.counter("extract", "patches_failed")
        self.written = progress.counter("extract", "patches_encoded")
        self.guarded = progress.counter("extract", "points_in_guard_band")

    def setup(self) -> None:
        random.seed()  # jitter must differ between workers
        for source in (self.inputs, self.labels):
            # Remote sources (Earth Engine) open their session once per worker here, not per element.
            if hasattr(source, "setup"):
                source.setup()

    def process(self, point: Point) -> Iterator[Any]:
        x, y = (point.x, point.y) if point.crs == self.grid.crs else _reproject_point(point, self.grid.crs)
        split = self.split.split_of(point, x, y)
        if split == GUARD:
            # Its patch would overlap the other side's: not fetched, counted (by class) in the stats.
            self.guarded.inc()
            yield pvalue.TaggedOutput(STATS, (GUARD, patch_stats(point.label, _NO_LABEL, self.num_classes)))
            return
        try:
            record, label = make_record(
                point,
                self.inputs,
                self.labels,
                self.label_band,
                self.schema,
                self.grid,
                self.pad_edges,
                self.retry,
                self.label_config,
            )
        except (SourceError, TransientSourceError, PatchError, ValueError) as e:
            self.failed.inc()
            yield pvalue.TaggedOutput(ERRORS, dead_letter(point, "fetch", e))
            return
        self.written.inc()
        yield pvalue.TaggedOutput(split, record)
        yield pvalue.TaggedOutput(STATS, (split, patch_stats(point.label, label, self.num_classes)))
        yield pvalue.TaggedOutput(CENTRES, (split, x, y))

    def teardown(self) -> None:
        self.inputs.close()
        self.labels.close()


def patch_stats(centre_class: int, label: np.ndarray, num_classes: int) -> np.ndarray:
    """[patches per class (one-hot of the centre class) | labelled pixels per class]."""
    stats = np.zeros(2 * num_classes, dtype=np.int64)
    if 0 <= centre_class < num_classes:
        stats[centre_class] = 1
    valid = label[label < num_classes]
    stats[num_classes:] = np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
    return stats


class SumArrays(beam.CombineFn):
    """Element-wise sum of equally shaped integer arrays."""

    def create_accumulator(self):
        return None

    def add_input(self, accumulator, element):
        return element.copy() if accumulator is None else accumulator + element

    def merge_accumulators(self, accumulators):
        result = None
        for acc in accumulators:
            if acc is not None:
                result = acc.copy() if result is None else result + acc
        return result

    def extract_output(self, accumulator):
        return accumulator


SPLITS = (TRAIN, VALIDATION)
