"""The planning package's one error."""

from __future__ import annotations


class PlanError(ValueError):
    """Settings the plan cannot price or count; the message says what to change."""
