"""Ablation of model.train's levers on real Earth Engine patches, under the honest protocol.

    python -m benchmarks.model_ablation [--configs baseline,cosine-ema,...] [--seeds 0,1,2] [--jobs 2]

Each configuration is a set of model.train settings, spelled out in full (not model.train's defaults,
which change with the results). Every (configuration, seed) run trains one model with
`benchmarks.model_quality.fcn_run`: it fits on the `training` split minus a selection carve, selects
its epoch on the carve, and is scored once on the `validation` split, plain and with test-time
augmentation (8 flips/rotations). Decisions are taken on the selection carve's mean IoU, never on the
validation split, so the validation figure of the winner stays honest.

Budgets are epochs, not minutes, so runs are comparable on a shared machine; wall and CPU seconds are
recorded beside them. Runs go seed by seed (all configurations for seed 0, then seed 1, ...), `--jobs`
at a time in child processes, and each result is written to benchmarks/results/model_ablation.json and
.md as it arrives; a rerun skips the runs already there, so a partial ablation is usable and resumable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from benchmarks.model_quality import (
    DATA,
    RESULTS,
    prediction_cost_ratio,
    summarize_runs,
    write_manifest_for,
)

# The recipe before this ablation: learning rate halved on plateaus of the selection loss, early
# stopping (patience 6, at most 200 epochs), plain class-weighted cross-entropy, raw bands only.
BASELINE: dict[str, Any] = {
    "schedule": "plateau",
    "epochs": 200,
    "ema": 0.0,
    "loss": "crossentropy",
    "region_loss": "none",
    "label_smoothing": 0.0,
    "bootstrap": 0.0,
    "spectral_indices": "none",
    "precision": "float32",  # every configuration before mixed precision ran in float32
}
# Epochs of a fixed schedule: the budget of the "whole budget" lever (about 5 minutes of the 15 on
# 2 quiet cores, ~7 s an epoch; docs/performance.md has the measured wall time).
EPOCHS = 40

CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    # Using the whole budget: a schedule over a fixed number of epochs, and weight averaging.
    "cosine": {"schedule": "cosine", "epochs": EPOCHS},
    "cosine-ema": {"schedule": "cosine", "epochs": EPOCHS, "ema": 0.99},
    "cosine-ema-80": {"schedule": "cosine", "epochs": 80, "ema": 0.99},
    # Robustness to label noise.
    "label-smoothing": {"label_smoothing": 0.1},
    "bootstrap": {"bootstrap": 0.2},
    # Spectral indices from named bands, computed inside the model.
    "indices": {"spectral_indices": "auto"},
    # Losses aimed at IoU.
    "lovasz": {"region_loss": "lovasz"},
    "dice": {"region_loss": "dice"},
    "focal": {"loss": "focal"},
    # Tuning beyond the listed levers, also decided on the selection carve.
    "class-weight-1": {"class_weight_power": 1.0},
    "class-weight-0.25": {"class_weight_power": 0.25},
    "class-weight-0": {"class_weight_power": 0.0},
    "label-smoothing-0": {"label_smoothing": 0.0},
    "label-smoothing-0.2": {"label_smoothing": 0.2},
    "lr-4e-3": {"learning_rate": 4e-3},  # batches of 64 at the linear-scaling rule's rate (16 at 1e-3)
    "lr-3e-3": {"learning_rate": 3e-3},  # between the square-root (2e-3) and linear (4e-3) rules' rates
    # The recipe these levers chose (model.train's defaults of 2026-12-06), spelled out: the base of the
    # speed levers below (python -m benchmarks.model_ablation --configs recipe-1206+xla-off,...).
    "recipe-1206": {
        "schedule": "cosine",
        "epochs": 80,
        "ema": 0.99,
        "region_loss": "lovasz",
        "label_smoothing": 0.1,
        "spectral_indices": "auto",
        "batch_size": 16,
        "learning_rate": 1e-3,
    },
    # Speed: steps compiled by XLA or not, 4x the patches a step at twice the rate (Adam, square-root
    # scaling), half the epochs.
    "xla-off": {"xla": "off"},
    "batch-64": {"batch_size": 64, "learning_rate": 2e-3},
    "batch-32": {"batch_size": 32, "learning_rate": 1.4e-3},  # twice the steps of batch-64, same rule
    "epochs-40": {"epochs": 40},
    # The time the faster steps saved, spent on training longer (about 11 minutes on 2 cores).
    "epochs-160": {"epochs": 160},
    # Quality levers on top of the faster recipe: band jitter (--radiometric-augmentation), a wider net.
    "radiometric": {"radiometric_augmentation": 0.05},
    "radiometric-strong": {"radiometric_augmentation": 0.1},
    "filters-48": {"filters": 48},
    "filters-16": {"filters": 16},  # members of an ensemble at a fraction of the prediction cost
    "filters-24": {"filters": 24},
    "filters-36": {"filters": 36},  # about 1.27x the multiply-adds: inside #26's 1.5x prediction cost
    # A third pooling: context from 8x8 blocks (about 1.4x the multiply-adds a pixel).
    "depth-3": {"depth": 3},
    # The U-Net's spatial dropout of its bottom block (0.1 by default): none, or more for unseen places.
    "dropout-0": {"dropout": 0.0},
    "dropout-0.3": {"dropout": 0.3},
    # A longer averaging window (about 330 steps instead of 100; the longest a default run allows is a
    # tenth of its 3,520 steps).
    "ema-997": {"ema": 0.997},
    # Decoupled weight decay of the kernels (AdamW), for places the model has not seen.
    "weight-decay": {"weight_decay": 0.05},
    # Mixed precision (bfloat16 arithmetic, float32 weights), scored and exported in float32.
    "bf16": {"precision": "mixed_bfloat16"},
}


def settings_of(name: str) -> dict[str, Any]:
    """The full settings of a configuration; `a+b` combines configurations (later ones win)."""
    settings = dict(BASELINE)
    for part in name.split("+"):
        if part not in CONFIGS:
            raise ValueError(f"Unknown configuration {part!r}; choose from {sorted(CONFIGS)} (join with +).")
        settings.update(CONFIGS[part])
    return settings


def _key(name: str, seed: int) -> str:
    return f"{name}#{seed}"


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    return {"protocol": __doc__.split("\n\n")[2].strip(), "runs": {}}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per configuration: settings, summary over its seeds, and differences from the baseline."""
    by_config: dict[str, list[dict[str, Any]]] = {}
    for run in results["runs"].values():
        by_config.setdefault(run["config"], []).append(run)
    table = {}
    for name, runs in by_config.items():
        runs.sort(key=lambda r: r["seed"])
        table[name] = {
            "settings": runs[0]["settings"],
            "seeds": [r["seed"] for r in runs],
            **summarize_runs(runs),
        }
    return table


