"""Training callbacks: the averaged weights swapped in for selection (against Keras' SwapEMAWeights),
and the best epoch's weights kept in memory, put back and written to the checkpoint."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from model.callbacks import AveragedWeights, BestWeights


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x @ rng.normal(size=(5, 1)) + 0.1 * rng.normal(size=(64, 1))).astype(np.float32)
    return x, y


def _model(ema: bool = True) -> keras.Model:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.BatchNormalization(),
         keras.layers.Dense(1)]
    )  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(0.05, use_ema=ema, ema_momentum=0.9), loss="mse")
    return model


class _Weights(keras.callbacks.Callback):
    """Records the model's weights at each test start and epoch end (what selection and keeping see)."""

    def __init__(self) -> None:
        super().__init__()
        self.at_test: list[list[np.ndarray]] = []
        self.at_epoch_end: list[list[np.ndarray]] = []

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.at_test.append([np.array(w) for w in self.model.get_weights()])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.at_epoch_end.append([np.array(w) for w in self.model.get_weights()])


def _fit(swap: keras.callbacks.Callback, epochs: int = 4) -> tuple[keras.Model, dict, _Weights]:
    x, y = _data()
    model = _model()
    seen = _Weights()
    history = model.fit(
        x, y, batch_size=16, epochs=epochs, validation_data=_data(1), callbacks=[swap, seen], shuffle=False,
        verbose=0,
    )  # fmt: skip
    return model, history.history, seen


def test_averaged_weights_are_selected_and_kept_as_keras_swap_does():
    ours, our_history, our_seen = _fit(AveragedWeights())
    theirs, their_history, their_seen = _fit(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    # Same selection losses, same weights at selection and at each epoch's end, same final model
    # (Keras swaps by adding and subtracting: equal within float32 rounding, not bit for bit).
    np.testing.assert_allclose(our_history["val_loss"], their_history["val_loss"], rtol=1e-5)
    np.testing.assert_allclose(our_history["loss"], their_history["loss"], rtol=1e-5)
    seen = zip(our_seen.at_test + our_seen.at_epoch_end, their_seen.at_test + their_seen.at_epoch_end)
    for ours_at, theirs_at in seen:
        for a, b in zip(ours_at, theirs_at):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The averaged weights differ from the raw ones (averaging does not change the steps): the test
    # would see a swap that did nothing.
    raw = _model(ema=False)
    raw.fit(*_data(), batch_size=16, epochs=4, shuffle=False, verbose=0)
    assert not np.allclose(raw.get_weights()[0], ours.get_weights()[0], atol=1e-4)


def test_averaged_weights_swap_back_exactly():
    x, y = _data()
    model = _model()
    swap = AveragedWeights()
    swap.set_model(model)
    swap.set_params({"epochs": 2})
    for start in range(0, 64, 16):  # steps without fit's ending, which copies the averages in
        model.train_on_batch(x[start : start + 16], y[start : start + 16])
    raw = [np.array(w) for w in model.trainable_weights]
    swap.on_train_begin()
    swap.on_test_begin()
    assert swap.averages_in_model
    assert not np.array_equal(np.array(model.trainable_weights[0]), raw[0])
    swap.on_epoch_begin(1)
    for w, before in zip(model.trainable_weights, raw):
        np.testing.assert_array_equal(np.array(w), before)


class _Scripted(keras.callbacks.Callback):
    """Replaces the monitored value (and the training loss, if scripted) by a script, and records the
    weights each epoch ends with."""

    def __init__(self, values: list[float], losses: list[float] | None = None) -> None:
        super().__init__()
        self.values = values
        self.losses = losses
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs["val_loss"] = self.values[epoch]
        if self.losses:
            logs["loss"] = self.losses[epoch]
        self.weights.append([np.array(w) for w in self.model.weights])


@pytest.mark.parametrize(("write_every", "writes"), [(3600.0, 2), (0.0, 3)])
def test_best_weights_are_put_back_and_written(tmp_path, write_every, writes):
    path = str(tmp_path / "best.weights.h5")
    script = _Scripted([3.0, 1.0, 2.0, 0.5, float("nan"), 4.0])
    best = BestWeights("val_loss", path, write_every=write_every)
    x, y = _data()
    model = _model(ema=False)
    model.fit(x, y, batch_size=16, epochs=6, validation_data=_data(1), callbacks=[script, best], verbose=0)
    assert best.best_epoch == 3 and best.best == 0.5
    # Kept at epochs 1, 2 and 4 (0-based 0, 1, 3). Written at the first, then either once more at the
    # end (a long interval) or at each better epoch (no interval), never twice for the same epoch.
    assert best.writes == writes
    for w, kept in zip(model.weights, script.weights[3]):  # BatchNormalization's statistics included
        np.testing.assert_array_equal(np.array(w), kept)
    assert not np.array_equal(np.array(model.weights[0]), script.weights[5][0])
    written = _model(ema=False)
    written.load_weights(path)
    for w, kept in zip(written.weights, script.weights[3]):
        np.testing.assert_array_equal(np.array(w), kept)


def test_best_weights_without_a_best_epoch_leave_the_model_and_write_nothing(tmp_path):
    path = tmp_path / "best.weights.h5"
    script = _Scripted([float("nan")] * 2)
    best = BestWeights("val_loss", str(path))
    model = _model(ema=False)
    model.fit(*_data(), epochs=2, validation_data=_data(1), callbacks=[script, best], verbose=0)
    assert best.best_epoch is None and best.writes == 0 and not path.exists()
    for w, last in zip(model.weights, script.weights[1]):
        np.testing.assert_array_equal(np.array(w), last)


def test_the_best_epoch_so_far_is_reported_after_each_epoch(caplog):
    script = _Scripted([float("nan"), 0.9, 0.7, 0.8, 0.6])
    best = BestWeights("val_loss", epochs=5)
    with caplog.at_level("INFO", logger="terrabeam.train"):
        _model(ema=False).fit(
            *_data(), epochs=5, validation_data=_data(1), callbacks=[script, best], verbose=0
        )
    assert best.messages == [
        "Epoch 1/5: val_loss nan; no epoch has a finite one yet.",
        "Epoch 2/5: val_loss 0.9000, the best so far.",
        "Epoch 3/5: val_loss 0.7000, the best so far.",
        "Epoch 4/5: val_loss 0.8000; best so far: epoch 3 (0.7000).",
        "Epoch 5/5: val_loss 0.6000, the best so far.",
    ]
    assert [m for m in caplog.messages if m.startswith("Epoch")] == best.messages
    assert best.best_epoch == 4 and best.diverged_epoch is None


def test_a_training_loss_that_is_not_finite_stops_the_fit_and_keeps_the_best_epoch():
    script = _Scripted([0.9, 0.5, 0.7, 0.4, 0.3], losses=[1.0, 0.8, float("inf"), 0.5, 0.4])
    best = BestWeights("val_loss")
    model = _model(ema=False)
    history = model.fit(*_data(), epochs=5, validation_data=_data(1), callbacks=[script, best], verbose=0)
    assert len(history.history["loss"]) == 3 and best.diverged_epoch == 2
    assert best.best_epoch == 1
    for w, kept in zip(model.weights, script.weights[1]):
        np.testing.assert_array_equal(np.array(w), kept)
