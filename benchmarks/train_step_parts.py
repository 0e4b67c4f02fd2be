"""Where one training step's time goes: the default model on one batch of Google's land-cover patches,
each part timed alone as a compiled TensorFlow function, at the batch sizes given.

    python -m benchmarks.train_step_parts [--data ../shared/data/gcp-landcover/v2_e9b63f3]
                                          [--batch-sizes 16,64] [--precisions float32,mixed_bfloat16]

Parts, each including the ones before it unless it says "alone": the input pipeline alone (one batch
shuffled, weighted and augmented, as `make_batches` serves it), the forward pass, the forward pass with
the loss, the loss alone, gradients with the plain cross-entropy, gradients with the default loss
(its Lovász term), and the whole step (the optimizer's update and weight average). Wall and CPU
milliseconds a step (the mean of --repeats calls after a warm-up), and the model's multiply-adds a
patch, so the step's arithmetic rate says how much of a step is the model. Precision mixed_bfloat16
(Keras' dtype policy, bfloat16 compute with float32 weights) is measured where the CPU has bfloat16
instructions (avx512_bf16 or amx_bf16) and skipped elsewhere. Each (precision) runs in its own process,
since Keras' dtype policy is global. Figures go to benchmarks/results/train_step_parts.json.
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
from benchmarks.model_quality import DATA, whole_numbers, write_manifest_for
from transforms.runtime.cpu import BF16_FLAGS, has_native_bfloat16

RESULTS = Path(__file__).resolve().parent / "results" / "train_step_parts.json"
PRECISIONS = ("float32", "mixed_bfloat16")


def multiply_adds(model: Any, size: int) -> int:
    """Multiply-adds of one forward pass over a size×size patch: its convolutions and transposed
    convolutions (the rest is a few operations a pixel). The model takes any tile size, so the layers'
    output sizes come from one pass of a zero patch."""
    import keras
    import numpy as np

    convolutions = [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))
    ]
    probe = keras.Model(model.input, [layer.output for layer in convolutions])
    outputs = probe(np.zeros((1, size, size, model.input.shape[-1]), np.float32))
    total = 0
    for layer, output in zip(convolutions, outputs):
        kh, kw = layer.kernel_size
        per_output_pixel = kh * kw * layer.input.shape[-1] * layer.filters
        if isinstance(layer, keras.layers.Conv2DTranspose):  # each output pixel meets one kernel tap
            per_output_pixel //= kh * kw
        total += per_output_pixel * int(output.shape[1]) * int(output.shape[2])
    return total


def child(manifest_dir: str, batch_sizes: list[int], repeats: int) -> dict[str, Any]:
    """The parts of a step at each batch size, in this process's dtype policy."""
    import keras

    results: dict[str, Any] = {}
    for batch in batch_sizes:
        results[str(batch)] = parts_of_a_step(manifest_dir, batch, repeats)
        keras.backend.clear_session()
    return results


