"""Prediction transforms: fetch tiles from any pixel source, run the SavedModel, keep each tile's core.

    Tile -> FetchTiles -> (TileKey, pixels) -> RunInference(KeyedModelHandler(SavedModelHandler))
         -> (TileKey, probabilities) -> to_tile_prediction -> TilePrediction(tile, classes, probabilities)

The tile (with its grid) is the key that travels past the model, so batching tiles never loses where a
prediction belongs. Fetch, inference, trimming and writing fuse into one stage: tile pixels never cross
a stage boundary, and a worker holds only the tiles of the batch in flight.

Sources are duck-typed: anything with `read(grid, bands, *, fill, dtype, resampling) -> ReadResult`
(`transforms.io.rasters.LocalRasterSource`, or an Earth Engine source with the same method) works.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from transforms.contracts.schema import CLASS_NODATA
from transforms.geometry.tiling import Tile, TilingSpec, trim
from transforms.geometry.tta import predict_with_tta
from transforms.io.rasters import PixelSource, SourceError, TransientSourceError
from transforms.io.retry import RetryConfig
from transforms.runtime import progress
from transforms.runtime.outcome import letter_fields
from transforms.runtime.quiet_tensorflow import hide_notice_if_a_quiet_start_asked
from transforms.runtime.tensor_memory import aligned_batch, lend_to_tensorflow, read_in_place

ERRORS = "errors"
# Pixels are fetched with this fill outside the imagery and at the source's nodata. A pixel whose bands
# are all equal to it is no data, as Earth Engine writes masked pixels and as training reads them
# (model/dataset.py drops all-zero pixels); the model sees the zeros, the output marks them nodata.
INPUT_FILL = 0.0

SAVED_MODEL_DIR = "saved_model"
SIGNATURE = "serving_default"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


# --- the model ------------------------------------------------------------------------------------


class ModelSignatureError(ValueError):
    """The SavedModel's serving signature does not match the model folder contract."""


@dataclasses.dataclass
class LoadedModel:
    """A loaded SavedModel and its serving function (a plain object, so Beam's `Shared` can cache it)."""

    saved_model: Any
    function: Any

    def input_shape(self) -> tuple[int | None, ...]:
        spec = self.function.structured_input_signature[1][INPUT_NAME]
        return tuple(spec.shape.as_list())

    def output_names(self) -> list[str]:
        return sorted(self.function.structured_outputs)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The probabilities of `batch` (N, H, W, bands), read-only, in the memory TensorFlow wrote."""
        return read_in_place(self.function(**{INPUT_NAME: lend_to_tensorflow(batch)})[OUTPUT_NAME])


def saved_model_path(model_dir: str) -> str:
    return model_dir.rstrip("/") + "/" + SAVED_MODEL_DIR


def load_saved_model(model_dir: str) -> LoadedModel:
    """Load `<model_dir>/saved_model` and check its `serving_default` signature."""
    # In a Beam worker process that a quiet start launched, this is the first TensorFlow import.
    hide_notice_if_a_quiet_start_asked()
    import tensorflow as tf

    path = saved_model_path(model_dir)
    try:
        saved_model = tf.saved_model.load(path)
    except (OSError, tf.errors.OpError) as e:
        raise ModelSignatureError(
            f"Cannot load the SavedModel at {path!r}: {e.__class__.__name__}. Point --model at a folder "
            "written by `python -m model.train`."
        ) from None
    try:
        function = saved_model.signatures[SIGNATURE]
    except KeyError:
        raise ModelSignatureError(
            f"The SavedModel at {path!r} has no {SIGNATURE!r} signature (it has "
            f"{sorted(saved_model.signatures)}); re-export it with model.export.export_model."
        ) from None
    model = LoadedModel(saved_model, function)
    inputs = function.structured_input_signature[1]
    if set(inputs) != {INPUT_NAME} or OUTPUT_NAME not in function.structured_outputs:
        raise ModelSignatureError(
            f"The {SIGNATURE!r} signature of {path!r} maps {sorted(inputs)} -> {model.output_names()}; "
            f"prediction needs {INPUT_NAME!r} -> {OUTPUT_NAME!r}. Re-export it with model.export.export_model."
        )
    return model


class SavedModelHandler(ModelHandler[np.ndarray, np.ndarray, LoadedModel]):
    """RunInference handler for a model folder's SavedModel: (H, W, bands) float32 -> (h, w, classes).

    RunInference loads the model once per worker process (in `DoFn.setup`) and shares it between the
    process's threads; the signature function is thread-safe. Batches are stacked into one tensor, so
    all examples of a batch must have the same shape (tiles of one plan do). With `tta`, each batch's
    probabilities are the mean over the 8 flips/rotations of its tiles (transforms.geometry.tta; 8 model calls).
    """

    def __init__(self, model_dir: str, batch_size: int = 8, *, tta: bool = False, **kwargs: Any) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size, **kwargs)
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.tta = tta

    def load_model(self) -> LoadedModel:
        return load_saved_model(self.model_dir)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: LoadedModel,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[np.ndarray]:
        stacked = aligned_batch(batch)
        return list(predict_with_tta(model, stacked) if self.tta else model(stacked))

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        # The default pickles the batch just to measure it: tens of MB per batch of tiles.
        return sum(example.nbytes for example in batch)

    def get_metrics_namespace(self) -> str:
        return "terrabeam_predict"

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        if inference_args:
            raise ValueError(f"SavedModelHandler takes no inference_args, got {sorted(inference_args)}.")

    def __repr__(self) -> str:
        return f"SavedModelHandler({self.model_dir!r}, batch_size={self.batch_size}, tta={self.tta})"


# --- fetching tiles -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TileKey:
    """What travels past the model with a tile: the tile, and which of its pixels hold no data."""

    tile: Tile
    nodata: np.ndarray | None = None  # (tile_size, tile_size) bool, None when every pixel has data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TileKey) and self.tile == other.tile

    def __hash__(self) -> int:
        return hash(self.tile)


def fetch_tile(
    tile: Tile, source: PixelSource, bands: Sequence[str], retry: RetryConfig
) -> tuple[TileKey, np.ndarray] | None:
    """The tile's pixels (tile_size, tile_size, bands) float32 keyed by its tile; None when none has data."""
    result = retry.call(source.read, tile.grid, bands, fill=INPUT_FILL, dtype="float32")
    pixels = np.asarray(result.pixels, dtype=np.float32)
    expected = (tile.grid.height, tile.grid.width, len(bands))
    if pixels.shape != expected:
        raise SourceError(f"The source returned pixels of shape {pixels.shape} for a {expected} request.")
    nodata = np.all(pixels == INPUT_FILL, axis=-1)
    if nodata.all():
        return None
    return TileKey(tile, nodata if nodata.any() else None), pixels


