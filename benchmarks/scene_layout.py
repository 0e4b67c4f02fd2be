"""Which GeoTIFF layout serves 128×128 patch reads best? The figures behind the demo scene's layout.

    python -m benchmarks.scene_layout [--patches 500] [--output benchmarks/results/scene_layout.json]

The demo scene (2048², 14 float32 bands) is rewritten in several layouts (internal tile size, pixel vs.
band interleave, DEFLATE vs. none). For each, a fresh process reads the same random 128×128 windows
(all bands) in the extraction pipeline's order (512-pixel spatial chunks, raster order inside), once
with GDAL's cache smaller than the scene (`GDAL_CACHEMAX=64`) and once with a large cache starting
cold. File size is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PATCH = 128
LAYOUTS = {
    "tiled256_pixel_deflate (demo)": {
        "blockxsize": 256,
        "interleave": "pixel",
        "compress": "deflate",
        "predictor": 3,
    },
    "tiled512_pixel_deflate": {
        "blockxsize": 512,
        "interleave": "pixel",
        "compress": "deflate",
        "predictor": 3,
    },
    "tiled128_pixel_deflate": {
        "blockxsize": 128,
        "interleave": "pixel",
        "compress": "deflate",
        "predictor": 3,
    },
    "tiled256_band_deflate": {"blockxsize": 256, "interleave": "band", "compress": "deflate", "predictor": 3},
    "tiled256_pixel_none": {"blockxsize": 256, "interleave": "pixel", "compress": "none"},
}


def write_layout(source: str, target: Path, layout: dict) -> None:
    import rasterio

    with rasterio.open(source) as src:
        profile = src.profile | {"tiled": True, "blockysize": layout["blockxsize"], **layout}
        if layout["compress"] == "none":
            profile.pop("predictor", None)
        with rasterio.open(target, "w", **profile) as dst:
            for _, window in src.block_windows(1):
                dst.write(src.read(window=window), window=window)


def child(path: str, count: int) -> dict:
    import rasterio
    from rasterio.windows import Window

    rng = random.Random(0)
    with rasterio.open(path) as src:
        windows = [
            (rng.randrange(0, src.width - PATCH), rng.randrange(0, src.height - PATCH)) for _ in range(count)
        ]
        windows.sort(key=lambda w: ((w[1] + PATCH // 2) // 512, (w[0] + PATCH // 2) // 512, w[1], w[0]))
        start = time.perf_counter()
        for col, row in windows:
            src.read(window=Window(col, row, PATCH, PATCH))
        wall = time.perf_counter() - start
    return {"patches": count, "wall_s": wall, "patches_per_s": count / wall}


def measure(path: Path, count: int, cache_mb: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.scene_layout", "--child", str(path), "--patches", str(count)]
    env = {**os.environ, "GDAL_CACHEMAX": str(cache_mb)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patches", type=int, default=500)
    parser.add_argument("--output", type=Path, default=RESULTS / "scene_layout.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.patches)))
        return 0

    from pipelines.demo.scene import ensure_demo_scene

    scene = ensure_demo_scene()
    results = {}
    with tempfile.TemporaryDirectory(prefix="terrabeam-layout-") as tmp:
        for name, layout in LAYOUTS.items():
            path = Path(tmp) / f"{name.split()[0]}.tif"
            write_layout(scene.image, path, layout)
            results[name] = {
                "layout": layout,
                "file_mb": path.stat().st_size / 1e6,
                "cache_starved_64mb": measure(path, args.patches, 64),
                "cold_large_cache_1024mb": measure(path, args.patches, 1024),
            }
    report = {
        "benchmark": "scene_layout",
        "scene": "demo scene 2048x2048, 14 float32 bands; 128x128 all-band reads in the pipeline's order",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    for name, r in results.items():
        print(
            f"{name:32s} {r['file_mb']:7.1f} MB  starved {r['cache_starved_64mb']['patches_per_s']:8.1f}/s"
            f"  cold {r['cold_large_cache_1024mb']['patches_per_s']:8.1f}/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
