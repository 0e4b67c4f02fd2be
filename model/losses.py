"""Segmentation losses: cross-entropy with label smoothing or bootstrapping, focal, Dice and Lovász terms.

`SegmentationLoss` takes sparse labels (batch, H, W) with LABEL_NODATA where there is no label and
softmax probabilities (batch, H, W, classes), and returns one loss per pixel (0 where there is no
label, scaled so that the batch mean is the mean over labelled pixels, as Keras' `ignore_class` does),
so that Keras' per-pixel sample weights (class weights, 0 for nodata) apply to it as to Keras' own
cross-entropy.

- `label_smoothing` ε: the target is (1 - ε)·one-hot + ε/classes. The labels are ESA WorldCover
  remapped to other classes, so a share of them is wrong; smoothing stops the model from chasing those
  pixels with ever larger logits.
- `bootstrap` β (soft bootstrapping, Reed et al. 2015): the target is (1 - β)·label + β·prediction
  (without gradient through the prediction), so the model may disagree with labels it finds implausible.
- `focal_gamma` γ (Lin et al. 2017): each pixel's cross-entropy is scaled by (1 - p_label)^γ,
  down-weighting the pixels that are already right.
- `region` `dice` or `lovasz` adds, with weight `region_weight`, a loss over the batch's pixels that
  targets overlap directly: soft Dice (1 - mean over classes of 2|P∩Y| / (|P| + |Y|)) or the
  Lovász-softmax extension of the Jaccard loss (Berman et al. 2018). These are not sums over pixels:
  the batch value is spread evenly over the labelled pixels.

The class is registered for Keras serialization, so a saved model (keras/model.keras, which records
its compile settings) loads again for `--init-model` and evaluation.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from model.vocabulary import REGION_TERMS
from transforms.contracts.schema import LABEL_NODATA

# Probabilities are clipped away from 0 before the log, as Keras' own cross-entropy does.
EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="terrabeam")
class SegmentationLoss(keras.losses.Loss):
    """Per-pixel cross-entropy (optionally smoothed, bootstrapped or focal) plus an optional overlap term."""

    def __init__(
        self,
        num_classes: int,
        *,
        label_smoothing: float = 0.0,
        bootstrap: float = 0.0,
        focal_gamma: float = 0.0,
        region: str = "none",
        region_weight: float = 1.0,
        ignore_class: int = LABEL_NODATA,
        name: str = "segmentation_loss",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if not 0.0 <= label_smoothing < 1.0 or not 0.0 <= bootstrap < 1.0:
            raise ValueError("label_smoothing and bootstrap must lie in [0, 1).")
        if focal_gamma < 0 or region_weight < 0:
            raise ValueError("focal_gamma and region_weight cannot be negative.")
        if region not in REGION_TERMS:
            raise ValueError(f"region must be one of {list(REGION_TERMS)}, got {region!r}.")
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)
        self.bootstrap = float(bootstrap)
        self.focal_gamma = float(focal_gamma)
        self.region = region
        self.region_weight = float(region_weight)
        self.ignore_class = int(ignore_class)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(y_true, tf.int32)
        if labels.shape.rank == y_pred.shape.rank:  # (batch, H, W, 1) labels
            labels = labels[..., 0]
        usable = tf.logical_and(tf.not_equal(labels, self.ignore_class), labels >= 0)
        usable = tf.logical_and(usable, labels < self.num_classes)
        one_hot = tf.one_hot(tf.where(usable, labels, 0), self.num_classes, dtype=y_pred.dtype)
        probabilities = tf.clip_by_value(y_pred, EPSILON, 1.0 - EPSILON)
        target = one_hot
        if self.label_smoothing:
            target = target * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        if self.bootstrap:
            target = (1.0 - self.bootstrap) * target + self.bootstrap * tf.stop_gradient(probabilities)
        log_p = tf.math.log(probabilities)
        if self.focal_gamma:
            per_class = -target * tf.pow(1.0 - probabilities, self.focal_gamma) * log_p
        else:
            per_class = -target * log_p
        loss = tf.reduce_sum(per_class, axis=-1)
        mask = tf.cast(usable, loss.dtype)
        if self.region != "none" and self.region_weight:
            term = dice_loss if self.region == "dice" else lovasz_softmax_loss
            loss = loss + self.region_weight * term(probabilities, one_hot, usable)
        # As Keras' own `ignore_class`: the mean runs over the labelled pixels only (total / labelled
        # on each of them), so the loss scale does not depend on how much of a batch is nodata.
        share = tf.cast(tf.size(mask), loss.dtype) / tf.maximum(tf.reduce_sum(mask), 1.0)
        return loss * mask * share

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "label_smoothing": self.label_smoothing,
            "bootstrap": self.bootstrap,
            "focal_gamma": self.focal_gamma,
            "region": self.region,
            "region_weight": self.region_weight,
            "ignore_class": self.ignore_class,
        }


def _flat(probabilities: tf.Tensor, one_hot: tf.Tensor, usable: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The batch's pixels as (pixels, classes) probabilities and one-hot labels, both zero where a pixel
    is unlabelled: such a pixel adds nothing to Dice's sums, and with no error it sorts after every
    labelled pixel in Lovász's order (their errors are at least EPSILON), so both terms are those of the
    labelled pixels alone. Masking by multiplication keeps the shapes static, as XLA needs."""
    classes = tf.shape(probabilities)[-1]
    keep = tf.cast(tf.reshape(usable, [-1, 1]), probabilities.dtype)
    p = tf.reshape(probabilities, [-1, classes]) * keep
    y = tf.reshape(one_hot, [-1, classes]) * keep
    return p, y


