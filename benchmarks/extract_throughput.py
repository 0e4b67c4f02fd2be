"""Extraction throughput on the demo scene, against baselines measured in the same run.

    python -m benchmarks.extract_throughput [--points 2000] [--output benchmarks/results/extract_throughput.json]

Each measurement runs in its own process (so GDAL's cache and peak RSS are its own):
- plain_reads: a loop of rasterio windowed reads of the same 128×128 windows (image + label);
- naive: the obvious pipeline body — read, `tf.train.Example` from Python lists, TFRecordWriter with
  GZIP at zlib's default level (what the talk's sample does);
- pipeline_gzip / pipeline_none: `python -m pipelines.extract` end to end on the DirectRunner;
- cache-starved reads (`GDAL_CACHEMAX=64`, a DEFLATE copy of the scene, larger than the cache) in random
  vs. raster order;
- peak RSS of the pipeline for ~2k and ~20k points.
Figures are patches per second of wall time and per CPU-second (user+sys: "per core").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import machine
from benchmarks.scene_layout import write_layout

RESULTS = Path(__file__).resolve().parent / "results"
PATCH = 128
DEFLATE_LAYOUT = {"blockxsize": 256, "interleave": "pixel", "compress": "deflate", "predictor": 3}


def _child(kind: str, args: dict, env: dict | None = None) -> dict:
    """Run one measurement in a fresh interpreter; returns its JSON figures plus peak RSS.

    Linux children start with the parent's peak RSS, so the parent itself must stay small.
    """
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.extract_throughput",
        "--child",
        kind,
        "--child-args",
        json.dumps(args),
    ]
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _usage() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _windows(scene, count: int, seed: int = 0) -> list[tuple[int, int]]:
    """Top-left corners of `count` random in-bounds 128×128 windows."""
    import rasterio

    with rasterio.open(scene.image) as src:
        width, height = src.width, src.height
    rng = random.Random(seed)
    return [(rng.randrange(0, width - PATCH), rng.randrange(0, height - PATCH)) for _ in range(count)]


def _raster_order(windows: list[tuple[int, int]], chunk: int = 512) -> list[tuple[int, int]]:
    """The pipeline's read order: spatial chunks, raster order inside each."""
    return sorted(
        windows, key=lambda w: ((w[1] + PATCH // 2) // chunk, (w[0] + PATCH // 2) // chunk, w[1], w[0])
    )


def child_reads(args: dict) -> dict:
    import rasterio
    from rasterio.windows import Window

    from pipelines.demo.scene import ensure_demo_scene

    scene = ensure_demo_scene()
    windows = _windows(scene, args["count"])
    if args.get("order") == "raster":
        windows = _raster_order(windows)
    nbytes = 0
    with rasterio.open(args.get("image", scene.image)) as image, rasterio.open(scene.labels) as labels:
        if args.get("warm"):
            image.read()  # a warm cache: the scene fits in GDAL's cache
        start, cpu = time.perf_counter(), _usage()
        for col, row in windows:
            window = Window(col, row, PATCH, PATCH)
            nbytes += image.read(window=window).nbytes + labels.read(1, window=window).nbytes
        wall, cpu = time.perf_counter() - start, _usage() - cpu
    return {"patches": len(windows), "wall_s": wall, "cpu_s": cpu, "bytes": nbytes}


def child_layout(args: dict) -> dict:
    from pipelines.demo.scene import ensure_demo_scene

    write_layout(ensure_demo_scene().image, Path(args["target"]), DEFLATE_LAYOUT)
    return {}


def child_naive(args: dict) -> dict:
    import rasterio
    import tensorflow as tf
    from rasterio.windows import Window

    from pipelines.demo.scene import ensure_demo_scene

    scene = ensure_demo_scene()
    windows = _windows(scene, args["count"])
    out = Path(args["dir"]) / "naive.tfrecord.gz"
    with rasterio.open(scene.image) as image, rasterio.open(scene.labels) as labels:
        image.read()
        start, cpu = time.perf_counter(), _usage()
        with tf.io.TFRecordWriter(str(out), options="GZIP") as writer:
            for col, row in windows:
                window = Window(col, row, PATCH, PATCH)
                pixels, label = image.read(window=window), labels.read(1, window=window)
                feature = {
                    name: tf.train.Feature(float_list=tf.train.FloatList(value=band.flatten().tolist()))
                    for name, band in zip(scene.bands, pixels)
                }
                feature["landcover"] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=label.flatten().tolist())
                )
                writer.write(
                    tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
                )
        wall, cpu = time.perf_counter() - start, _usage() - cpu
    return {"patches": len(windows), "wall_s": wall, "cpu_s": cpu, "output_bytes": out.stat().st_size}


def child_pipeline(args: dict) -> dict:
    from pipelines.extract import main
    from transforms.contracts.manifest import read_manifest

    output = Path(args["dir"]) / f"pipeline-{args['compression']}-{args['points_per_class']}"
    argv = [
        "--output",
        str(output),
        "--points-per-class",
        str(args["points_per_class"]),
        "--compression",
        args["compression"],
        "--direct_num_workers",  # one process: its CPU time is the job's (the pool: local_cores.py)
        "1",
    ]
    start, cpu = time.perf_counter(), _usage()
    if main(argv) != 0:
        raise SystemExit("extraction failed")
    wall, cpu = time.perf_counter() - start, _usage() - cpu
    manifest = read_manifest(str(output))
    patches = sum(s["patches"] for s in manifest["splits"].values())
    size = sum(os.path.getsize(f) for s in manifest["splits"].values() for f in s["files"])
    shutil.rmtree(output)
    return {
        "patches": patches,
        "wall_s": wall,
        "cpu_s": cpu,
        "output_bytes": size,
        "errors": manifest["errors"]["count"],
    }


