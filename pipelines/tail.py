"""The end every Beam job's pipeline shares: its dead letters, then one step that finishes the job.

    letters = errors | "DeadLetters" >> DeadLetters(f"{output}/errors/errors")
    _ = pipeline | "Finish" >> Finish("extraction", finalize, letters, job, fail_in_pipeline=remote)

`DeadLetters` writes the dead letters (JSON lines, each with a `reason`) to one file, counts them and
counts them by reason; `Finish` runs the job's finishing function once, after every input it is given,
and checks the outcome that function returns (transforms.runtime.outcome), so a failed job fails on
Dataflow too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import AsList, AsSingleton, PCollection

from transforms.runtime.outcome import check_outcome, letter_key

ERRORS_SUFFIX = ".jsonl"


class DeadLetterTally(NamedTuple):
    """What `DeadLetters` gives: three PCollections, each for a side input of the finishing step."""

    files: PCollection  # the dead-letter file written: its path (AsList)
    count: PCollection  # how many dead letters, one element (AsSingleton)
    reasons: PCollection  # ((reason, skipped), count) for each distinct reason (AsList)


class DeadLetters(beam.PTransform):
    """Dead-letter JSON lines -> written to `<prefix>-00000-of-00001.jsonl`, counted, counted by reason."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def expand(self, letters: PCollection) -> DeadLetterTally:
        return DeadLetterTally(
            files=letters
            | "Write" >> beam.io.WriteToText(self._prefix, file_name_suffix=ERRORS_SUFFIX, num_shards=1),
            count=letters | "Count" >> beam.combiners.Count.Globally(),
            reasons=letters
            | "ReasonOf" >> beam.Map(letter_key)
            | "CountReasons" >> beam.combiners.Count.PerElement(),
        )


class Finish(beam.PTransform):
    """Once every input is ready: `finish(None, *args, **kwargs, error_files=, error_count=, reasons=)`
    runs once and returns the job's outcome (`Outcome.to_json()`), which is then checked.

    `job` names the job in the failure ("extraction"). With `fail_in_pipeline` (a runner that does not
    run in this process, e.g. Dataflow) a failed job fails the pipeline itself, after `finish` wrote
    its summary; a local run reads the outcome back instead (pipelines.progress.run_job).
    """

    def __init__(
        self,
        job: str,
        finish: Callable[..., dict[str, Any]],
        letters: DeadLetterTally,
        *args: Any,
        fail_in_pipeline: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self._job = job
        self._finish = finish
        self._args = args
        self._kwargs = {
            **kwargs,
            "error_files": AsList(letters.files),
            "error_count": AsSingleton(letters.count),
            "reasons": AsList(letters.reasons),
        }
        self._fail_in_pipeline = fail_in_pipeline

    def expand(self, begin: beam.pvalue.PBegin) -> PCollection:
        return (
            begin
            | "Trigger" >> beam.Create([None])
            | "Finish" >> beam.Map(self._finish, *self._args, **self._kwargs)
            # A retry of the check must not redo the finish (its files are already moved).
            | "AfterFinish" >> beam.Reshuffle()
            | "CheckOutcome" >> beam.Map(check_outcome, self._job, self._fail_in_pipeline)
        )
