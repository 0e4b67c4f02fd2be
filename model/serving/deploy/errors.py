"""The one error of `model.serving.deploy`: what went wrong and what to change."""

from __future__ import annotations

from model.errors import ModelError


class DeployError(ModelError):
    """Bad input or an API refusal; the message says what to change (printed as `error: ...`)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status