def _points_per_class_for(target: int) -> int:
    """Points-per-class that gives about `target` points on the demo scene (counted, not guessed)."""
    from pipelines.demo.scene import ensure_demo_scene
    from transforms.geometry.sampling import load_regions, sample_region

    scene = ensure_demo_scene()
    regions = load_regions(scene.regions)
    per_class = max(1, target // 36)
    for _ in range(6):
        total = sum(len(sample_region(r, scene.labels, per_class, 0)) for r in regions)
        if abs(total - target) < 0.1 * target:
            break
        per_class = max(1, round(per_class * target / max(total, 1)))
    return per_class


def rates(fig: dict) -> dict:
    fig = dict(fig)
    fig["patches_per_s"] = fig["patches"] / fig["wall_s"]
    fig["patches_per_cpu_s"] = fig["patches"] / fig["cpu_s"]
    if "bytes" in fig:
        fig["mb_per_s"] = fig["bytes"] / fig["wall_s"] / 1e6
    return fig


def run_benchmark(points: int, naive_count: int, output: Path) -> dict:
    from pipelines.demo.scene import ensure_demo_scene

    ensure_demo_scene()  # generated once, outside the timings
    workdir = Path(tempfile.mkdtemp(prefix="terrabeam-bench-"))
    try:
        per_class = _points_per_class_for(points)
        big_per_class = _points_per_class_for(points * 10)
        results = {
            "plain_reads": rates(_child("reads", {"count": points, "warm": True})),
            "naive": rates(_child("naive", {"count": naive_count, "dir": str(workdir)})),
            "pipeline_gzip": rates(
                _child(
                    "pipeline", {"dir": str(workdir), "compression": "gzip", "points_per_class": per_class}
                )
            ),
            "pipeline_none": rates(
                _child(
                    "pipeline", {"dir": str(workdir), "compression": "none", "points_per_class": per_class}
                )
            ),
        }
        # A DEFLATE copy of the scene (235 MB of pixels) read through a 64 MB cache.
        deflate = workdir / "deflate.tif"
        _child("layout", {"target": str(deflate)})  # in a child: a big read here would inflate later peaks
        starved = {"GDAL_CACHEMAX": "64"}
        for order, key in (("random", "cache_starved_random"), ("raster", "cache_starved_raster_order")):
            args = {"count": points // 4, "order": order, "image": str(deflate)}
            results[key] = rates(_child("reads", args, starved))
        results["memory_10x_points"] = rates(
            _child(
                "pipeline", {"dir": str(workdir), "compression": "gzip", "points_per_class": big_per_class}
            )
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    gz, raw, naive = results["pipeline_gzip"], results["pipeline_none"], results["naive"]
    summary = {
        "pipeline_vs_plain_reads": gz["patches_per_s"] / results["plain_reads"]["patches_per_s"],
        "gzip_patches_per_cpu_s": gz["patches_per_cpu_s"],
        "none_patches_per_cpu_s": raw["patches_per_cpu_s"],
        "gzip_speedup_vs_naive_per_cpu_s": gz["patches_per_cpu_s"] / naive["patches_per_cpu_s"],
        "compression_ratio_pipeline_gzip": raw["output_bytes"]
        / raw["patches"]
        / (gz["output_bytes"] / gz["patches"]),
        "compression_ratio_naive_zlib6": raw["output_bytes"]
        / raw["patches"]
        / (naive["output_bytes"] / naive["patches"]),
        "raster_order_speedup_cache_starved": results["cache_starved_raster_order"]["patches_per_s"]
        / results["cache_starved_random"]["patches_per_s"],
        "peak_rss_mb": {
            str(gz["patches"]): gz["peak_rss_mb"],
            str(results["memory_10x_points"]["patches"]): results["memory_10x_points"]["peak_rss_mb"],
        },
        "targets": {
            "gzip >= 150 patches/s per core": gz["patches_per_cpu_s"] >= 150,
            "none >= 500 patches/s per core": raw["patches_per_cpu_s"] >= 500,
            "raster order >= 3x random when cache-starved": results["cache_starved_raster_order"][
                "patches_per_s"
            ]
            >= 3 * results["cache_starved_random"]["patches_per_s"],
        },
    }
    report = {
        "benchmark": "extract_throughput",
        "scene": "demo scene 2048x2048, 14 float32 bands, 128x128 patches",
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "summary": summary,
        "results": results,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--points", type=int, default=2000, help="Points for the throughput runs (10x for memory)."
    )
    parser.add_argument("--naive-count", type=int, default=200, help="Patches for the (slow) naive baseline.")
    parser.add_argument("--output", type=Path, default=RESULTS / "extract_throughput.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-args", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        fig = {
            "reads": child_reads,
            "naive": child_naive,
            "pipeline": child_pipeline,
            "layout": child_layout,
        }[args.child](json.loads(args.child_args))
        fig["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(fig))
        return 0
    report = run_benchmark(args.points, args.naive_count, args.output)
    print(json.dumps(report["summary"], indent=2))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