def parts_of_a_step(manifest_dir: str, batch: int, repeats: int) -> dict[str, Any]:
    """The default model and loss of model.train on one batch, each part of its step timed."""
    import keras
    import tensorflow as tf

    from model import training
    from model.dataset import make_batches
    from model.losses import SegmentationLoss
    from model.train import TrainConfig

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(data=manifest_dir, output=out, batch_size=batch, verbose=0)
        config.validate()
        training.start(config)
        data = training.load_training_data(config)
        model = training.build_model(config, data)
    batches = make_batches(
        data.fit.patches, batch_size=batch, class_weights=data.class_weights, shuffle=True,
        augment_patches=True, shuffle_buffer=1000, seed=0, drop_remainder=True,
    )  # fmt: skip
    x, y, w = next(iter(batches))
    classes = len(data.classes)
    full = SegmentationLoss(classes, label_smoothing=config.label_smoothing, region=config.region_loss)
    plain = SegmentationLoss(classes, label_smoothing=config.label_smoothing, region="none")
    optimizer = keras.optimizers.Adam(config.learning_rate, use_ema=True, ema_momentum=config.ema)
    optimizer.build(model.trainable_variables)
    probabilities = model(x, training=True)

    def gradients(loss: Any) -> Any:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True), w)
        return tape.gradient(value, model.trainable_variables)

    def step() -> None:
        optimizer.apply(gradients(full), model.trainable_variables)

    parts = {
        "forward": lambda: model(x, training=True),
        "forward_and_loss": lambda: full(y, model(x, training=True), w),
        "loss_alone": lambda: full(y, probabilities, w),
        "gradients_crossentropy": lambda: gradients(plain),
        "gradients_default_loss": lambda: gradients(full),
        "whole_step": step,
    }
    timed: dict[str, dict[str, float]] = {"input_pipeline_alone": _time_pipeline(batches, repeats)}
    for name, part in parts.items():
        timed[name] = _time(tf.function(part), repeats)
    size = int(x.shape[1])
    macs = multiply_adds(model, size)
    step_cpu = timed["whole_step"]["cpu_ms"] / 1000
    return {
        "patch_size": size,
        "multiply_adds_per_patch": macs,
        # A training step is about 3 forward passes of arithmetic (forward, and two for the gradients).
        "step_gflop_per_cpu_s": round(3 * 2 * macs * batch / step_cpu / 1e9, 1),
        "patches_per_cpu_s": round(batch / step_cpu, 1),
        "parts": timed,
    }


def _time(function: Any, repeats: int) -> dict[str, float]:
    for _ in range(3):
        function()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        function()
    return {
        "wall_ms": round(1000 * (time.perf_counter() - wall) / repeats, 2),
        "cpu_ms": round(1000 * (time.process_time() - cpu) / repeats, 2),
    }


def _time_pipeline(batches: Any, repeats: int) -> dict[str, float]:
    iterator = iter(batches.repeat())
    return _time(lambda: next(iterator), repeats)


def run_child(manifest_dir: str, precision: str, batch_sizes: list[int], repeats: int) -> dict[str, Any]:
    spec = {"manifest": manifest_dir, "precision": precision, "batch_sizes": batch_sizes, "repeats": repeats}
    return run_in_child("benchmarks.train_step_parts", spec, f"the {precision} step parts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step_parts", description=__doc__)
    parser.add_argument("--data", default=str(DATA), help="Google's land-cover patches (TFRecord folders)")
    parser.add_argument("--batch-sizes", default="16,64")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help=f"of {', '.join(PRECISIONS)}")
    parser.add_argument("--repeats", type=int, default=40, help="timed calls of each part")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import keras

        spec = json.loads(args.child)
        keras.mixed_precision.set_global_policy(spec["precision"])
        result = child(spec["manifest"], spec["batch_sizes"], spec["repeats"])
        Path(spec["out"]).write_text(json.dumps(result))
        return 0
    data = Path(args.data)
    if not (data / "training").is_dir():
        parser.error(f"--data {data} has no training/ folder of TFRecords: pass Google's land-cover patches.")
    batch_sizes = whole_numbers("--batch-sizes", args.batch_sizes)
    precisions = [p for p in args.precisions.split(",") if p]
    unknown = [p for p in precisions if p not in PRECISIONS]
    if not batch_sizes or unknown:
        parser.error(f"--batch-sizes takes whole numbers; --precisions takes {', '.join(PRECISIONS)}.")
    has_bf16 = has_native_bfloat16()
    report: dict[str, Any] = {
        "benchmark": "train_step_parts",
        "data": f"{data.name}: Google's land-cover sample, 16×16 patches of 13 Sentinel-2 bands",
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": "python -m benchmarks.train_step_parts "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "precisions": {},
    }
    with tempfile.TemporaryDirectory() as work:
        manifest_dir = write_manifest_for(data, Path(work) / "data")
        for precision in precisions:
            if precision == "mixed_bfloat16" and not has_bf16:
                report["precisions"][precision] = {"skipped": f"the CPU has none of {', '.join(BF16_FLAGS)}"}
                continue
            report["precisions"][precision] = run_child(manifest_dir, precision, batch_sizes, args.repeats)
            print(precision, json.dumps(report["precisions"][precision]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
