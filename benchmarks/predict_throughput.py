"""Prediction throughput: the whole job against the model's raw speed on the same tiles, in the same run.

    python -m benchmarks.predict_throughput [--size 4096] [--rss-sizes 2048,8192]
                                            [--output benchmarks/results/predict_throughput.json]

The scene is the demo scene (2048², 14 float32 bands) repeated into a larger mosaic through a VRT, so
any size costs no disk. The model is the default U-Net (`model.architecture.build_unet`, 14 bands, 9
classes, normalization from the scene) with untrained weights: speed does not depend on the weights.

Each measurement runs in its own process (so its peak RSS is its own):
- raw_predict: the job's tiles (default 256 px, overlap 64) are read into memory and stacked into
  batches of the job's batch size first, then timed through the SavedModel's serving function as the
  job calls it (`transforms.inference.LoadedModel`: the batch lent to TensorFlow and the answer read
  in place, without copies);
- job: `python -m pipelines.predict` end to end on the DirectRunner (plan, read, RunInference, trim,
  per-tile COGs, VRT, quick-look PNG), as wall time;
- job at two scene sizes, for peak RSS: a streaming job's memory does not grow with the area.
The CPUs may be shared with other work: raw_predict and job alternate for ROUNDS rounds and each keeps
its best round; CPU-seconds (user + sys) are reported next to wall time.
Megapixels are output pixels (the region's area); the ratio job / raw_predict is the share of the
model's speed the whole job keeps, so 1 - ratio is what reading, tiling, stitching and writing cost.
A line through the job's wall time at the sizes measured splits it into a fixed part (start-up:
importing TensorFlow and Beam, loading the model, the first call, the mosaic) and a part per tile; the
model alone per tile over the job's per tile is what a region large enough keeps.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
TILE_SIZE = 256
OVERLAP = 64
BATCH_SIZE = 8
TARGET_RATIO = 0.75
ROUNDS = 2


def _child(kind: str, args: dict) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.predict_throughput",
        "--child",
        kind,
        "--child-args",
        json.dumps(args),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def mosaic_scene(image: str, size: int, path: Path) -> str:
    """A size × size VRT repeating `image` (the demo scene) edge to edge, on the image's own grid."""
    import rasterio

    with rasterio.open(image) as src:
        width, height, count = src.width, src.height, src.count
        transform, crs = src.transform, src.crs
        descriptions, dtype = src.descriptions, src.dtypes[0]
    data_type = {"float32": "Float32"}[dtype]
    lines = [f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">', f"  <SRS>{crs.to_wkt()}</SRS>"]
    lines.append(
        f"  <GeoTransform>{transform.c}, {transform.a}, 0, {transform.f}, 0, {transform.e}</GeoTransform>"
    )
    for band in range(1, count + 1):
        lines.append(f'  <VRTRasterBand dataType="{data_type}" band="{band}">')
        lines.append(f"    <Description>{descriptions[band - 1]}</Description>")
        for y in range(0, size, height):
            for x in range(0, size, width):
                lines += [
                    "    <SimpleSource>",
                    f"      <SourceFilename>{image}</SourceFilename>",
                    f"      <SourceBand>{band}</SourceBand>",
                    f'      <SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>',
                    f'      <DstRect xOff="{x}" yOff="{y}" xSize="{width}" ySize="{height}"/>',
                    "    </SimpleSource>",
                ]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def export_unet(scene_image: str, model_dir: Path) -> str:
    import numpy as np
    import rasterio

    from model.architecture import build_unet
    from model.export import export_model
    from transforms.contracts.classes import CLASS_NAMES

    with rasterio.open(scene_image) as src:
        sample = src.read(out_shape=(src.count, 256, 256)).reshape(src.count, -1).astype(np.float64)
        bands, crs, scale = list(src.descriptions), src.crs.to_string(), src.res[0]
    model = build_unet(
        len(bands), len(CLASS_NAMES), mean=sample.mean(1).tolist(), variance=sample.var(1).tolist()
    )
    metadata = {"mode": "segmentation", "bands": bands, "classes": list(CLASS_NAMES), "patch_size": 128}
    export_model(model, str(model_dir), {**metadata, "crs": crs, "scale": scale})
    return str(model_dir)


def child_raw_predict(args: dict) -> dict:
    """The model alone on the job's tiles, held in memory."""
    from model.export import load_model_metadata
    from transforms.geometry.grid import grid_spec_of
    from transforms.geometry.tiling import TilingSpec, plan_for_bounds
    from transforms.inference import fetch_tile, load_saved_model
    from transforms.io.rasters import LocalRasterSource
    from transforms.io.retry import RetryConfig
    from transforms.runtime.tensor_memory import aligned_batch

    info = load_model_metadata(args["model"])
    source = LocalRasterSource([args["scene"]])
    crs, transform, _, _ = source.native_grid()
    plan = plan_for_bounds(
        grid_spec_of(crs, transform), source.footprint(crs), TilingSpec(TILE_SIZE, OVERLAP)
    )
    tiles = [fetch_tile(t, source, info["bands"], RetryConfig())[1] for t in plan]
    batches = [aligned_batch(tiles[i : i + BATCH_SIZE]) for i in range(0, len(tiles), BATCH_SIZE)]
    count = len(tiles)
    del tiles
    model = load_saved_model(args["model"])
    model(batches[0])  # trace and warm up, as the job's first batch
    start, cpu = time.perf_counter(), _cpu_s()
    for batch in batches:
        model(batch)
    wall = time.perf_counter() - start
    pixels = plan.width * plan.height
    return {
        "tiles": count,
        "megapixels": pixels / 1e6,
        "wall_s": wall,
        "cpu_s": _cpu_s() - cpu,
        "mpx_per_s": pixels / 1e6 / wall,
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_job(args: dict) -> dict:
    """`python -m pipelines.predict` in this process, end to end."""
    from pipelines.predict import run

    start, cpu = time.perf_counter(), _cpu_s()
    summary = run(
        [f"--model={args['model']}", "--inputs", args["scene"], f"--output={args['output']}", "--overwrite"]
        + [f"--tile-size={TILE_SIZE}", f"--overlap={OVERLAP}", f"--batch-size={BATCH_SIZE}"]
    )
    wall = time.perf_counter() - start
    pixels = summary["grid"]["width"] * summary["grid"]["height"]
    return {
        "tiles": summary["tiles_written"],
        "megapixels": pixels / 1e6,
        "wall_s": wall,
        "cpu_s": _cpu_s() - cpu,
        "mpx_per_s": pixels / 1e6 / wall,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_benchmark(size: int, rss_sizes: list[int], output: Path) -> dict:
    from pipelines.demo.scene import ensure_demo_scene

    demo = ensure_demo_scene()
    with tempfile.TemporaryDirectory(prefix="terrabeam-bench-") as tmp:
        tmp = Path(tmp)
        model = export_unet(demo.image, tmp / "model")
        scene = mosaic_scene(demo.image, size, tmp / f"scene{size}.vrt")
        # The CPUs are shared: alternate the two measurements and keep each one's best round, so both
        # are taken under the same load. CPU-seconds per megapixel are reported too (load-independent).
        rounds = []
        for i in range(ROUNDS):
            raw = _child("raw_predict", {"model": model, "scene": scene})
            job = _child("job", {"model": model, "scene": scene, "output": str(tmp / f"out{i}")})
            rounds.append({"raw_predict": raw, "job": job})
        results = {
            kind: max((r[kind] for r in rounds), key=lambda f: f["mpx_per_s"])
            for kind in ("raw_predict", "job")
        }
        results["rounds"] = rounds
        for rss_size in rss_sizes:
            if rss_size == size:
                results[f"job_{rss_size}"] = results["job"]
                continue
            vrt = mosaic_scene(demo.image, rss_size, tmp / f"scene{rss_size}.vrt")
            results[f"job_{rss_size}"] = _child(
                "job", {"model": model, "scene": vrt, "output": str(tmp / f"out{rss_size}")}
            )
    ratio = results["job"]["mpx_per_s"] / results["raw_predict"]["mpx_per_s"]
    cpu_ratio = results["raw_predict"]["cpu_s"] / results["job"]["cpu_s"]
    split = fixed_and_per_tile(results, rss_sizes)
    rss = {f"{s}x{s}": results[f"job_{s}"]["peak_rss_mb"] for s in rss_sizes}
    report = {
        "benchmark": "predict_throughput",
        "scene": f"demo scene (2048x2048, 14 float32 bands) repeated to {size}x{size} through a VRT",
        "model": "default U-Net (build_unet: depth 2, 32 filters), untrained, 14 bands -> 9 classes",
        "tiling": {"tile_size": TILE_SIZE, "overlap": OVERLAP, "batch_size": BATCH_SIZE},
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "summary": {
            "job_mpx_per_s": results["job"]["mpx_per_s"],
            "raw_predict_mpx_per_s": results["raw_predict"]["mpx_per_s"],
            "job_vs_raw_predict": ratio,
            "job_vs_raw_predict_per_cpu_s": cpu_ratio,
            "peak_rss_mb": rss,
            **split,
            "targets": {f"job >= {TARGET_RATIO:.2f} x raw predict": ratio >= TARGET_RATIO},
        },
        "results": results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    return report


def fixed_and_per_tile(results: dict, sizes: list[int]) -> dict:
    """The job's wall time as a fixed part plus a part per tile (a line through its runs at the sizes
    measured), against the model alone per tile: what a region large enough for the fixed part not to
    matter would keep of the model's speed. Empty with runs at fewer than two sizes."""
    from transforms.planning.measured import fit_line

    runs = {
        results[f"job_{s}"]["tiles"]: results[f"job_{s}"]["wall_s"] for s in sizes if f"job_{s}" in results
    }
    runs[results["job"]["tiles"]] = results["job"]["wall_s"]
    if len(runs) < 2:
        return {}
    per_tile, fixed = fit_line(sorted(runs.items()))
    raw_per_tile = results["raw_predict"]["wall_s"] / results["raw_predict"]["tiles"]
    return {
        "job_fixed_s": fixed,
        "job_s_per_tile": per_tile,
        "raw_predict_s_per_tile": raw_per_tile,
        "job_vs_raw_predict_per_tile": raw_per_tile / per_tile,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="Scene side for the throughput figures.")
    parser.add_argument("--rss-sizes", default="2048,8192", help="Scene sides whose peak RSS is compared.")
    parser.add_argument("--output", type=Path, default=RESULTS / "predict_throughput.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        fig = {"raw_predict": child_raw_predict, "job": child_job}[args.child](json.loads(args.child_args))
        print(json.dumps(fig))
        return 0
    sizes = [int(s) for s in args.rss_sizes.split(",") if s]
    report = run_benchmark(args.size, sizes, args.output)
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
