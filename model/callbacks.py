"""Keras callbacks of a training run: the averaged weights in the model for selection, the best epoch's
weights kept (and reported as it goes), the learning rate in the history, a time budget."""

from __future__ import annotations

import logging
import math
import time

import keras
import tensorflow as tf

log = logging.getLogger("terrabeam.train")


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


class AveragedWeights(keras.callbacks.Callback):
    """Puts the optimizer's moving averages of the weights (Adam's `use_ema`) in the model from the
    selection pass to the end of the epoch, so the averaged weights are the ones selected and kept; the
    raw weights go back before the next epoch's steps.

    Keras' SwapEMAWeights(swap_on_epoch=True) does the same with four eager swaps an epoch (~13 ms each
    on 2 cores, ~2 % of a default epoch) made by adding and subtracting, which is not exact in floating
    point. This swaps twice an epoch, in one traced function, through a copy. Like Keras' callback it
    reads the optimizer's private lists of variables and their averages.
    """

    def __init__(self) -> None:
        super().__init__()
        self.averages_in_model = False
        self._swap: tf.types.experimental.PolymorphicFunction | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._swap = None  # made at the first swap: the optimizer builds its averages with its first step
        self.averages_in_model = False

    def _put_averages_in(self, averages: bool) -> None:
        if self.averages_in_model == averages:
            return
        if self._swap is None:
            pairs = list(_averaged_pairs(self.model.optimizer))

            @tf.function(autograph=False)
            def swap() -> None:
                for variable, average in pairs:
                    raw = tf.identity(variable.value)
                    variable.assign(average.value)
                    average.assign(raw)  # ordered after the read above: both touch `average`

            self._swap = swap
        self._swap()
        self.averages_in_model = averages

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._put_averages_in(False)

    def on_test_begin(self, logs: dict | None = None) -> None:
        self._put_averages_in(True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._put_averages_in(True)  # without a selection pass, the averages are kept by training loss
        if epoch == self.params["epochs"] - 1:
            # Keras' fit ends by writing the averages into the model: make them the model's weights.
            for variable, average in _averaged_pairs(self.model.optimizer):
                average.assign(variable.value)


def _averaged_pairs(optimizer: keras.optimizers.Optimizer) -> list[tuple[keras.Variable, keras.Variable]]:
    """Each trainable variable with its moving average (the optimizer's, under `use_ema`)."""
    if not getattr(optimizer, "use_ema", False):
        raise ValueError("AveragedWeights needs an optimizer that averages the weights (use_ema=True).")
    return list(zip(optimizer._trainable_variables, optimizer._model_variables_moving_average))


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the best epoch by `monitor` (lower is better; a NaN never is) in memory and
    puts them back in the model when the fit ends; also writes them to `path` (a Keras .weights.h5), at
    the first best epoch, then at most every `write_every` seconds, and when the fit ends.

    After each epoch it says which epoch is the best so far: the epoch whose weights the model folder
    will hold if training stopped now. It stops the fit after an epoch whose training loss is not
    finite (the run diverged; later epochs cannot recover), noted in `diverged_epoch`.

    Keras' ModelCheckpoint(save_best_only=True) writes the file at every better epoch: ~90 ms each on 2
    cores, ~4 % of a default epoch. In memory a copy costs a few ms; the writes spaced out bound what an
    interrupted run loses to `write_every` seconds of training.
    """

    def __init__(
        self, monitor: str, path: str | None = None, write_every: float = 60.0, epochs: int | None = None
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.path = path
        self.write_every = write_every
        self.epochs = epochs
        self.best: float = math.inf
        self.best_epoch: int | None = None  # 0-based, as Keras counts
        self.diverged_epoch: int | None = None  # 0-based
        self.messages: list[str] = []
        self.writes = 0
        self._written_epoch: int | None = None
        self._last_write = -math.inf
        self._kept: list[tf.Variable] = []

    def _make_copies(self) -> None:
        weights = self.model.weights  # built by now: an epoch has run
        self._kept = [tf.Variable(w.value, trainable=False) for w in weights]

        @tf.function(autograph=False)
        def keep() -> None:
            for kept, w in zip(self._kept, weights):
                kept.assign(w.value)

        @tf.function(autograph=False)
        def restore() -> None:
            for kept, w in zip(self._kept, weights):
                w.assign(kept.value())

        self._keep, self._restore = keep, restore

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is not None:
            value = float(value)
            if value < self.best:
                self.best, self.best_epoch = value, epoch
                if not self._kept:
                    self._make_copies()
                self._keep()
                if self.path and time.monotonic() - self._last_write >= self.write_every:
                    self._write()
            self._report(epoch, value)
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_epoch = epoch
            self.model.stop_training = True
            log.warning("Epoch %d: the training loss is %s; training stops here.", epoch + 1, float(loss))

    def _report(self, epoch: int, value: float) -> None:
        of = f"/{self.epochs}" if self.epochs else ""
        if self.best_epoch == epoch:
            message = f"Epoch {epoch + 1}{of}: {self.monitor} {value:.4f}, the best so far."
        elif self.best_epoch is None:
            message = f"Epoch {epoch + 1}{of}: {self.monitor} {value:.4f}; no epoch has a finite one yet."
        else:
            message = (
                f"Epoch {epoch + 1}{of}: {self.monitor} {value:.4f}; best so far: epoch {self.best_epoch + 1} "
                f"({self.best:.4f})."
            )
        self.messages.append(message)
        log.info(message)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_epoch is None:
            return
        self._restore()
        if self.path and self._written_epoch != self.best_epoch:
            self._write()

    def _write(self) -> None:
        self.model.save_weights(self.path)
        self.writes += 1
        self._written_epoch = self.best_epoch
        self._last_write = time.monotonic()
