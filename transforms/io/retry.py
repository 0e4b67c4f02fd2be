"""The retry policy for transient source failures (Earth Engine 429/5xx, flaky Cloud Storage reads).

Extraction, prediction and the Earth Engine client share it: what counts as transient is decided where
the error is raised (`TransientSourceError`); this module only decides how often and how long to wait.
"""

from __future__ import annotations

import dataclasses

from retry.api import retry_call

from transforms.io.integrity import TransientSourceError


@dataclasses.dataclass(frozen=True)
class RetryConfig:
    """Exponential backoff with jitter for transient source failures."""

    attempts: int = 5
    delay: float = 0.5
    backoff: float = 2.0
    max_delay: float = 30.0

    def call(self, fn, *args, **kwargs):
        try:
            return retry_call(
                fn,
                fargs=args,
                fkwargs=kwargs,
                exceptions=TransientSourceError,
                tries=self.attempts,
                delay=self.delay,
                backoff=self.backoff,
                max_delay=self.max_delay,
                jitter=(0, self.delay),
                logger=None,
            )
        except TransientSourceError as e:
            if e.give_up is None:
                raise
            raise e.give_up(e) from e  # retries spent: a permanent failure, counted against the file
