"""A job's output folder before the job starts: writable, and free of an earlier result unless
--overwrite replaces it, or --resume finishes it (prediction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipelines.shell import UsageError, prepare_output
from transforms.cog import OutputSpec, join
from transforms.contracts.manifest import MANIFEST_NAME
from transforms.contracts.prediction import (
    CLASSES_NAME,
    POSITIVE_NAME,
    PROBABILITIES_NAME,
    QUICKLOOK_NAME,
    SUMMARY_NAME,
    TILES_DIR,
)
from transforms.resume import PLAN_NAME, differences, existing_tiles, read_record


def extraction_output(output: str, overwrite: bool) -> None:
    """Fail early if the output is not writable or holds an earlier extraction (unless --overwrite)."""
    base = output.rstrip("/")
    existing = FileSystems.match([f"{base}/{MANIFEST_NAME}", f"{base}/train/*", f"{base}/validation/*"])
    found = [m.path for result in existing for m in result.metadata_list]
    prepare_output(output, found, overwrite, "an extraction", FileSystems.delete)


def prediction_output(output: str, overwrite: bool) -> None:
    """Fail early if the output is not writable or holds an earlier prediction (unless --overwrite)."""
    earlier = [join(output, name) for name in (SUMMARY_NAME, f"{CLASSES_NAME}.tif", f"{CLASSES_NAME}.vrt")]
    found = [path for path in earlier if FileSystems.exists(path)]
    tiles = join(output, TILES_DIR)
    if FileSystems.exists(tiles):
        found.append(tiles)
    prepare_output(
        output,
        found,
        overwrite,
        "a prediction",
        lambda found: _delete_finished_outputs(output, found),
        or_else=", or --resume to finish a stopped one",
    )


def resumed_prediction(output: OutputSpec, record: dict[str, Any]) -> frozenset[str]:
    """Check that --output holds this same prediction; returns the ids of the tiles it already has."""
    recorded = read_record(output.output)
    if recorded is None:
        raise UsageError(
            f"--resume: {output.output!r} holds no prediction to finish (no {PLAN_NAME}); run without "
            "--resume to start one."
        )
    changed = differences(recorded, record)
    if changed:
        raise UsageError(
            f"--resume: the prediction in {output.output!r} was made with other settings: "
            + "; ".join(changed)
            + ". Resume with the same --model, imagery and options, or pass --overwrite to start again."
        )
    _delete_finished_outputs(output.output)  # rebuilt at the end from every tile
    try:
        partial = FileSystems.match([output.path(TILES_DIR, "*", "*.partial-*")])[0].metadata_list
    except OSError:  # Beam's BeamIOError where nothing matches
        partial = []
    if partial:  # tiles a stopped run was writing (a local write is renamed into place once whole)
        FileSystems.delete([m.path for m in partial])
    return existing_tiles(output)


def _delete_finished_outputs(output: str, also: Sequence[str] = ()) -> None:
    """Remove what the end of a prediction writes (mosaics, quick-look, summary, dead letters)."""
    kinds = (CLASSES_NAME, PROBABILITIES_NAME, POSITIVE_NAME)
    stale = [join(output, f"{kind}{ext}") for kind in kinds for ext in (".tif", ".vrt")]
    stale.append(join(output, SUMMARY_NAME))
    stale += [join(output, QUICKLOOK_NAME), join(output, "errors")]
    stale = [p for p in dict.fromkeys([*also, *stale]) if FileSystems.exists(p)]
    if stale:
        FileSystems.delete(stale)
