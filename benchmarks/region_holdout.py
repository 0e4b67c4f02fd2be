"""Whole places held out: the FCN against a per-pixel RandomForest on georeferenced Landsat 7 imagery.

    python -m benchmarks.region_holdout [--seeds 0,1,2] [--folds 0,1,2] [--points-per-class 120]
                                        [--patch-size 32] [--set epochs=40 ...]
                                        [--data ../shared/data/nc-landsat7]

The second honest check beside benchmarks/model_quality.py (whose Earth Engine patches carry no
places). Data: North Carolina's Landsat 7 ETM+ bands of 2000 (10, 20, 30, 40, 50, 70) and the 1996
7-class land-class raster (GRASS's nc_spm_08 sample; ../shared/data/nc-landsat7/SOURCE.txt), 443×489
pixels of 28.5 m.

Protocol:
- `python -m pipelines.extract` samples stratified points and splits them by spatial blocks (its
  default: whole blocks go to validation, and points whose patch would reach a block of the other side
  are left out), so no validation pixel lies in a training patch and validation is places the models
  never saw. The split's figures (block side, left-out points) come from the manifest.
- The FCN trains with `model.train` defaults (or `--set` overrides), selecting its epoch on a carve of
  the training split (benchmarks.model_quality.fcn_run), and is scored once on validation.
- The forest (scikit-learn, per pixel, the 6 band values, no spatial context: the talk's Earth Engine
  baseline) trains on every labelled pixel of the training patches and is scored on exactly the
  validation pixels the FCN is scored on (checked by count).
- Seeds: the FCN's weights and shuffles, the forest's bootstrap; the extraction is the same for all.
- Folds (`--folds`, extraction's `--split-fold`): each fold holds out another tenth of the blocks
  (disjoint, together all of them), so the figure does not rest on the few places one draw holds out.

Results go to benchmarks/results/region_holdout.json and .md after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.machine import machine
from benchmarks.model_quality import (
    fcn_run,
    forest_run,
    pm,
    save_results,
    seeds_and_settings,
    usable_pixels,
    whole_numbers,
)

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nc-landsat7"
BANDS = ("10", "20", "30", "40", "50", "70")
# GRASS landclass96's classes, with Dynamic World's colours where the class is the same.
SCHEME = {
    "name": "nc-landclass96",
    "classes": [
        {"name": "developed", "values": [1], "color": "#c4281b"},
        {"name": "agriculture", "values": [2], "color": "#e49635"},
        {"name": "herbaceous", "values": [3], "color": "#88b053"},
        {"name": "shrubland", "values": [4], "color": "#dfc35a"},
        {"name": "forest", "values": [5], "color": "#397d49"},
        {"name": "water", "values": [6], "color": "#419bdf"},
        {"name": "sediment", "values": [7], "color": "#a59b8f"},
    ],
}


def extract_by_blocks(
    data: Path, work: Path, points_per_class: int, patch_size: int, fraction: float, fold: int = 0
) -> Path:
    """The extraction of the protocol, into `work`/data; returns that folder."""
    from pipelines.extract import main as extract

    scheme = work / "nc-landclass96.json"
    scheme.write_text(json.dumps(SCHEME))
    output = work / "data"
    argv = ["--inputs", *(str(data / f"lsat7_2000_{b}.tif") for b in BANDS)]
    argv += ["--labels", str(data / "strata.tif"), "--label-scheme", str(scheme), "--pad-edges"]
    argv += ["--patch-size", str(patch_size), "--points-per-class", str(points_per_class)]
    argv += ["--validation-fraction", str(fraction), "--split-fold", str(fold), "--output", str(output)]
    if extract(argv) != 0:
        raise RuntimeError(f"python -m pipelines.extract {' '.join(argv)} failed")
    return output


def split_pixels(data: Path, split: str) -> tuple[Any, Any]:
    """The labelled pixels of one split of an extraction, read as model.train reads them."""
    from model.dataset import PatchReader, read_patches
    from transforms.contracts.manifest import read_manifest, schema_of

    manifest = read_manifest(str(data))
    files = [str(data / name) for name in manifest["splits"][split]["files"]]
    compression = "GZIP" if files[0].endswith(".gz") else ""
    reader = PatchReader(schema_of(manifest), len(manifest["classes"]))
    return usable_pixels(read_patches(files, reader, cache=False, compression=compression))


def spectral_indices(manifest: dict[str, Any], settings: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The indices model.train computes for this extraction's bands under `settings` (name -> bands)."""
    from model.architecture import resolve_spectral_indices
    from model.config import TrainConfig
    from transforms.contracts.manifest import schema_of

    config = TrainConfig(**settings)
    return resolve_spectral_indices(schema_of(manifest).bands, config.index_names(), config.roles())


