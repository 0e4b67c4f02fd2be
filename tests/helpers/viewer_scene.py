"""A small scene whose prediction is known in advance, made with the real extraction and prediction jobs.

256×256 pixels of 10 m (EPSG:32632) with Sentinel-2-named bands B2, B3, B4 (drawn as true colour) and
B8, in four quadrants: water (top left), trees (top right), grass (bottom left), flooded vegetation (bottom
right), the first four Dynamic World classes (the extraction's default scheme);
the bottom 16 rows hold no data (every band 0). B8 encodes the class, and a 1×1 convolution with set
weights turns it into crisp probabilities, so the class map is exactly the quadrants. The training data
is a real extraction of the same scene (regions and points), which the model's `model.json` names.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as transform_coords

from tests.helpers.scenes import utm_box_to_lonlat
from transforms.contracts.label_scheme import classes_tag

CRS = "EPSG:32632"
ORIGIN = (600_000.0, 5_120_000.0)
SCALE = 10.0
SIZE = 256
NODATA_ROWS = 16
BANDS = ("B2", "B3", "B4", "B8")
CLASSES = ("water", "trees", "grass", "flooded_vegetation")
# (B2, B3, B4) per class: what a true-colour picture of each quadrant is made of.
COLOURS = {
    "water": (900, 600, 300),
    "trees": (350, 700, 300),
    "grass": (500, 1000, 800),
    "flooded_vegetation": (800, 800, 600),
}


@dataclasses.dataclass(frozen=True)
class ViewerScene:
    image: str
    labels: str
    regions: str
    labels_array: np.ndarray

    @staticmethod
    def lonlat(row: float, col: float) -> tuple[float, float]:
        """Lon/lat of a pixel position (row, col), pixel centres at +0.5."""
        x = ORIGIN[0] + col * SCALE
        y = ORIGIN[1] - row * SCALE
        lons, lats = transform_coords(CRS, "EPSG:4326", [x], [y])
        return lons[0], lats[0]

    def quadrant_centres(self) -> dict[str, tuple[float, float]]:
        """Class name -> lon/lat of the middle of its quadrant."""
        q = SIZE // 4
        bottom = 3 * q - NODATA_ROWS // 2
        rows = {"water": q, "trees": q, "grass": bottom, "flooded_vegetation": bottom}
        cols = {"water": q, "trees": 3 * q, "grass": q, "flooded_vegetation": 3 * q}
        return {name: self.lonlat(rows[name] + 0.5, cols[name] + 0.5) for name in CLASSES}


def write_viewer_scene(folder: Path) -> ViewerScene:
    folder.mkdir(parents=True, exist_ok=True)
    half = SIZE // 2
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[:half, half:] = 1
    labels[half:, :half] = 2
    labels[half:, half:] = 3
    pixels = np.zeros((len(BANDS), SIZE, SIZE), np.float32)
    shade = np.linspace(0.9, 1.1, SIZE, dtype=np.float32)[None, :]  # a gentle gradient, for the eye
    for index, name in enumerate(CLASSES):
        where = labels == index
        for band, value in enumerate(COLOURS[name]):
            pixels[band][where] = (value * shade.repeat(SIZE, 0))[where]
        pixels[3][where] = 1000.0 * index + 500.0
    pixels[:, SIZE - NODATA_ROWS :, :] = 0.0
    labels[SIZE - NODATA_ROWS :, :] = 255
    profile = dict(
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        crs=CRS,
        transform=from_origin(*ORIGIN, SCALE, SCALE),
        tiled=True,
        blockxsize=64,
        blockysize=64,
    )
    image = folder / "image.tif"
    with rasterio.open(image, "w", count=len(BANDS), dtype="float32", **profile) as dst:
        dst.write(pixels)
        for i, name in enumerate(BANDS, start=1):
            dst.set_band_description(i, name)
    label_path = folder / "labels.tif"
    with rasterio.open(label_path, "w", count=1, dtype="uint8", nodata=255, **profile) as dst:
        dst.write(labels, 1)
        dst.set_band_description(1, "landcover")
        dst.update_tags(1, classes=classes_tag(CLASSES))
    x0, y0 = ORIGIN
    margin = 40 * SCALE
    regions = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "centre"},
                "geometry": utm_box_to_lonlat(
                    x0 + margin,
                    y0 - (SIZE - NODATA_ROWS) * SCALE + margin,
                    x0 + SIZE * SCALE - margin,
                    y0 - margin,
                ),
            }
        ],
    }
    regions_path = folder / "regions.geojson"
    regions_path.write_text(json.dumps(regions))
    return ViewerScene(str(image), str(label_path), str(regions_path), labels)


def quadrant_model():
    """Class k where B8 is in [1000k, 1000(k+1)): a 1×1 convolution on B8 (logit_k = s (k v - c_k))."""
    import keras

    inputs = keras.Input((None, None, len(BANDS)), name="image")
    conv = keras.layers.Conv2D(len(CLASSES), 1)
    outputs = keras.layers.Softmax(name="probabilities")(conv(inputs))
    model = keras.Model(inputs, outputs)
    sharpness = 8.0
    kernel = np.zeros((1, 1, len(BANDS), len(CLASSES)), np.float32)
    kernel[0, 0, 3, :] = sharpness * np.arange(len(CLASSES)) / 1000.0
    thresholds = np.cumsum(np.arange(len(CLASSES)), dtype=np.float32)  # boundaries at v = 1, 2, 3
    conv.set_weights([kernel, (-sharpness * thresholds).astype(np.float32)])
    return model


def predict_viewer_scene(folder: Path, *, mosaic: bool = False) -> tuple[ViewerScene, Path]:
    """Scene -> extraction (training data) -> model folder -> prediction; returns the prediction folder."""
    from model.export import export_model
    from pipelines import extract, predict

    scene = write_viewer_scene(folder / "scene")
    data = folder / "data"
    extract.run(
        [
            "--inputs", scene.image, "--labels", scene.labels, "--regions", scene.regions,
            "--patch-size", "16", "--points-per-class", "5", "--output", str(data),
        ]
    )  # fmt: skip
    model_dir = folder / "model"
    export_model(
        quadrant_model(),
        str(model_dir),
        {
            "mode": "segmentation",
            "bands": list(BANDS),
            "classes": list(CLASSES),
            "patch_size": 16,
            "crs": CRS,
            "scale": SCALE,
            "training": {"data": str(data)},
        },
    )
    output = folder / ("mosaic" if mosaic else "predictions")
    predict.run(
        [
            "--model", str(model_dir), "--inputs", scene.image, "--output", str(output),
            "--tile-size", "96", "--overlap", "0", "--probabilities", "uint8",
            *(["--mosaic"] if mosaic else []),
        ]
    )  # fmt: skip
    return scene, output


# --- a change between two dates of the scene ---------------------------------------------------------

CHANGE_DATES = ("2019", "2023")
# What the second date changes, as (class before, class after, rows, columns): the right half of the
# water quadrant became trees, the left half of the flooded vegetation grass.
CHANGES = (
    ("water", "trees", slice(0, SIZE // 2), slice(SIZE // 4, SIZE // 2)),
    ("flooded_vegetation", "grass", slice(SIZE // 2, SIZE - NODATA_ROWS), slice(SIZE // 2, 3 * SIZE // 4)),
)
# The second date is sure of its trees (P(change) there about 0.97) but hesitates between grass (0.5)
# and flooded vegetation (0.45), so P(change) there is about 0.55: a confidence floor of 0.6 leaves that
# change uncertain.
AFTER_CONFIDENCE = 0.9
HESITANT = {"grass": 0.5, "flooded_vegetation": 0.45}


def after_classes(labels: np.ndarray) -> np.ndarray:
    """The scene's class map at the second date (255 where the first has no data)."""
    after = labels.copy()
    for _, to, rows, cols in CHANGES:
        after[rows, cols] = CLASSES.index(to)
    return after