def dice_loss(
    probabilities: tf.Tensor, one_hot: tf.Tensor, usable: tf.Tensor, smooth: float = 1.0
) -> tf.Tensor:
    """1 - mean over classes of the soft Dice coefficient on the batch's labelled pixels (a scalar).

    `smooth` keeps a class absent from both labels and predictions at Dice 1, and one absent from the
    labels pushes its predicted mass towards 0.
    """
    p, y = _flat(probabilities, one_hot, usable)
    intersection = tf.reduce_sum(p * y, axis=0)
    sizes = tf.reduce_sum(p, axis=0) + tf.reduce_sum(y, axis=0)
    return 1.0 - tf.reduce_mean((2.0 * intersection + smooth) / (sizes + smooth))


# Lovász's order is kept to within 1/LOVASZ_BINS of error: a pixel's weight needs only how many
# foreground and background pixels have larger errors, which counts in bins give without a sort.
LOVASZ_BINS = 1024


def lovasz_softmax_loss(probabilities: tf.Tensor, one_hot: tf.Tensor, usable: tf.Tensor) -> tf.Tensor:
    """Lovász-softmax over the batch's labelled pixels, averaged over the classes present (a scalar).

    Per class: the pixel errors |label - p| in decreasing order, dotted with the gradient of the Jaccard
    loss along that order (the Lovász extension, a tight convex surrogate of 1 - IoU).

    The order is that of the errors in LOVASZ_BINS equal bins, foreground pixels first within a bin,
    instead of a full sort (which took half of the term's time): a foreground pixel's weight is then
    1/union before its bin, and the background pixels of a bin share the bin's change of the Jaccard
    loss evenly. Errors within a bin differ by less than 1/LOVASZ_BINS, so the value is that of the
    exact sort to within that much of each class's loss; the errors are weighed where they lie, so the
    gradient is the weights themselves.
    """
    # Counts in float32 whatever the probabilities' type: bfloat16 holds integers exactly only to 256.
    p, y = (tf.cast(t, tf.float32) for t in _flat(probabilities, one_hot, usable))
    errors = tf.transpose(tf.abs(y - p))  # (classes, pixels)
    labels = tf.transpose(y)
    counted = tf.broadcast_to(tf.cast(tf.reshape(usable, [1, -1]), tf.float32), tf.shape(errors))
    classes = tf.shape(errors)[0]
    # Bin 0 holds the largest errors, so that counts summed along the bins run in decreasing error.
    scaled = (1.0 - tf.stop_gradient(errors)) * LOVASZ_BINS
    bins = tf.cast(tf.clip_by_value(scaled, 0.0, LOVASZ_BINS - 1.0), tf.int32)
    # One slot per (class, bin, foreground or background): counting is one segment sum.
    is_background = tf.cast(tf.reshape(1.0 - labels, [-1]), tf.int32)
    slots = tf.reshape(bins + tf.range(classes)[:, None] * LOVASZ_BINS, [-1]) * 2 + is_background
    counts = tf.math.unsorted_segment_sum(tf.reshape(counted, [-1]), slots, classes * LOVASZ_BINS * 2)
    counts = tf.reshape(counts, [classes, LOVASZ_BINS, 2])
    foreground, background = counts[..., 0], counts[..., 1]
    totals = tf.reduce_sum(foreground, axis=1, keepdims=True)
    # Intersection and union of the pixels ranked before each bin, then after its foreground pixels.
    union_before = totals + tf.cumsum(background, axis=1, exclusive=True)
    intersection_after = totals - tf.cumsum(foreground, axis=1)
    foreground_weight = 1.0 / tf.maximum(union_before, EPSILON)
    background_change = intersection_after / tf.maximum(
        union_before, EPSILON
    ) - intersection_after / tf.maximum(union_before + background, EPSILON)
    background_weight = background_change / tf.maximum(background, 1.0)
    table = tf.reshape(tf.stack([foreground_weight, background_weight], axis=2), [-1])
    weights = tf.reshape(tf.gather(table, slots), tf.shape(errors))
    per_class = tf.reduce_sum(errors * tf.stop_gradient(weights), axis=1)
    present = tf.cast(tf.reshape(totals, [-1]) > 0, per_class.dtype)
    value = tf.reduce_sum(per_class * present) / tf.maximum(tf.reduce_sum(present), 1.0)
    return tf.cast(value, probabilities.dtype)
