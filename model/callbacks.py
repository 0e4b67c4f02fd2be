"""Keras callbacks of a training run: reports as it goes, the learning rate in the history, a time budget."""

from __future__ import annotations

import logging
import math
import time

import keras

log = logging.getLogger("terrabeam.train")


class BestEpoch(keras.callbacks.Callback):
    """After each epoch, says which epoch is the best so far by `monitor` (lower is better).

    The same choice as the checkpoint and early stopping make, so the line names the epoch whose
    weights the model folder will hold if training stopped now.
    """

    def __init__(self, monitor: str = "val_loss", epochs: int | None = None) -> None:
        super().__init__()
        self.monitor = monitor
        self.epochs = epochs
        self.best: float = math.inf
        self.best_epoch: int | None = None  # 1-based
        self.messages: list[str] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        value = float(value)
        of = f"/{self.epochs}" if self.epochs else ""
        if value < self.best:
            self.best, self.best_epoch = value, epoch + 1
            message = f"Epoch {epoch + 1}{of}: {self.monitor} {value:.4f}, the best so far."
        else:
            message = (
                f"Epoch {epoch + 1}{of}: {self.monitor} {value:.4f}; best so far: epoch {self.best_epoch} "
                f"({self.best:.4f})."
            )
        self.messages.append(message)
        log.info(message)


class TimeLimit(keras.callbacks.Callback):
    """Stops training before an epoch that would end past the time budget (the longest epoch so far)."""

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.seconds = minutes * 60
        self.start = time.monotonic()
        self.longest = 0.0
        self.epoch_start = self.start

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self.epoch_start)
        if now - self.start + self.longest > self.seconds:
            self.model.stop_training = True
            log.info("Time budget of %.1f min reached after epoch %d.", self.seconds / 60, epoch + 1)


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate at the end of each epoch to the logs (history.json), whatever the schedule."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
