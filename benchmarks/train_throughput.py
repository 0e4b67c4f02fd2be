"""Where a training run's time goes: each stage of `model.train` timed, for the default recipe, with
its costlier terms turned off and with XLA-compiled steps, on Google's land-cover patches (2,840
training patches of 16×16×13) or on an extraction (`--data out/demo/data`: the demo's 128×128 patches).

    python -m benchmarks.train_throughput [--data ../shared/data/gcp-landcover/v2_e9b63f3]
                                          [--epochs 1,3] [--variants default,no_overlap_term,...,xla]

Each variant trains in its own process, twice: for the smaller and the larger number of epochs, so that
the fit's fixed part (building and tracing the training and selection steps, the first pass over the
data) and the steady cost of one epoch come apart: epoch = (fit(larger) - fit(smaller)) / (larger -
smaller). Patches per second are the fit records of one steady epoch over its seconds. The variants'
ratios against the default come from the same run, on the same machine. Figures go to
benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.child import run_in_child
from benchmarks.machine import machine
from benchmarks.model_quality import DATA, write_manifest_for
from model.vocabulary import MIXED_BFLOAT16
from transforms.runtime.cpu import BF16_FLAGS, has_native_bfloat16

RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"
# A variant's key that is not a model.train setting: the U-Net built with Keras' own BatchNormalization
# (as the model was before model.architecture.FusedBatchNormalization), to measure the old code.
KERAS_BATCH_NORM = "keras_batch_norm"
# Another: the averaged weights swapped in and the best epoch checkpointed by Keras' own callbacks
# (SwapEMAWeights, ModelCheckpoint: four eager swaps and an HDF5 write each better epoch), as training
# did before model.callbacks.AveragedWeights and BestWeights.
KERAS_CALLBACKS = "keras_callbacks"
# Another: the Lovász term through a full sort of each class's errors, its gradient scattered back
# through the sort (sorted_lovasz_softmax_loss), as before model.losses counted the errors in bins.
SORTED_LOVASZ = "sorted_lovasz"
OLD_CODE = (KERAS_BATCH_NORM, KERAS_CALLBACKS, SORTED_LOVASZ)
# The settings of each variant on top of the defaults (model/config.py). "epochs" is the recipe's length,
# used to project a whole training (the runs themselves are of --epochs).
VARIANTS: dict[str, dict[str, Any]] = {
    # --precision auto: mixed_bfloat16 where the CPU has native bfloat16, float32 elsewhere.
    "default": {},
    # The default recipe of 2026-12-06 as a whole default training ran it: 80 epochs of 16 patches a
    # step at 1e-3, steps compiled with XLA (--xla auto compiled runs of 2,000 steps or more), float32.
    "before": {
        "epochs": 80,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "xla": "on",
        "precision": "float32",
        KERAS_BATCH_NORM: True,
        KERAS_CALLBACKS: True,
        SORTED_LOVASZ: True,
    },
    # The same with traced steps: against "before", what XLA did at 16 a step; against "default", the batch.
    "before_traced": {
        "epochs": 80,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "xla": "off",
        "precision": "float32",
        KERAS_BATCH_NORM: True,
        KERAS_CALLBACKS: True,
        SORTED_LOVASZ: True,
    },
    # The default in float32 whatever the CPU (the default until --precision auto).
    "float32": {"precision": "float32"},
    "no_overlap_term": {"region_loss": "none"},
    "no_weight_averaging": {"ema": 0.0},
    "neither": {"region_loss": "none", "ema": 0.0},
    "xla": {"xla": "on"},
    # Mixed precision (--precision): bfloat16 compute, float32 weights; fast only where the CPU has
    # bf16 instructions.
    "bf16": {"precision": "mixed_bfloat16"},
    # The default with Keras' own BatchNormalization (the model before FusedBatchNormalization).
    "keras_batch_norm": {KERAS_BATCH_NORM: True},
    "float32_keras_batch_norm": {"precision": "float32", KERAS_BATCH_NORM: True},
    # The default with Keras' SwapEMAWeights and ModelCheckpoint.
    "keras_callbacks": {KERAS_CALLBACKS: True},
    # The default with the Lovász term through a full sort.
    "sorted_lovasz": {SORTED_LOVASZ: True},
}


def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A variant's model.train settings other than its epochs, and the recipe's epochs."""
    from model.train import TrainConfig

    rest = dict(settings)
    for key in OLD_CODE:
        rest.pop(key, None)
    epochs = rest.pop("epochs", TrainConfig.__dataclass_fields__["epochs"].default)
    return rest, int(epochs)


