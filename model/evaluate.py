"""Evaluation: pixel confusion matrix, accuracy and IoU on a split, and a confusion-matrix picture.

    python -m model.evaluate --model out/demo/model --data out/demo/data [--split validation]

`--tta` averages each prediction over the 8 flips/rotations of the input (transforms/geometry/tta.py).
Counts every usable pixel (label not NODATA, not masked) of the split; in classification mode every
usable patch. IoU of class c = TP / (TP + FP + FN); the mean IoU averages the classes that occur in
the labels or the predictions (a class absent from both has no IoU, reported as null).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from model.errors import ModelError
from transforms.contracts.label_scheme import LabelScheme
from transforms.contracts.schema import LABEL_NODATA
from transforms.io.files import write_json
from transforms.runtime.command import CommandParser, quiet_start

# TensorFlow and Keras load when the evaluation runs, not for --help.
if TYPE_CHECKING:
    import keras
    import tensorflow as tf


def confusion_matrix(
    model: keras.Model, batches: tf.data.Dataset, num_classes: int, *, tta: bool = False
) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = label, columns = prediction, over usable pixels.

    With `tta`, each prediction is the mean over the 8 flips/rotations of the input (transforms.geometry.tta).
    """
    import tensorflow as tf

    from transforms.geometry.tta import predict_with_tta

    matrix = np.zeros((num_classes, num_classes), np.int64)
    probabilities = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    for element in batches:
        inputs, labels = element[0], element[1]
        if tta:
            averaged = predict_with_tta(lambda x: probabilities(tf.constant(x)).numpy(), inputs.numpy())
            predicted = np.argmax(averaged, axis=-1)
        else:
            predicted = tf.argmax(probabilities(inputs), axis=-1, output_type=tf.int32).numpy()
        matrix += pixel_confusion(labels.numpy(), predicted, num_classes)
    return matrix


def pixel_confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts of (label, prediction) over the usable pixels: the label not
    NODATA and a class of the scheme."""
    usable = (labels != LABEL_NODATA) & (labels >= 0) & (labels < num_classes)
    counts = np.bincount(labels[usable] * num_classes + predicted[usable], minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def summarize(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Overall accuracy, per-class IoU / precision / recall, mean IoU, and the matrix itself."""
    matrix = np.asarray(matrix, np.int64)
    tp = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    union = support + predicted - tp
    total = int(matrix.sum())

    def ratio(num: np.ndarray, den: np.ndarray) -> list[float | None]:
        return [round(float(n / d), 6) if d else None for n, d in zip(num, den)]

    iou = ratio(tp, union)
    present = [v for v in iou if v is not None]
    return {
        "pixels": total,
        "overall_accuracy": round(float(tp.sum() / total), 6) if total else None,
        "mean_iou": round(float(np.mean(present)), 6) if present else None,
        "per_class_iou": dict(zip(classes, iou)),
        "per_class_precision": dict(zip(classes, ratio(tp, predicted))),
        "per_class_recall": dict(zip(classes, ratio(tp, support))),
        "per_class_support": {c: int(n) for c, n in zip(classes, support)},
        "classes": list(classes),
        "confusion_matrix": matrix.tolist(),
    }