def dead_letter(tile: Tile, stage: str, error: BaseException) -> str:
    """A JSON line that keeps everything needed to retry the tile later."""
    return json.dumps(
        {
            "stage": stage,
            "error_type": getattr(error, "type_name", type(error).__name__),
            "error": str(error),
            "tile": tile.to_json(),
            **letter_fields(error),
        },
        sort_keys=True,
    )


class FetchTiles(beam.DoFn):
    """Tile -> (TileKey, pixels); tiles with no data are counted and dropped; failures to ERRORS."""

    def __init__(self, source: PixelSource, bands: Sequence[str], retry: RetryConfig | None = None) -> None:
        self.source = source
        self.bands = tuple(bands)
        self.retry = retry or RetryConfig()
        self.fetched = Metrics.counter("predict", "tiles_fetched")
        self.empty = progress.counter("predict", "tiles_without_data")
        self.failed = progress.counter("predict", "tiles_failed")

    def setup(self) -> None:
        random.seed()  # retry jitter must differ between workers
        start = getattr(self.source, "setup", None)  # e.g. an Earth Engine session, once per process
        if start is not None:
            start()

    def process(self, tile: Tile) -> Iterator[Any]:
        try:
            fetched = fetch_tile(tile, self.source, self.bands, self.retry)
        except (SourceError, TransientSourceError, ValueError) as e:
            self.failed.inc()
            yield pvalue.TaggedOutput(ERRORS, dead_letter(tile, "fetch", e))
            return
        if fetched is None:
            self.empty.inc()
            return
        self.fetched.inc()
        yield fetched

    def teardown(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()


def inference_dead_letters(failure: tuple[Sequence[tuple[TileKey, np.ndarray]], Any]) -> Iterator[str]:
    """A failed RunInference batch -> one dead letter per tile.

    RunInference's exception handling emits `(batch, (exception type, repr, traceback lines))`.
    """
    batch, error = failure
    if isinstance(error, tuple) and len(error) >= 2 and isinstance(error[0], type):
        error = _ReportedError(error[0].__name__, str(error[1]))
    progress.counter("predict", "tiles_failed").inc(len(batch))
    for key, _ in batch:
        yield dead_letter(key.tile, "inference", error)


class _ReportedError(Exception):
    """An exception known only by its type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


# --- from probabilities to the tile's output --------------------------------------------------------


@dataclasses.dataclass
class TilePrediction:
    """A tile's core: `classes` (h, w) uint8 with CLASS_NODATA, `probabilities` (h, w, classes) float32
    with NaN where there is no data (None when not asked for)."""

    tile: Tile
    classes: np.ndarray
    probabilities: np.ndarray | None


def to_tile_prediction(
    keyed: tuple[TileKey, np.ndarray],
    spec: TilingSpec,
    *,
    with_probabilities: bool,
    region_mask: Any = None,
) -> TilePrediction:
    """Trim the border, take the most probable class, mark nodata (masked input, outside `region_mask`).

    `region_mask`, when given, is a callable (tile) -> (h, w) bool array, True outside the region.
    """
    key, probabilities = keyed
    tile = key.tile
    core = trim(np.asarray(probabilities), tile, spec)
    if core.shape[-1] > CLASS_NODATA:
        raise ValueError(
            f"A uint8 class map holds at most {CLASS_NODATA} classes, the model has {core.shape[-1]}."
        )
    classes = np.argmax(core, axis=-1).astype(np.uint8)
    nodata = None
    if key.nodata is not None:
        nodata = trim(key.nodata, tile, spec)
    if region_mask is not None:
        outside = region_mask(tile)
        nodata = outside if nodata is None else (nodata | outside)
    out_probabilities = None
    if with_probabilities:
        out_probabilities = np.array(core, dtype=np.float32)
    if nodata is not None and nodata.any():
        classes[nodata] = CLASS_NODATA
        if out_probabilities is not None:
            out_probabilities[nodata] = np.nan
    return TilePrediction(tile, classes, out_probabilities)