def child(manifest_dir: str, settings: dict[str, Any], epochs: int, output: str) -> dict[str, Any]:
    """One training run, its stages timed (wall and this process's CPU seconds)."""
    from model import training
    from model.train import TrainConfig

    if settings.get(KERAS_BATCH_NORM):
        import keras

        from model import architecture

        architecture.FusedBatchNormalization = keras.layers.BatchNormalization  # this child process only
    if settings.get(KERAS_CALLBACKS):
        use_keras_callbacks(training)
    if settings.get(SORTED_LOVASZ):
        from model import losses

        losses.lovasz_softmax_loss = sorted_lovasz_softmax_loss  # this child process only
    settings, _ = split_settings(settings)
    config = TrainConfig(data=manifest_dir, output=output, epochs=epochs, verbose=0, **settings)
    stages: dict[str, dict[str, float]] = {}

    def timed(name: str, step, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        result = step(*args)
        stages[name] = {
            "wall_s": round(time.perf_counter() - wall, 3),
            "cpu_s": round(time.process_time() - cpu, 3),
        }
        return result

    config.validate()
    run = training.start(config)
    data = timed("load_data", training.load_training_data, config)
    model = timed("build_model", training.build_model, config, data)
    fitted = timed("fit", training.fit, config, data, model, run)
    report = timed("score", training.score, data, fitted)
    timed("export", training.export, config, data, fitted, report)
    return {
        "epochs": epochs,
        "epochs_run": fitted.epochs_run,
        "fit_patches": data.fit.count,
        "stages": stages,
        "selection_mean_iou": report.metrics.get("selection", {}).get("mean_iou"),
    }


def use_keras_callbacks(training: Any) -> None:
    """In this child process only, trains with Keras' SwapEMAWeights and ModelCheckpoint in place of
    AveragedWeights and BestWeights (the fit then leaves the last epoch's weights in the model: the
    timed stages after it run on those). BestWeights still runs for its report and its choice of the
    best epoch (what the old code's BestEpoch did), without keeping or writing weights."""
    import keras

    from model.callbacks import AveragedWeights, BestWeights

    ours = training._callbacks

    def keras_callbacks(config: Any, monitor: str, best: BestWeights, ema: float, run: Any) -> list:
        def theirs(callback: keras.callbacks.Callback) -> list[keras.callbacks.Callback]:
            if isinstance(callback, AveragedWeights):
                return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
            if callback is best:  # the checkpoint where BestWeights was, after the averages' swap
                return [
                    keras.callbacks.ModelCheckpoint(
                        best.path, monitor=monitor, save_best_only=True, save_weights_only=True
                    ),
                    best,
                ]
            return [callback]

        callbacks = [c for callback in ours(config, monitor, best, ema, run) for c in theirs(callback)]
        best._make_copies = best._keep = best._restore = lambda: None
        best.path = None
        return callbacks

    training._callbacks = keras_callbacks


def sorted_lovasz_softmax_loss(probabilities: Any, one_hot: Any, usable: Any) -> Any:
    """Berman et al.'s Lovász-softmax as written, and as model.losses computed it before: each class's
    errors sorted (top_k over all pixels), dotted with the Jaccard gradient along the sort, the gradient
    flowing back through the sort."""
    import tensorflow as tf

    keep = tf.cast(tf.reshape(usable, [-1, 1]), probabilities.dtype)
    p = tf.reshape(probabilities, [-1, probabilities.shape[-1]]) * keep
    y = tf.reshape(one_hot, [-1, one_hot.shape[-1]]) * keep
    errors, labels = tf.transpose(tf.abs(y - p)), tf.transpose(y)
    sorted_errors, order = tf.math.top_k(errors, k=tf.shape(errors)[1])
    sorted_labels = tf.gather(labels, order, batch_dims=1)
    totals = tf.reduce_sum(sorted_labels, axis=1, keepdims=True)
    union = totals + tf.cumsum(1.0 - sorted_labels, axis=1)
    jaccard = 1.0 - (totals - tf.cumsum(sorted_labels, axis=1)) / tf.maximum(union, 1e-7)
    gradient = tf.concat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=1)
    per_class = tf.reduce_sum(sorted_errors * tf.stop_gradient(gradient), axis=1)
    present = tf.cast(tf.reshape(totals, [-1]) > 0, per_class.dtype)
    return tf.reduce_sum(per_class * present) / tf.maximum(tf.reduce_sum(present), 1.0)


def run_child(manifest_dir: str, settings: dict[str, Any], epochs: int) -> dict[str, Any]:
    spec = {"manifest": manifest_dir, "settings": settings, "epochs": epochs}
    return run_in_child("benchmarks.train_throughput", spec, f"training with {settings} for {epochs} epochs")