def write_viewer_change(
    folder: Path, scene: ViewerScene, predictions: Path, min_confidence: float | None = None
) -> Path:
    """A change folder as `terrabeam change` writes it: the scene's prediction as the first date, a second
    date (CHANGES) on the same grid with its probabilities, both in dates/<label>, then transitions.tif,
    changed.tif, change_probability.tif, transitions.png (transforms.change.compare) and change.json."""
    from tests.helpers.class_maps import write_prediction
    from transforms.change.compare import compare, open_prediction, write_summary

    before_label, after_label = CHANGE_DATES
    dates = folder / "dates"
    before = dates / before_label
    shutil.copytree(predictions, before)
    summary = json.loads((before / "prediction.json").read_text())
    after = after_classes(scene.labels_array)
    n = len(CLASSES)
    probabilities = np.full((*after.shape, n), (1 - AFTER_CONFIDENCE) / (n - 1), np.float32)
    np.put_along_axis(
        probabilities, np.minimum(after, n - 1)[..., None].astype(np.int64), AFTER_CONFIDENCE, -1
    )
    rows, cols = CHANGES[1][2], CHANGES[1][3]
    probabilities[rows, cols] = [0.025, 0.025, HESITANT["grass"], HESITANT["flooded_vegetation"]]
    probabilities[after == 255] = np.nan
    colors = tuple(c["color"] for c in summary["label_scheme"]["classes"])
    write_prediction(dates / after_label, after, probabilities, names=CLASSES, colors=colors)
    # The second date read the same kind of imagery with the same model: its prediction.json says so.
    after_summary = json.loads((dates / after_label / "prediction.json").read_text())
    for key in ("model", "bands", "label_scheme", "source"):
        after_summary[key] = summary[key]
    valid = after[after != 255]
    after_summary["class_counts"] = {name: int((valid == i).sum()) for i, name in enumerate(CLASSES)}
    (dates / after_label / "prediction.json").write_text(json.dumps(after_summary))
    maps = [open_prediction(label, str(dates / label)) for label in CHANGE_DATES]
    numbers = compare(*maps, str(folder), min_confidence).to_json()
    # change.json as the change command writes it (its "predictions" as the command was given them)
    doc = {
        "method": "post-classification",
        "dates": {"before": before_label, "after": after_label},
        "model": summary.get("model"),
        "predictions": {label: str(dates / label) for label in CHANGE_DATES},
        "source": {"option": "--maps", "dates": {label: str(dates / label) for label in CHANGE_DATES}},
        "grid": summary.get("grid"),
        "files": {
            "transitions": "transitions.tif",
            "changed": "changed.tif",
            "quicklook": "transitions.png",
            "change_probability": "change_probability.tif",
        },
        **numbers,
    }
    write_summary(str(folder), doc)
    return folder


def write_true_transitions(change: Path, path: Path) -> str:
    """The transitions as they truly were, for an assessment of the change map: the map's, except that
    the top quarter of its water -> trees block did not change (a commission error of the map)."""
    import rasterio

    with rasterio.open(change / "transitions.tif") as src:
        profile = src.profile
        codes = src.read(1)
        tags = src.tags(1)
        colormap = src.colormap(1)
    _, _, rows, cols = CHANGES[0]
    codes[rows.start : rows.start + (rows.stop - rows.start) // 4, cols] = 0
    profile.update(driver="GTiff")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes, 1)
        dst.update_tags(1, **tags)
        dst.write_colormap(1, colormap)
    return str(path)
