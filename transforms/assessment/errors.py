"""The one error type of the assessment: bad input whose message says what was wrong and what to do."""

from __future__ import annotations


class AssessmentError(ValueError):
    """A design, labels file or map that cannot be used as given; the message says what to change."""