def plot_confusion_matrix(matrix: np.ndarray, scheme: LabelScheme, path: str, title: str = "") -> None:
    """A PNG of the matrix: cells shaded by row share (recall), counts written in, class colours on the axes."""
    import tensorflow as tf
    from PIL import Image, ImageDraw, ImageFont

    classes = scheme.names
    matrix = np.asarray(matrix, np.int64)
    n = len(classes)
    cell, left, top, margin = 56, 170, 170, 20
    width, height = left + n * cell + margin, top + n * cell + margin + 24
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    palette = scheme.palette_rgb()
    draw.text((margin, margin), title or "Confusion matrix (pixels)", fill="black", font=font)
    draw.text((margin, margin + 16), "rows: label   columns: prediction", fill="gray", font=font)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    for i, name in enumerate(classes):
        colour = palette[i]
        y = top + i * cell
        draw.rectangle([left - 14, y + cell // 2 - 5, left - 4, y + cell // 2 + 5], fill=colour)
        draw.text((margin, y + cell // 2 - 6), name, fill="black", font=font)
        # Column headings, written sideways so that long class names fit.
        label = Image.new("RGB", (top - 60, 14), "white")
        ImageDraw.Draw(label).text((0, 0), name, fill="black", font=font)
        x = left + i * cell
        image.paste(label.rotate(90, expand=True), (x + cell // 2 - 7, 40))
        draw.rectangle([x + cell // 2 - 5, top - 14, x + cell // 2 + 5, top - 4], fill=colour)
        for j in range(n):
            level = int(255 * (1 - share[i, j]))
            x0, y0 = left + j * cell, top + i * cell
            outline, width = ((0, 0, 0), 2) if i == j else ((200, 200, 200), 1)
            draw.rectangle(
                [x0, y0, x0 + cell, y0 + cell], fill=(level, level, 255), outline=outline, width=width
            )
            text = str(int(matrix[i, j]))
            draw.text((x0 + 4, y0 + cell // 2 - 6), text, fill="black" if level > 110 else "white", font=font)
    accuracy = np.trace(matrix) / matrix.sum() if matrix.sum() else 0.0
    draw.text((left, top + n * cell + 6), f"overall accuracy {accuracy:.3f}", fill="black", font=font)
    with tf.io.gfile.GFile(path, "wb") as f:
        image.save(f, format="PNG")


def evaluate_model_dir(
    model_dir: str, data: str, split: str = "validation", batch_size: int = 16, *, tta: bool = False
) -> dict:
    """Evaluate a trained model folder on a split of an extraction (bands and classes must match).

    `tta` averages each prediction over the 8 flips/rotations of the input (8 model calls per batch).
    """
    from model.dataset import (
        PatchReader,
        check_data_matches_model,
        load_data_manifest,
        make_batches,
        manifest_compression,
        read_patches,
    )
    from model.export import load_keras_model, load_model_metadata

    info = load_model_metadata(model_dir)
    manifest = load_data_manifest(data)
    schema = check_data_matches_model(info, manifest)
    files = manifest["splits"].get(split, {}).get("files", [])
    if not files:
        raise ModelError(
            f"The data at {data!r} has no {split!r} split; choose one of {list(manifest['splits'])}."
        )
    model = load_keras_model(model_dir)
    reader = PatchReader(schema, len(info["classes"]), mode=info["mode"])
    patches = read_patches(files, reader, compression=manifest_compression(manifest))
    batches = make_batches(patches, batch_size=batch_size)
    matrix = confusion_matrix(model, batches, len(info["classes"]), tta=tta)
    return {**summarize(matrix, info["classes"]), "split": split, "tta": tta}


def run(argv: Sequence[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)
    parser = CommandParser(
        "model.evaluate",
        "Evaluate a model folder on a split of an extraction: pixel confusion matrix, overall accuracy, "
        "per-class and mean IoU (printed as JSON; all of it with --output).",
        usage="%(prog)s --model MODEL_DIR --data DATA [options]",
    )
    inputs = parser.add_argument_group("model and data")
    inputs.add_argument(
        "--model", metavar="MODEL_DIR", required=True, help="Model folder written by `python -m model.train`."
    )
    inputs.add_argument("--data", required=True, help="Folder with manifest.json (local or gs://).")
    inputs.add_argument("--split", default="validation", help="Split of the manifest to evaluate on.")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--tta",
        action="store_true",
        help="Average each prediction over the 8 flips/rotations of the input (8x the model calls).",
    )
    evaluation.add_argument(
        "--output", default=None, help="Write the metrics JSON here (default: stdout only)."
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad option that argparse reported (2)
        return e.code if isinstance(e.code, int) else 2
    try:
        metrics = evaluate_model_dir(args.model, args.data, args.split, tta=args.tta)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.output:
        write_json(args.output, metrics)
    print(
        json.dumps(
            {k: metrics[k] for k in ("pixels", "overall_accuracy", "mean_iou", "per_class_iou")}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(run())
