"""Segmentation losses: cross-entropy variants against hand-computed values, Dice and Lovász on known
cases, nodata handling, and Keras serialization of a compiled model that uses them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.train_throughput import sorted_lovasz_softmax_loss
from model.architecture import build_model
from model.losses import SegmentationLoss, dice_loss, lovasz_softmax_loss
from transforms.contracts.schema import LABEL_NODATA


def _batch(seed: int = 0, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, (2, 4, 5)).astype(np.int32)
    labels[0, 0, :2] = LABEL_NODATA
    logits = rng.normal(size=(2, 4, 5, classes)).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return labels, probabilities


def _per_pixel(loss: SegmentationLoss, labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """Each pixel's loss, undoing the labelled-pixel scaling (the mean is over labelled pixels)."""
    share = labels.size / (labels != LABEL_NODATA).sum()
    return loss.call(tf.constant(labels, tf.float32), tf.constant(probabilities)).numpy() / share


def test_plain_loss_is_keras_sparse_cross_entropy_with_nodata_ignored():
    labels, probabilities = _batch()
    weights = np.where(labels == LABEL_NODATA, 0.0, 1.0).astype(np.float32)
    ours = SegmentationLoss(3)(labels, probabilities, sample_weight=weights)
    keras_ce = keras.losses.SparseCategoricalCrossentropy(ignore_class=LABEL_NODATA)
    expected = keras_ce(labels, probabilities, sample_weight=weights)
    assert float(ours) == pytest.approx(float(expected), rel=1e-5)
    per_pixel = _per_pixel(SegmentationLoss(3), labels, probabilities)
    assert (per_pixel[labels == LABEL_NODATA] == 0).all()


def test_label_smoothing_bootstrap_and_focal_follow_their_formulas():
    labels, probabilities = _batch(1)
    usable = labels != LABEL_NODATA
    one_hot = np.eye(3)[np.where(usable, labels, 0)]
    log_p = np.log(probabilities)
    smoothed = one_hot * 0.8 + 0.2 / 3
    expected = -(smoothed * log_p).sum(-1)
    got = _per_pixel(SegmentationLoss(3, label_smoothing=0.2), labels, probabilities)
    np.testing.assert_allclose(got[usable], expected[usable], rtol=1e-5)
    target = 0.7 * one_hot + 0.3 * probabilities
    got = _per_pixel(SegmentationLoss(3, bootstrap=0.3), labels, probabilities)
    np.testing.assert_allclose(got[usable], -(target * log_p).sum(-1)[usable], rtol=1e-5)
    focal = -(one_hot * (1 - probabilities) ** 2 * log_p).sum(-1)
    got = _per_pixel(SegmentationLoss(3, focal_gamma=2.0), labels, probabilities)
    np.testing.assert_allclose(got[usable], focal[usable], rtol=1e-5)


def _one_hot_case() -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    labels = np.array([[0, 0, 1, 1, 2, 2]])
    predicted = np.array([[0, 1, 1, 1, 2, 0]])
    return (
        tf.constant(np.eye(3, dtype=np.float32)[predicted]),
        tf.constant(np.eye(3, dtype=np.float32)[labels]),
        tf.constant(np.ones_like(labels, bool)),
    )


def test_lovasz_of_hard_predictions_is_one_minus_the_mean_iou():
    probabilities, one_hot, usable = _one_hot_case()
    # IoU: class 0 1/3 (1 hit, union 3), class 1 2/3, class 2 1/2.
    expected = 1 - np.mean([1 / 3, 2 / 3, 1 / 2])
    assert float(lovasz_softmax_loss(probabilities, one_hot, usable)) == pytest.approx(expected, rel=1e-6)
    assert float(lovasz_softmax_loss(one_hot, one_hot, usable)) == pytest.approx(0.0, abs=1e-7)


def _value_and_gradient(term, probabilities, one_hot, usable):
    with tf.GradientTape() as tape:
        tape.watch(probabilities)
        value = term(probabilities, one_hot, usable)
    return float(value), tape.gradient(value, probabilities).numpy()


