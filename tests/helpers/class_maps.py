"""Tiny class maps (as `terrabeam predict` writes them) and the truth they were made from, for the
accuracy assessment's tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from transforms.contracts.label_scheme import classes_tag, hex_to_rgb

CRS = "EPSG:32632"
ORIGIN = (600_000.0, 5_120_000.0)
SCALE = 10.0  # metres: a pixel is 100 m² = 0.01 ha
NODATA = 255  # a class map's "no prediction"
CLASSES = ("water", "trees", "grass", "built")
COLORS = ("#419bdf", "#397d49", "#88b053", "#c4281b")
SCHEME_NAME = "tiny-landcover"


@dataclasses.dataclass(frozen=True)
class MapAndTruth:
    map: str  # classes.tif: uint8 class indices, nodata 255, classes named in its tags
    truth: str  # truth.tif: the reference classes, named the same way
    map_pixels: np.ndarray
    truth_pixels: np.ndarray


def write_class_map(
    path: Path,
    pixels: np.ndarray,
    names: tuple[str, ...] = CLASSES,
    colors: tuple[str, ...] = COLORS,
    crs: str = CRS,
    transform=None,
    nodata: int | None = NODATA,
) -> str:
    """A uint8 class map with a colour table and the class names in its band tags, as prediction
    writes them (transforms/cog.py: `class_tags`)."""
    height, width = pixels.shape
    profile = dict(
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=transform or from_origin(*ORIGIN, SCALE, SCALE),
        nodata=nodata,
        tiled=True,
        blockxsize=32,
        blockysize=32,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels.astype(np.uint8), 1)
        table = {i: (0, 0, 0, 255) for i in range(256)}
        table.update({i: (*hex_to_rgb(c), 255) for i, c in enumerate(colors)})
        table[NODATA] = (0, 0, 0, 0)
        dst.write_colormap(1, table)
        dst.update_tags(
            1,
            classes=classes_tag(names),
            class_names=",".join(names),
            class_colors=",".join(colors),
            label_scheme=SCHEME_NAME,
            nodata_meaning="no prediction",
        )
    return str(path)


def write_map_and_truth(folder: Path, height: int = 120, width: int = 100, seed: int = 3) -> MapAndTruth:
    """A map whose truth is known: bands of the four classes, a river, a no-prediction corner, and about
    one pixel in eight of each class mapped wrong (more for the small class, as on real maps)."""
    rng = np.random.default_rng(seed)
    truth = np.full((height, width), 2, np.uint8)  # grass
    truth[: height // 3] = 1  # trees in the north
    truth[height // 3 : height // 3 + 12, width // 2 :] = 3  # a small town
    truth[:, 40:46] = 0  # a river
    mapped = truth.copy()
    wrong = rng.random((height, width)) < np.where(truth == 3, 0.3, 0.12)
    mapped[wrong] = rng.integers(0, 4, size=int(wrong.sum()))
    mapped[:8, :8] = NODATA  # no prediction in one corner
    folder.mkdir(parents=True, exist_ok=True)
    return MapAndTruth(
        write_class_map(folder / "classes.tif", mapped),
        write_class_map(folder / "truth.tif", truth),
        mapped,
        truth,
    )


def write_prediction(
    folder: Path,
    classes: np.ndarray,
    probabilities: np.ndarray | None = None,
    names: tuple[str, ...] = CLASSES,
    colors: tuple[str, ...] = COLORS,
    transform=None,
) -> str:
    """A prediction folder as `terrabeam predict` writes it: classes.tif, probabilities.tif (uint8, one
    band per class, p x 254, nodata 255) when `probabilities` (h, w, classes) is given, prediction.json."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    transform = transform or from_origin(*ORIGIN, SCALE, SCALE)
    write_class_map(folder / "classes.tif", classes, names, colors, transform=transform)
    files = {"classes": "classes.tif"}
    if probabilities is not None:
        height, width, count = probabilities.shape
        bands = np.moveaxis(probabilities, -1, 0)
        scaled = np.clip(np.rint(np.nan_to_num(bands) * 254), 0, 254).astype(np.uint8)
        scaled[np.isnan(bands)] = 255
        profile = dict(
            driver="GTiff",
            width=width,
            height=height,
            count=count,
            dtype="uint8",
            crs=CRS,
            transform=transform,
            nodata=255,
        )
        with rasterio.open(folder / "probabilities.tif", "w", **profile) as dst:
            dst.write(scaled)
        files["probabilities"] = "probabilities.tif"
    scheme = {
        "format": "terrabeam-label-scheme/1",
        "name": SCHEME_NAME,
        "classes": [{"name": n, "values": [i], "color": c} for i, (n, c) in enumerate(zip(names, colors))],
        "ignore": [],
    }
    summary = {
        "model": "tiny-model",
        "classes": list(names),
        "label_scheme": scheme,
        "probabilities": "uint8" if probabilities is not None else "none",
        "files": files,
        "grid": {
            "crs": CRS,
            "transform": list(transform)[:6],
            "width": classes.shape[1],
            "height": classes.shape[0],
        },
    }
    (folder / "prediction.json").write_text(json.dumps(summary))
    return str(folder)