def with_indices(pixels: tuple[Any, Any], indices: dict[str, tuple[int, int]]) -> tuple[Any, Any]:
    """Per-pixel features with each index appended, computed by the model's own SpectralIndices layer
    (pixels as a batch of 1×1 patches)."""
    import numpy as np

    from model.architecture import SpectralIndices

    values, labels = pixels
    computed = SpectralIndices(indices)(values[:, None, None, :]).numpy()[:, 0, 0, :]
    return np.concatenate([values, computed.astype(values.dtype)], axis=1), labels


def describe_split(fold: dict[str, Any]) -> str:
    split = fold.get("split") or {}
    if split.get("rule") != "spatial-blocks-with-guard":
        return str(split)
    return (
        f"blocks of {split['block_size']:g} CRS units, {split['validation_fraction']:g} of them held out "
        f"(fold {split.get('fold', 0)} of {split.get('folds', 1)}); {split['points_in_guard_band']} points "
        f"left out in the guard band; patches {fold['patches']}; share of validation pixels inside "
        f"training patches {split['overlap']:g}; both models scored on the same {fold['score_pixels']} "
        "labelled pixels of the held-out blocks"
    )


def _mean(runs: list[dict[str, Any]]) -> float | None:
    return sum(r["mean_iou"] for r in runs) / len(runs) if runs else None