def summarize(short: dict[str, Any], long: dict[str, Any], recipe_epochs: int) -> dict[str, Any]:
    """The fit's fixed part and one steady epoch, from runs of two lengths, and a whole training of the
    recipe's epochs projected from them (fixed part + epochs × one epoch)."""
    extra = long["epochs_run"] - short["epochs_run"]
    fit_short, fit_long = short["stages"]["fit"], long["stages"]["fit"]
    epoch_s = (fit_long["wall_s"] - fit_short["wall_s"]) / extra
    epoch_cpu_s = (fit_long["cpu_s"] - fit_short["cpu_s"]) / extra
    fixed_s = fit_short["wall_s"] - short["epochs_run"] * epoch_s
    return {
        "epoch_s": round(epoch_s, 2),
        "epoch_cpu_s": round(epoch_cpu_s, 2),
        "fit_fixed_s": round(fixed_s, 2),
        "patches_per_s": round(long["fit_patches"] / epoch_s, 1),
        "patches_per_cpu_s": round(long["fit_patches"] / epoch_cpu_s, 1),
        "recipe_epochs": recipe_epochs,
        "whole_training_s": round(fixed_s + recipe_epochs * epoch_s, 1),
        "whole_training_cpu_s": round(
            fit_short["cpu_s"] - short["epochs_run"] * epoch_cpu_s + recipe_epochs * epoch_cpu_s, 1
        ),
        "export_s": long["stages"]["export"]["wall_s"],
        "load_data_s": long["stages"]["load_data"]["wall_s"],
        "score_s": long["stages"]["score"]["wall_s"],
    }


# The summary's times that speedups() compares between variants.
TIMED_FIGURES = ("epoch_s", "epoch_cpu_s", "whole_training_s", "whole_training_cpu_s")


def speedups(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each variant's steady epoch and projected whole training against the default's, in wall and in
    CPU seconds (the CPU figure is the steadier one on a shared machine); with "before" measured, the
    default's whole training against it, both over the recipe before's epochs (the same training)."""
    base = results.get("default", {}).get("summary")
    if not base:
        return {}
    ratios = {
        f"{figure.removesuffix('_s')}_speedup_vs_default": {
            name: round(base[figure] / r["summary"][figure], 2)
            for name, r in results.items()
            if "summary" in r
        }
        for figure in TIMED_FIGURES
    }
    before = results.get("before", {}).get("summary")
    if before:
        # The same training: the default projected to the recipe before's epochs, whatever its own.
        same = at_epochs(base, before["recipe_epochs"])
        ratios["default_vs_before"] = {
            figure: round(before[figure] / same[figure], 2) for figure in TIMED_FIGURES
        }
    return ratios


def at_epochs(summary: dict[str, Any], epochs: int) -> dict[str, Any]:
    """A variant's summary with its whole training projected to `epochs` instead of its recipe's."""
    extra = epochs - summary["recipe_epochs"]
    return {
        **summary,
        "recipe_epochs": epochs,
        "whole_training_s": summary["whole_training_s"] + extra * summary["epoch_s"],
        "whole_training_cpu_s": summary["whole_training_cpu_s"] + extra * summary["epoch_cpu_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput", description=__doc__)
    parser.add_argument("--data", default=str(DATA), help="Google's land-cover patches (TFRecord folders)")
    parser.add_argument("--epochs", default="1,3", help="the two run lengths, smaller first")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        with tempfile.TemporaryDirectory() as work:
            result = child(spec["manifest"], spec["settings"], spec["epochs"], str(Path(work) / "model"))
        Path(spec["out"]).write_text(json.dumps(result))
        return 0

    data = Path(args.data)
    extraction = (data / "manifest.json").is_file()  # e.g. the demo's out/demo/data (128×128 patches)
    if not extraction and not (data / "training").is_dir():
        parser.error(
            f"--data {data} has neither a manifest.json nor a training/ folder of TFRecords: pass an "
            "extraction or Google's land-cover patches."
        )
    short_epochs, long_epochs = (int(e) for e in args.epochs.split(","))
    if not 0 < short_epochs < long_epochs:
        parser.error("--epochs takes two run lengths, smaller first, e.g. 1,3")
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"--variants: {unknown} are not among {list(VARIANTS)}")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work:
        manifest_dir = str(data) if extraction else write_manifest_for(data, Path(work) / "data")
        for name in names:
            _, recipe_epochs = split_settings(VARIANTS[name])
            if VARIANTS[name].get("precision") == MIXED_BFLOAT16 and not has_native_bfloat16():
                results[name] = {"settings": VARIANTS[name], "skipped": f"the CPU has none of {BF16_FLAGS}"}
                continue
            runs = [run_child(manifest_dir, VARIANTS[name], e) for e in (short_epochs, long_epochs)]
            results[name] = {
                "settings": VARIANTS[name],
                "runs": runs,
                "summary": summarize(*runs, recipe_epochs),
            }
            print(name, json.dumps(results[name]["summary"]), flush=True)
    summary = speedups(results)
    report = {
        "benchmark": "train_throughput",
        "data": f"{data}: an extraction"
        if extraction
        else f"{data.name}: Google's land-cover sample, 16×16 patches of 13 Sentinel-2 bands",
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "epochs": [short_epochs, long_epochs],
        "summary": summary,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