def _fmt(s: dict[str, float] | None, digits: int = 3) -> str:
    if s is None:
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}" if s["n"] > 1 else f"{s['mean']:.{digits}f}"


def markdown(results: dict[str, Any], order: list[str]) -> str:
    table = summarize(results)
    base = table.get("baseline")
    names = [n for n in order if n in table] + sorted(n for n in table if n not in order)
    lines = [
        "# Ablation of model.train's levers (honest protocol)",
        "",
        "Data: `../shared/data/gcp-landcover/v2_e9b63f3`. Each run fits on `training` minus a 0.1 selection "
        "carve (by record hash), picks its epoch on the carve, and is scored once on the `validation` "
        "split. Levers are kept or dropped on the **selection** mean IoU (never on validation). mean ± "
        "sample std over the seeds listed; Δ is against the baseline's mean over its seeds. CPU seconds "
        "are of training (the machine's 2 cores are shared: wall seconds are noisy). Prediction cost: "
        "seconds per megapixel of the configuration's model against the baseline's on 8 tiles of 256², "
        "timed in alternating rounds in one process (`benchmarks.model_quality.prediction_cost_ratio`).",
        "Commands (in order; a rerun skips the runs already done): "
        + "; ".join(f"`{c}`" for c in results.get("commands", [])),
        "",
        "| configuration | seeds | selection mIoU | Δ sel. | validation mIoU | Δ val. | accuracy | "
        "+TTA mIoU | epochs (best) | wall s | CPU s | predict cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        row = table[name]

        def delta(key: str, row: dict[str, Any] = row) -> str:
            if base is None or key not in row or key not in base:
                return "–"
            return f"{row[key]['mean'] - base[key]['mean']:+.3f}"

        cost = results.get("prediction_cost", {}).get(name)
        runs = [r for r in results["runs"].values() if r["config"] == name]
        epochs = f"{statistics.fmean(r['epochs_run'] for r in runs):.0f} ({statistics.fmean(r['best_epoch'] for r in runs):.0f})"
        lines.append(
            f"| {name} | {','.join(map(str, row['seeds']))} | {_fmt(row.get('selection_mean_iou'))} | "
            f"{delta('selection_mean_iou')} | {_fmt(row['mean_iou'])} | {delta('mean_iou')} | "
            f"{_fmt(row['overall_accuracy'])} | {_fmt(row.get('tta_mean_iou'))} | {epochs} | "
            f"{row['train_seconds']['mean']:.0f} | {row['cpu_seconds']['mean']:.0f} | "
            + (f"{cost['ratio']:.2f}×" if cost else "–")
            + " |"
        )
    lines += ["", "Settings (in full; every other model.train setting is its default):", ""]
    for name in names:
        lines.append(f"- `{name}`: `{json.dumps(table[name]['settings'], sort_keys=True)}`")
    lines.append("")
    return "\n".join(lines)


def import_runs(other: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Runs of another results file, keyed as ours: an ablation's runs, or model_quality's FCN runs
    (taken as the baseline's: run them with the baseline settings)."""
    if "runs" in other:
        return {key: {**run, "imported_from": source} for key, run in other["runs"].items()}
    found = {}
    for run in other["fcn"]["runs"]:
        run = {**run, "config": "baseline", "settings": settings_of("baseline"), "imported_from": source}
        found[_key("baseline", run["seed"])] = run
    return found


def _child(name: str, seed: int, manifest_dir: str) -> dict[str, Any]:
    """One run in this process (the child side of `--jobs`); its prediction cost is measured once per
    configuration by the parent."""
    from benchmarks.model_quality import fcn_run

    with tempfile.TemporaryDirectory(prefix="ablation-") as tmp:
        return fcn_run(manifest_dir, Path(tmp), settings_of(name), seed)


def child_threads(jobs: int) -> dict[str, str]:
    """TensorFlow's thread pools for one of `jobs` runs at once: the cores shared out, one at least.

    On 2 cores a default training step took the same wall time on one thread as on two (37.7 against
    35.5-37.7 ms) for 60 % of the CPU time, and two runs of two threads each at once slowed each other
    to ~50 ms a step where two single-threaded ones kept ~39 ms."""
    if jobs <= 1:
        return {}  # one run: TensorFlow's own choice
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    return {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads}


def _spawn(name: str, seed: int, manifest_dir: str, jobs: int = 1) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.model_ablation", "--child", name, str(seed), manifest_dir]
    start = time.monotonic()
    env = {**os.environ, **child_threads(jobs)}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed:\n{proc.stderr[-3000:]}")
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    run["process_seconds"] = round(time.monotonic() - start, 1)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.model_ablation", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--configs", default="baseline," + ",".join(c for c in CONFIGS if c != "baseline"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="Runs at once, each in its own process with TensorFlow's threads set to its share of the cores.",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "model_ablation.json")
    parser.add_argument(
        "--import",
        dest="imports",
        type=Path,
        action="append",
        default=[],
        help="Take runs from another results file instead of training them again: a model_ablation "
        "JSON (its runs), or a model_quality.json whose FCN used the baseline settings (as baseline).",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("CONFIG", "SEED", "MANIFEST_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        name, seed, manifest_dir = args.child
        print(json.dumps(_child(name, int(seed), manifest_dir)))
        return 0
    if not (args.data / "training").is_dir():
        print(f"error: {args.data}/training not found; pass --data", file=sys.stderr)
        return 2
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    try:
        for name in configs:
            settings_of(name)
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = load_results(args.output)
    command = "python -m benchmarks.model_ablation " + " ".join(argv if argv is not None else sys.argv[1:])
    earlier = results.get("commands") or ([results.pop("command")] if "command" in results else [])
    results["commands"] = [*earlier, command]
    results["machine"] = f"{os.cpu_count()} CPU cores"
    shown: list[str] = []  # imported configurations are shown, not trained
    for path in args.imports:
        imported = import_runs(json.loads(path.read_text()), path.name)
        for key, run in imported.items():
            results["runs"].setdefault(key, run)
        shown += [run["config"] for run in imported.values()]
    order = list(dict.fromkeys(results.get("order", []) + shown + configs))
    results["order"] = order
    todo = [(n, s) for s in seeds for n in configs if _key(n, s) not in results["runs"]]

    def save() -> None:
        results["summary"] = summarize(results)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(markdown(results, order))

    with tempfile.TemporaryDirectory(prefix="ablation-data-") as tmp:
        manifest_dir = write_manifest_for(args.data, Path(tmp) / "data")
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = {pool.submit(_spawn, n, s, manifest_dir, args.jobs): (n, s) for n, s in todo}
            for future in as_completed(futures):
                name, seed = futures[future]
                try:
                    run = future.result()
                except RuntimeError as e:
                    print(f"{name} seed {seed}: {e}", file=sys.stderr, flush=True)
                    continue
                run.update(config=name, settings=settings_of(name))
                results["runs"][_key(name, seed)] = run
                save()
                print(
                    f"{name} seed {seed}: selection {run['selection_mean_iou']:.4f} validation "
                    f"{run['mean_iou']:.4f} tta {run['tta']['mean_iou']:.4f} ({run['cpu_seconds']} CPU s)",
                    flush=True,
                )
    # The cost is the architecture's (untrained models), so it is measured once per configuration after
    # the runs, rather than in runs that share the machine with others.
    costs = results.setdefault("prediction_cost", {})
    for name in order:
        if name not in costs and any(r["config"] == name for r in results["runs"].values()):
            costs[name] = prediction_cost_ratio(settings_of(name))
    save()
    print(markdown(results, order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
