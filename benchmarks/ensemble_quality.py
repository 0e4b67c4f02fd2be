"""Ensembles of default trainings against one, on real Earth Engine patches, under the honest protocol.

    python -m benchmarks.ensemble_quality [--long-seeds 0,1,2] [--short-seeds 10,11,12,13] [--config NAME]

Members are default trainings (benchmarks.model_ablation's configuration of today's defaults, spelled
out, or the --config given, e.g. narrower members), each in its own process: "long" ones of the
recipe's epochs, "short" ones of half as many, so that two short members cost the training time of
one long one. An ensemble averages its members'
softmax probabilities. Every combination of members of one length is scored on the selection carve
(which decides) and once on the validation split; the rows are means over the combinations. An
ensemble of N members calls N models a tile: N times the prediction cost of one, by construction (one
member's against the pre-ablation default is measured, as model_ablation measures it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.child import run_in_child
from benchmarks.machine import machine
from benchmarks.model_ablation import settings_of
from benchmarks.model_quality import DATA, RESULTS, prediction_cost_ratio, write_manifest_for

# model.train's defaults, spelled out (class weight power 0.25 since 2026-12-07).
DEFAULTS = "recipe-1206+xla-off+batch-64+bf16+class-weight-0.25"


def train_member(spec: dict[str, Any]) -> dict[str, Any]:
    """One member trained into spec["model_dir"] (the child side)."""
    from model.train import TrainConfig, train

    settings = {**settings_of(spec["config"]), "epochs": spec["epochs"]}
    config = TrainConfig(
        data=spec["manifest"], output=spec["model_dir"], seed=spec["seed"], verbose=0, **settings
    )
    start = time.monotonic()
    info = train(config)
    metrics = json.loads((Path(spec["model_dir"]) / "metrics.json").read_text())
    return {
        "seed": spec["seed"],
        "epochs": spec["epochs"],
        "train_seconds": info["training"]["seconds"],
        "cpu_seconds": info["training"]["cpu_seconds"],
        "seconds_with_export": round(time.monotonic() - start, 1),
        "selection_mean_iou": metrics["selection"]["mean_iou"],
        "mean_iou": metrics["mean_iou"],
    }


def split_probabilities(model_dirs: dict[str, str], manifest: str, config: str) -> dict[str, Any]:
    """Each member's probabilities and the labels, on the selection carve and the validation split."""
    import tensorflow as tf

    from model import training
    from model.dataset import make_batches
    from model.export import load_keras_model
    from model.train import TrainConfig

    with tempfile.TemporaryDirectory() as output:
        data = training.load_training_data(TrainConfig(data=manifest, output=output, **settings_of(config)))
    splits = {"selection": data.selection.patches, "validation": data.score.patches}
    models = {name: load_keras_model(model_dir) for name, model_dir in model_dirs.items()}
    calls = {name: tf.function(lambda x, m=model: m(x, training=False)) for name, model in models.items()}
    found: dict[str, Any] = {}
    for split, patches in splits.items():
        batches = list(make_batches(patches, batch_size=64))
        found[split] = {"labels": np.concatenate([b[1].numpy() for b in batches])}
        for name, call in calls.items():
            found[split][name] = np.concatenate([call(b[0]).numpy() for b in batches])
    return found


def mean_iou(probabilities: np.ndarray, labels: np.ndarray, classes: list[str]) -> float:
    """The mean IoU of the argmax of `probabilities` over the usable labels (model.evaluate's rule)."""
    from model.evaluate import pixel_confusion, summarize

    matrix = pixel_confusion(labels, np.argmax(probabilities, axis=-1), len(classes))
    return float(summarize(matrix, classes)["mean_iou"])


