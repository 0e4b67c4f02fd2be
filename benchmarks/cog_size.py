"""Bytes per pixel of a class map as prediction writes it, for the plan's output sizes.

    python -m benchmarks.cog_size [--output benchmarks/results/cog_size.json]

Each class map is written the two ways prediction writes one, with transforms/cog.py's own writers
(uint8, DEFLATE, overviews, colour table):
- per tile (the default): one COG per tile core, 192×192 pixels (256-pixel tiles, overlap 64);
- one mosaic COG (--mosaic): a VRT of the map copied by `vrt_to_cog`.
Maps: the demo scene's label raster (generated, 2048×2048: large uniform areas, compresses far better
than a real map) and, when ../shared/data is present, nc-landsat7/strata.tif (a real 7-class land-class
raster of North Carolina, 443×489 pixels).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from benchmarks.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
CORE = 192  # the core of a 256-pixel tile with the default overlap of 64
SHARED_STRATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nc-landsat7" / "strata.tif"


def read_classes(path: Path, nodata_to: int = 255) -> tuple[np.ndarray, str, tuple]:
    """The raster's first band as uint8 class indices (values 1.. become 0..; nodata -> 255)."""
    with rasterio.open(path) as src:
        values = src.read(1)
        nodata = src.nodata
        crs, transform = src.crs.to_string(), tuple(src.transform)[:6]
    mask = values == nodata if nodata is not None else np.zeros(values.shape, bool)
    classes = values.astype(np.int64)
    if classes[~mask].min() >= 1:  # strata.tif numbers its classes from 1
        classes = classes - 1
    classes[mask] = nodata_to
    return classes.astype(np.uint8), crs, transform


def per_tile_bytes(classes: np.ndarray, crs: str, transform: tuple, scheme) -> tuple[int, int]:
    """(bytes, files) of the map written as one COG per CORE×CORE tile core."""
    from transforms.cog import encode_classes
    from transforms.geometry.grid import GridSpec

    scale, left, top = transform[0], transform[2], transform[5]
    lattice = GridSpec(crs, scale, left, top)
    total, files = 0, 0
    height, width = classes.shape
    for row in range(0, height, CORE):
        for col in range(0, width, CORE):
            core = classes[row : row + CORE, col : col + CORE]
            grid = lattice.window(col, row, core.shape[1], core.shape[0])
            total += len(encode_classes(np.ascontiguousarray(core), grid, scheme))
            files += 1
    return total, files


def mosaic_bytes(classes: np.ndarray, crs: str, transform: tuple, workdir: Path) -> int:
    """Bytes of the map as one COG with overviews, copied as prediction copies its VRT."""
    from transforms.cog import vrt_to_cog

    source = workdir / "source.tif"
    profile = dict(
        driver="GTiff", width=classes.shape[1], height=classes.shape[0], count=1, dtype="uint8",
        crs=crs, transform=rasterio.Affine(*transform), nodata=255, tiled=True,
    )  # fmt: skip
    with rasterio.open(source, "w", **profile) as dst:
        dst.write(classes, 1)
    destination = workdir / "classes.tif"
    vrt_to_cog(str(source), str(destination), "classes")
    return destination.stat().st_size


def measure(name: str, path: Path, workdir: Path) -> dict:
    from transforms.contracts.label_scheme import dynamic_world

    classes, crs, transform = read_classes(path)
    pixels = int(classes.size)
    tiles, files = per_tile_bytes(classes, crs, transform, dynamic_world())
    mosaic = mosaic_bytes(classes, crs, transform, workdir)
    return {
        "map": name,
        "file": path.name,
        "pixels": pixels,
        "classes_present": int(len(np.unique(classes[classes != 255]))),
        "per_tile_bytes": tiles,
        "per_tile_files": files,
        "per_tile_bytes_per_pixel": tiles / pixels,
        "mosaic_bytes": mosaic,
        "mosaic_bytes_per_pixel": mosaic / pixels,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(RESULTS / "cog_size.json"))
    args = parser.parse_args(argv)
    from pipelines.demo.scene import ensure_demo_scene

    maps = [("demo labels (generated)", Path(ensure_demo_scene().labels))]
    if SHARED_STRATA.exists():
        maps.append(("nc-landsat7 strata.tif (real)", SHARED_STRATA))
    with tempfile.TemporaryDirectory(prefix="terrabeam-cog-size-") as tmp:
        results = [measure(name, path, Path(tmp)) for name, path in maps]
    doc = {
        "benchmark": "cog_size",
        "tile_core": CORE,
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": results,
    }
    Path(args.output).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    for r in results:
        print(
            f"{r['map']}: {r['pixels']:,} px, per tile {r['per_tile_bytes_per_pixel']:.3f} B/px "
            f"({r['per_tile_files']} files), mosaic {r['mosaic_bytes_per_pixel']:.3f} B/px"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
