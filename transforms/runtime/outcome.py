"""How a job ended: its dead letters counted by reason, and whether the result counts as a success.

Every dead letter carries a `reason` (short, the same for every element that failed the same way, e.g.
"read failed on image.tif (file is truncated)") and `skipped` (true for elements left out by policy,
such as a patch off the raster edge, which are not failures). A job fails when it produced nothing, or
when its failures are more than `max_error_fraction` of its elements (1.0 turns that check off).

The extraction and prediction jobs count reasons in the pipeline (`letter_key` of each dead letter, in
pipelines.dead_letters), write the `Outcome` into manifest.json / prediction.json, and check it in their
last step (`check_outcome`), so a job on Dataflow fails visibly too; on a local runner the command reads
it back and exits with status 1. No Beam here: a job's --help reads this module's defaults.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

DEFAULT_MAX_ERROR_FRACTION = 0.05
SUMMARY_LINES = 10
REASON_CHARS = 300
# Runners that run in the launching process, which reads the outcome back and sets the exit status
# itself; a failure raised inside them would only add a worker traceback to the output.
LOCAL_RUNNERS = frozenset(
    {"direct", "directrunner", "switchingdirectrunner", "bundlebaseddirectrunner", "fnapirunner"}
    | {"prism", "prismrunner", "interactiverunner"}
)


def reason_of(error: BaseException) -> str:
    """A dead letter's reason: the error's own `reason`, else its type and first line."""
    reason = getattr(error, "reason", None)
    if not reason:
        name = getattr(error, "type_name", type(error).__name__)
        lines = str(error).strip().splitlines()
        reason = f"{name}: {lines[0]}" if lines else name
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"


def letter_fields(error: BaseException) -> dict[str, Any]:
    """The fields every dead letter carries for the summary."""
    return {"reason": reason_of(error), "skipped": bool(getattr(error, "skipped", False))}


def letter_key(line: str) -> tuple[str, bool]:
    """(reason, skipped) of a dead-letter JSON line."""
    letter = json.loads(line)
    reason = letter.get("reason") or f"{letter.get('error_type', 'Error')}: {letter.get('error', '')}"
    return reason, bool(letter.get("skipped", False))


def check_max_error_fraction(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"--max-error-fraction must be between 0 and 1 (1.0 turns the check off), got {value}."
        )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a job produced and what went to its dead letters, by reason."""

    unit: str  # what the job's elements are, plural: "points", "tiles"
    produced: int
    reasons: tuple[tuple[str, bool, int], ...]  # (reason, skipped, count), most frequent first
    max_error_fraction: float = DEFAULT_MAX_ERROR_FRACTION

    @classmethod
    def of(
        cls,
        unit: str,
        produced: int,
        counts: Iterable[tuple[tuple[str, bool], int]],
        max_error_fraction: float = DEFAULT_MAX_ERROR_FRACTION,
    ) -> Outcome:
        rows = sorted(((r, bool(s), int(n)) for (r, s), n in counts), key=lambda row: (-row[2], row[0]))
        return cls(unit, int(produced), tuple(rows), float(max_error_fraction))

    @property
    def failed(self) -> int:
        return sum(n for _, skipped, n in self.reasons if not skipped)

    @property
    def skipped(self) -> int:
        return sum(n for _, skipped, n in self.reasons if skipped)

    @property
    def total(self) -> int:
        return self.produced + self.failed + self.skipped

    @property
    def error_fraction(self) -> float:
        return self.failed / self.total if self.total else 0.0

    @property
    def problem(self) -> str | None:
        """Why the job counts as failed, or None when it succeeded."""
        if not self.produced:
            letters = self.failed + self.skipped
            went = f": all {letters} went to the dead letters" if letters else ""
            return f"nothing was produced, no {self.unit} written{went}"
        if self.max_error_fraction < 1.0 and self.error_fraction > self.max_error_fraction:
            return (
                f"{self.failed} of {self.count(self.total)} failed ({100 * self.error_fraction:.1f} %), more "
                f"than --max-error-fraction {self.max_error_fraction:g}"
            )
        return None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def count(self, n: int) -> str:
        """ "1 tile", "44 tiles"."""
        return f"{n} {self.unit[:-1] if n == 1 and self.unit.endswith('s') else self.unit}"

    def summary_lines(self, limit: int = SUMMARY_LINES) -> list[str]:
        """One line per reason, most frequent first: "44 tiles: read failed on image.tif (...)"."""
        lines = [
            f"{self.count(n)}: {reason}" + (" (skipped)" if skipped else "")
            for reason, skipped, n in self.reasons[:limit]
        ]
        rest = self.reasons[limit:]
        if rest:
            lines.append(f"{self.count(sum(n for *_, n in rest))}: {len(rest)} other reasons")
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problem": self.problem,
            "unit": self.unit,
            "produced": self.produced,
            "failed": self.failed,
            "skipped": self.skipped,
            "max_error_fraction": self.max_error_fraction,
            "dead_letters_by_reason": [
                {"reason": reason, "skipped": skipped, "count": n} for reason, skipped, n in self.reasons
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        rows = tuple(
            (r["reason"], bool(r["skipped"]), int(r["count"])) for r in data["dead_letters_by_reason"]
        )
        return cls(data["unit"], int(data["produced"]), rows, float(data["max_error_fraction"]))


class JobFailed(RuntimeError):
    """A job that ran to its end but whose result does not count as a success."""

    def __init__(self, outcome: Outcome | str, job: str = "job", where: str = "") -> None:
        # Beam re-raises a worker's exception as type(e)(message): a plain message must do too.
        if isinstance(outcome, Outcome):
            message = f"{job} failed: {outcome.problem}. " + "; ".join(outcome.summary_lines(3))
        else:
            message, outcome = str(outcome), None
        self.outcome, self.job, self.where = outcome, job, where
        super().__init__(message)

    def report(self) -> str:
        """The lines the command prints: what failed, the dead letters by reason, where to look."""
        if self.outcome is None:
            return f"error: {self}"
        lines = [f"error: {self.job} failed: {self.outcome.problem}."]
        lines += [f"  {line}" for line in self.outcome.summary_lines()]
        if self.where:
            lines.append(f"What was written, with the dead letters, is in {self.where}.")
        return "\n".join(lines)


def check_outcome(outcome: dict[str, Any], job: str, enabled: bool) -> None:
    """The job's last step: raise JobFailed when the outcome is a failure (and `enabled`)."""
    result = Outcome.from_json(outcome)
    if enabled and not result.ok:
        raise JobFailed(result, job)


def read_outcome(path: str) -> Outcome | None:
    """The outcome recorded in a JSON file (manifest.json, prediction.json); None when there is none."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, mime_type="application/json", compression_type="uncompressed") as f:
            data = json.loads(f.read().decode("utf-8"))
        return Outcome.from_json(data["outcome"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_local_runner(runner: Any) -> bool:
    """True for runners that run inside the launching process (the Direct runners, Prism): the job's
    results are on this machine when `run` returns. A dotted path names its last part."""
    if runner is None:
        return True
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.split(".")[-1].lower() in LOCAL_RUNNERS


def warning_lines(outcome: Outcome) -> list[str]:
    """What a successful job prints about its dead letters (nothing when there are none)."""
    letters = outcome.failed + outcome.skipped
    if not letters:
        return []
    head = f"warning: {outcome.count(letters)} went to the dead letters:"
    return [head] + [f"  {line}" for line in outcome.summary_lines()]