def score_ensembles(
    found: dict[str, Any], groups: dict[str, list[str]], sizes: list[int], classes: list[str]
) -> dict[str, Any]:
    """Per (group, size): each combination's mean IoU on both splits, and their mean."""
    rows: dict[str, Any] = {}
    for group, names in groups.items():
        for size in sizes:
            combos = list(itertools.combinations(names, size))
            if not combos:
                continue
            runs = []
            for combo in combos:
                run = {"members": list(combo)}
                for split, arrays in found.items():
                    averaged = np.mean([arrays[name] for name in combo], axis=0)
                    run[split] = round(mean_iou(averaged, arrays["labels"], classes), 4)
                runs.append(run)
            rows[f"{group} x{size}"] = {
                "group": group,
                "members": size,
                "combinations": runs,
                **{
                    f"{split}_mean_iou": {
                        "mean": round(statistics.fmean(r[split] for r in runs), 4),
                        "std": round(statistics.stdev([r[split] for r in runs]), 4) if len(runs) > 1 else 0.0,
                    }
                    for split in found
                },
            }
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Ensembles of {results['config']} trainings against one (honest protocol)",
        "",
        f"Command: `{results['command']}`. Machine: {results['machine']['cpu_model']}, "
        f"{results['machine']['cpus']} cores. Each row: the mean ± std over every combination of that many "
        "members of one length; selection decides, validation is scored once. Training time is the sum of "
        "the members' (mean wall seconds of one member × members); prediction cost is members × one "
        "member's, against the pre-ablation default's (U-Net, depth 2, 32 filters; model_ablation's measure).",
        "",
        "| members | combinations | selection mIoU | validation mIoU | training (wall s) | predict cost |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    member_cost = results["member_prediction_cost"]["ratio"]
    for name, row in results["ensembles"].items():
        seconds = results["member_seconds"][row["group"]] * row["members"]
        sel, val = row["selection_mean_iou"], row["validation_mean_iou"]
        lines.append(
            f"| {name} | {len(row['combinations'])} | {sel['mean']:.3f} ± {sel['std']:.3f} | "
            f"{val['mean']:.3f} ± {val['std']:.3f} | {seconds:.0f} | {row['members'] * member_cost:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ensemble_quality", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--long-seeds", default="0,1,2")
    parser.add_argument("--short-seeds", default="10,11,12,13")
    parser.add_argument("--config", default=DEFAULTS, help="The members' model_ablation configuration.")
    parser.add_argument(
        "--epochs", type=int, default=None, help="Long members' epochs (default: the config's)."
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "ensemble_quality.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        Path(spec["out"]).write_text(json.dumps(train_member(spec)))
        return 0
    if not (args.data / "training").is_dir():
        print(f"error: {args.data}/training not found; pass --data", file=sys.stderr)
        return 2
    long_epochs = args.epochs or settings_of(args.config)["epochs"]
    seeds = {
        "long": [int(s) for s in args.long_seeds.split(",") if s],
        "short": [int(s) for s in args.short_seeds.split(",") if s],
    }
    lengths = {g: n for g, n in {"long": long_epochs, "short": long_epochs // 2}.items() if seeds[g]}
    with tempfile.TemporaryDirectory(prefix="ensemble-") as tmp:
        manifest = str(write_manifest_for(args.data, Path(tmp) / "data"))
        members: dict[str, dict[str, Any]] = {}
        model_dirs: dict[str, str] = {}
        for group, epochs in lengths.items():
            for seed in seeds[group]:
                name = f"{group}-seed{seed}"
                model_dirs[name] = str(Path(tmp) / name)
                spec = {
                    "manifest": manifest,
                    "model_dir": model_dirs[name],
                    "seed": seed,
                    "epochs": epochs,
                    "config": args.config,
                }
                members[name] = {"group": group, **run_in_child("benchmarks.ensemble_quality", spec, name)}
                print(
                    f"{name}: selection {members[name]['selection_mean_iou']:.4f} "
                    f"({members[name]['train_seconds']:.0f} s)",
                    flush=True,
                )
        found = split_probabilities(model_dirs, manifest, args.config)
        classes = json.loads((Path(model_dirs[next(iter(model_dirs))]) / "metrics.json").read_text())[
            "classes"
        ]
    groups = {group: [n for n, m in members.items() if m["group"] == group] for group in lengths}
    results = {
        "benchmark": "ensemble_quality",
        "command": "python -m benchmarks.ensemble_quality "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "config": args.config,
        "settings": settings_of(args.config),
        "member_prediction_cost": prediction_cost_ratio(settings_of(args.config)),
        "epochs": lengths,
        "members": members,
        "member_seconds": {
            group: round(statistics.fmean(members[n]["train_seconds"] for n in names), 1)
            for group, names in groups.items()
        },
        "ensembles": score_ensembles(found, groups, [1, 2, 3], classes),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
