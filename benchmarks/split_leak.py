"""What the per-point split's leak was worth: the same demo training scored on each split.

    python -m benchmarks.split_leak [--epochs 2] [--max-minutes 4] [--points-per-class 50]
                                    [--output benchmarks/results/split_leak.json]

Two extractions of the demo scene with the same points (`make demo`'s settings): one with the per-point
split (`--split-block-size 0`), one with the default leak-free split (spatial blocks with a guard band).
The same training recipe runs on each, and each model is scored, as training always does, on its own
validation split. The per-point validation patches overlap training patches (the manifest's measured
overlap says by how much), so its score is partly a score on training pixels; the difference between
the two figures is what the leak inflated. Each extraction's overlap and each model's validation mean
IoU and pixel accuracy go into the results file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
SPLITS = {"per-point": "0", "default": "auto"}


def run(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True)


def measure(workdir: Path, epochs: int, max_minutes: float, points_per_class: int) -> dict:
    results = {}
    for name, block in SPLITS.items():
        data, model = workdir / f"data-{name}", workdir / f"model-{name}"
        run(
            [
                "pipelines.extract",
                "--output",
                str(data),
                "--points-per-class",
                str(points_per_class),
                "--split-block-size",
                block,
            ]
        )
        manifest = json.loads((data / "manifest.json").read_text())
        started = time.perf_counter()
        run(
            [
                "model.train",
                "--data",
                str(data),
                "--output",
                str(model),
                "--epochs",
                str(epochs),
                "--max-minutes",
                str(max_minutes),
                "--seed",
                "0",
            ]
        )
        metrics = json.loads((model / "metrics.json").read_text())
        results[name] = {
            "split": manifest["split"],
            "patches": {s: manifest["splits"][s]["patches"] for s in ("train", "validation")},
            "scored_split": metrics.get("split"),
            "validation_mean_iou": metrics.get("mean_iou"),
            "validation_pixel_accuracy": metrics.get("overall_accuracy"),
            "training_wall_s": round(time.perf_counter() - started, 1),
        }
    leaky, honest = results["per-point"], results["default"]
    return {
        "benchmark": "split_leak",
        "what": "the demo training scored on its own validation split, per-point vs the default split",
        "settings": {"epochs": epochs, "max_minutes": max_minutes, "points_per_class": points_per_class},
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": results,
        "inflation_mean_iou": (
            leaky["validation_mean_iou"] - honest["validation_mean_iou"]
            if leaky["validation_mean_iou"] is not None and honest["validation_mean_iou"] is not None
            else None
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-minutes", type=float, default=4.0)
    parser.add_argument("--points-per-class", type=int, default=50)
    parser.add_argument("--output", default=str(RESULTS / "split_leak.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="terrabeam-split-leak-") as tmp:
        report = measure(Path(tmp), args.epochs, args.max_minutes, args.points_per_class)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
