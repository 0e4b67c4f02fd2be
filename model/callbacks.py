"""Keras callbacks that report on training as it goes."""

from __future__ import annotations

import logging
import math

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
