"""The end every job's pipeline shares: dead letters written, counted and counted by reason; one finishing
step that sees them and whose failed outcome fails the pipeline when asked."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline  # not a pytest class
from apache_beam.testing.util import assert_that, equal_to

from pipelines.tail import DeadLetters, Finish
from transforms.runtime.outcome import Outcome

READ_FAILED = "read failed on a.tif (no such file)"
LETTERS = [
    json.dumps({"id": "p1", "reason": READ_FAILED, "skipped": False}),
    json.dumps({"id": "p2", "reason": READ_FAILED, "skipped": False}),
    json.dumps({"id": "p3", "reason": "patch runs off the raster", "skipped": True}),
    json.dumps({"id": "p4", "error_type": "ValueError", "error": "bad value"}),  # no reason: type and error
]


def test_dead_letters_are_written_to_one_file_counted_and_counted_by_reason(tmp_path):
    prefix = str(tmp_path / "errors" / "errors")
    with BeamTestPipeline() as pipeline:
        tally = pipeline | beam.Create(LETTERS) | DeadLetters(prefix)
        assert_that(tally.count, equal_to([4]), label="CheckCount")
        assert_that(
            tally.reasons,
            equal_to(
                [
                    ((READ_FAILED, False), 2),
                    (("patch runs off the raster", True), 1),
                    (("ValueError: bad value", False), 1),
                ]
            ),
            label="CheckReasons",
        )
        assert_that(tally.files, equal_to([f"{prefix}-00000-of-00001.jsonl"]), label="CheckFiles")
    written = Path(f"{prefix}-00000-of-00001.jsonl").read_text().splitlines()
    assert sorted(written) == sorted(LETTERS)


def test_no_dead_letters_count_zero_and_no_reason(tmp_path):
    with BeamTestPipeline() as pipeline:
        tally = (
            pipeline
            | beam.Create([], reshuffle=False).with_output_types(str)
            | DeadLetters(str(tmp_path / "errors"))
        )
        assert_that(tally.count, equal_to([0]), label="CheckCount")
        assert_that(tally.reasons, equal_to([]), label="CheckReasons")


def _record_and_judge(_, marks: str, produced: int, *, error_files, error_count, reasons) -> dict:
    """A job's finishing function: notes what it was given (to a file: it runs on a worker) and
    returns its outcome."""
    with open(marks, "a", encoding="utf-8") as f:
        f.write(json.dumps({"files": len(error_files), "count": error_count}) + "\n")
    return Outcome.of("points", produced, reasons, max_error_fraction=0.5).to_json()


def _finish_job(tmp_path: Path, produced: int, fail_in_pipeline: bool) -> list[dict]:
    marks = tmp_path / "marks.jsonl"
    with BeamTestPipeline() as pipeline:
        tally = pipeline | beam.Create(LETTERS) | DeadLetters(str(tmp_path / "errors"))
        _ = pipeline | Finish(
            "extraction", _record_and_judge, tally, str(marks), produced, fail_in_pipeline=fail_in_pipeline
        )
    return [json.loads(line) for line in marks.read_text().splitlines()]


def test_finish_runs_once_with_the_dead_letters(tmp_path):
    assert _finish_job(tmp_path, produced=10, fail_in_pipeline=True) == [{"files": 1, "count": 4}]


def test_a_failed_outcome_fails_the_pipeline_only_when_asked(tmp_path):
    # 3 failed of 4 + 1 skipped + 1 produced: 60 % failed, over the 50 % allowed.
    assert _finish_job(tmp_path / "local", produced=1, fail_in_pipeline=False) == [{"files": 1, "count": 4}]
    with pytest.raises(Exception, match=r"extraction failed: 3 of 5 points failed \(60.0 %\)"):
        _finish_job(tmp_path / "remote", produced=1, fail_in_pipeline=True)
