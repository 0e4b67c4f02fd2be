"""The exceptions the model package raises for bad input: each message says what was wrong and what to do."""

from __future__ import annotations


class ModelError(ValueError):
    """Bad input to training, evaluation or export (a CLI prints it as `error: <message>`, exit status 2)."""


class ModelNotFoundError(ModelError):
    """A model folder has no (readable) model.json."""


class IncompatibleDataError(ModelError):
    """Data and model disagree (bands, classes, patch size), or the data cannot be used for training."""