def test_lovasz_weighs_the_errors_in_place_as_the_sorted_formulation_does():
    labels, probabilities = _batch(5, classes=4)
    probabilities = tf.constant(probabilities)
    usable = tf.constant(labels != LABEL_NODATA)
    one_hot = tf.one_hot(tf.where(usable, labels, 0), 4)
    value, gradient = _value_and_gradient(lovasz_softmax_loss, probabilities, one_hot, usable)
    exact_value, exact_gradient = _value_and_gradient(
        sorted_lovasz_softmax_loss, probabilities, one_hot, usable
    )
    assert value == pytest.approx(exact_value, rel=1e-6)
    assert np.abs(exact_gradient).max() > 0
    # 20 pixels: no two errors of a class share a bin, so the order is the sort's.
    np.testing.assert_allclose(gradient, exact_gradient, atol=1e-7)


def test_lovasz_in_bins_keeps_the_sorted_value_and_gradient_on_a_full_batch():
    """A training batch: 16,384 pixels of 9 classes share 1,024 bins a class, a tenth unlabelled."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 9, (64, 16, 16))
    usable = rng.random(labels.shape) > 0.1
    logits = rng.normal(size=(*labels.shape, 9)).astype(np.float32) * 2
    probabilities = tf.nn.softmax(tf.constant(logits))
    one_hot = tf.one_hot(labels, 9)
    value, gradient = _value_and_gradient(lovasz_softmax_loss, probabilities, one_hot, tf.constant(usable))
    exact_value, exact_gradient = _value_and_gradient(
        sorted_lovasz_softmax_loss, probabilities, one_hot, tf.constant(usable)
    )
    assert value == pytest.approx(exact_value, rel=1e-4)
    assert np.linalg.norm(gradient - exact_gradient) < 0.01 * np.linalg.norm(exact_gradient)
    assert (gradient[~usable] == 0).all()
    # Unlabelled pixels weigh nothing: dropping them from the batch changes nothing.
    kept = _value_and_gradient(
        lovasz_softmax_loss,
        tf.boolean_mask(probabilities, usable)[None],
        tf.boolean_mask(one_hot, usable)[None],
        tf.ones((1, int(usable.sum())), bool),
    )
    assert kept[0] == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(kept[1][0], gradient[usable], atol=1e-9)


def test_dice_is_zero_when_right_and_counts_only_labelled_pixels():
    probabilities, one_hot, usable = _one_hot_case()
    assert float(dice_loss(one_hot, one_hot, usable)) == pytest.approx(0.0, abs=1e-6)
    wrong = float(dice_loss(probabilities, one_hot, usable))
    assert 0.2 < wrong < 0.6
    # The wrong pixels marked unusable: what is left is all right.
    right = tf.constant([[True, False, True, True, True, False]])
    assert float(dice_loss(probabilities, one_hot, right)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("region", ["dice", "lovasz"])
def test_region_terms_add_to_the_cross_entropy_and_train(region):
    labels, probabilities = _batch(2)
    plain = _per_pixel(SegmentationLoss(3), labels, probabilities)
    combined = _per_pixel(SegmentationLoss(3, region=region), labels, probabilities)
    usable = labels != LABEL_NODATA
    extra = combined[usable] - plain[usable]
    assert np.allclose(extra, extra[0]) and extra[0] > 0  # one batch value spread over labelled pixels
    assert (combined[~usable] == 0).all()
    keras.utils.set_random_seed(0)
    model = build_model("unet", 2, 3, filters=4, depth=1)
    model.compile(keras.optimizers.Adam(1e-2), loss=SegmentationLoss(3, region=region))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (8, 8, 8))
    x = np.stack([y * 2.0, -y * 1.0], -1).astype(np.float32) + rng.normal(0, 0.3, (8, 8, 8, 2))
    losses = [float(model.train_on_batch(x, y)) for _ in range(20)]
    assert np.isfinite(losses).all() and losses[-1] < 0.8 * losses[0]


def test_compiled_model_with_the_loss_saves_and_loads(tmp_path):
    model = build_model("unet", 2, 3, filters=4, depth=1)
    loss = SegmentationLoss(3, label_smoothing=0.1, bootstrap=0.2, region="lovasz", region_weight=0.5)
    model.compile(keras.optimizers.Adam(1e-3, use_ema=True), loss=loss)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, SegmentationLoss)
    assert loaded.loss.get_config() == loss.get_config()


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="region must be one of"):
        SegmentationLoss(3, region="jaccard")
    with pytest.raises(ValueError, match=r"label_smoothing and bootstrap must lie in \[0, 1\)"):
        SegmentationLoss(3, label_smoothing=1.0)