def markdown(result: dict[str, Any]) -> str:
    fcn, forest = result["fcn"].get("summary"), result["forest"].get("summary")
    lines = [
        "# Whole places held out: North Carolina, Landsat 7 (honest protocol)",
        "",
        f"Data: `{result['data']}`; extraction: {result['extraction']}. The FCN selects its epoch on a "
        "carve of the training split.",
        "",
        *(f"- Fold {k}: {describe_split(fold)}." for k, fold in result["folds"].items()),
        "",
        f"Seeds: {result['seeds']}. Machine: {result['machine']['cpus']} CPUs, "
        f"{result['machine'].get('cpu_model', '')}. Command: `{result['command']}`",
        "",
        f"| | FCN ({result['fcn']['description']}) | {result['forest']['description']} |",
        "|---|---|---|",
    ]
    for label, key in (
        ("mean IoU (mean ± std, min–max)", "mean_iou"),
        ("overall accuracy", "overall_accuracy"),
    ):
        cells = [pm(s[key]) if s else "–" for s in (fcn, forest)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = [f"{s['cpu_seconds']['mean']:.0f}" if s else "–" for s in (fcn, forest)]
    lines.append("| training CPU time (s) | " + " | ".join(cells) + " |")
    for name in (fcn or forest or {}).get("per_class_iou", {}):
        cells = [f"{s['per_class_iou'][name]:.3f}" if s else "–" for s in (fcn, forest)]
        lines.append(f"| IoU {name} (mean of runs) | " + " | ".join(cells) + " |")
    if len(result["folds"]) > 1:
        lines += ["", "| fold | FCN mean IoU | forest mean IoU |", "|---|---|---|"]
        for k in result["folds"]:
            means = [_mean([r for r in result[m]["runs"] if str(r["fold"]) == k]) for m in ("fcn", "forest")]
            lines.append(f"| {k} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in means) + " |")
    if fcn and forest:
        ratio = fcn["mean_iou"]["mean"] / forest["mean_iou"]["mean"]
        lines += ["", f"FCN / forest mean IoU (means of runs): {ratio:.2f}× (the issue's bar: 1.25×)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.region_holdout", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--data", type=Path, default=DATA, help="Folder of the North Carolina rasters.")
    parser.add_argument(
        "--seeds", default="0,1,2", help="Comma-separated seeds, one run of each model per seed."
    )
    parser.add_argument("--points-per-class", type=int, default=120, help="Extraction points per class.")
    parser.add_argument("--patch-size", type=int, default=32, help="Patch side in pixels.")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="Share of the blocks held out (extraction default).",
    )
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], help="A model.train setting, name=value."
    )
    parser.add_argument(
        "--folds",
        default="0",
        help="Comma-separated split folds (terrabeam extract --split-fold): an extraction per fold, "
        "each scored with every seed.",
    )
    parser.add_argument("--trees", type=int, default=100, help="Trees of the RandomForest.")
    parser.add_argument(
        "--forest-indices",
        action="store_true",
        help="Give the forest the spectral indices the FCN computes (from --set band_roles=...) as "
        "features beside the band values.",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "region_holdout.json")
    args = parser.parse_args(argv)
    if not (args.data / "strata.tif").exists():
        print(f"error: {args.data}/strata.tif not found; pass --data", file=sys.stderr)
        return 2
    read = seeds_and_settings(args)
    if read is None:
        return 2
    seeds, settings = read
    folds = whole_numbers("--folds", args.folds)
    if folds is None:
        return 2
    root = Path(__file__).resolve().parents[1]
    result: dict[str, Any] = {
        "data": os.path.relpath(args.data.resolve(), root),
        "machine": machine(),
        "command": "python -m benchmarks.region_holdout "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "seeds": seeds,
        "extraction": f"{args.points_per_class} points per class, {args.patch_size}² patches, "
        f"validation fraction {args.validation_fraction:g}",
        "fcn": {"description": "model.train defaults" + (f", {settings}" if settings else ""), "runs": []},
        "forest": {
            "description": f"RandomForest per pixel ({args.trees} trees"
            + (", band values and spectral indices)" if args.forest_indices else ")"),
            "runs": [],
        },
    }

    def save() -> None:
        save_results(result, args.output, markdown)

    result["folds"] = {}
    with tempfile.TemporaryDirectory(prefix="region-holdout-") as tmp:
        for fold in folds:
            work = Path(tmp) / f"fold{fold}"
            work.mkdir()
            data = extract_by_blocks(
                args.data, work, args.points_per_class, args.patch_size, args.validation_fraction, fold
            )
            manifest = json.loads((data / "manifest.json").read_text())
            train_pixels, score_pixels = split_pixels(data, "train"), split_pixels(data, "validation")
            if args.forest_indices:
                indices = spectral_indices(manifest, settings)
                train_pixels, score_pixels = (
                    with_indices(train_pixels, indices),
                    with_indices(score_pixels, indices),
                )
                result["forest"]["indices"] = sorted(indices)
            result["folds"][str(fold)] = {
                "split": manifest.get("split"),
                "patches": {name: split.get("patches") for name, split in manifest["splits"].items()},
                "score_pixels": int(len(score_pixels[1])),
            }
            for seed in seeds:
                run = forest_run(train_pixels, score_pixels, args.trees, seed, manifest["classes"])
                result["forest"]["runs"].append({"fold": fold, **run})
                print(f"Fold {fold}, forest seed {seed}: mean IoU {run['mean_iou']:.4f}", flush=True)
                save()
            for seed in seeds:
                run = fcn_run(str(data), work, settings, seed, tta=False)
                if run["pixels"] != len(score_pixels[1]):
                    raise RuntimeError("The forest and the FCN would be scored on different pixels.")
                result["fcn"]["runs"].append({"fold": fold, **run})
                print(
                    f"Fold {fold}, FCN seed {seed}: mean IoU {run['mean_iou']:.4f} ({run['train_seconds']} s)",
                    flush=True,
                )
                save()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
