"""Writing predictions: Cloud-Optimized GeoTIFFs per tile, a VRT mosaic, a single COG, a quick-look PNG.

Every raster is written on exactly the grid it was predicted on (CRS and affine transform of the tile's
core, or of the whole output), so the files line up pixel for pixel with the input lattice.

- The class map is `uint8`: the class index, `CLASS_NODATA` (255) where there is no prediction, with the
  label scheme's colour table and the class names (and colours) in the metadata.
- Probabilities (optional) have one band per class, named after it: `uint8` scaled by
  `PROBABILITY_SCALE` (GDAL scale metadata 1/254, nodata 255), or `float32` (nodata NaN).
- With a two-class scheme, `probability` is the positive class's (class 1) probability, 0-1, as one band
  named after it: the talk's tree-probability map. float32 (nodata NaN), or uint8 like the others.
- Per tile: one COG per tile core (`tiles/classes/<tile>.tif`), written from memory with GDAL's COG
  driver, and `classes.vrt` mosaicking them (`SourceProperties` given, so opening the VRT opens no tile).
- `--mosaic`: GDAL's COG driver copies the VRT into one COG with overviews, streaming through the block
  cache, so memory stays bounded whatever the size.
- The quick-look PNG is read at reduced resolution from the mosaic (its overviews) or the VRT, coloured
  with the palette, with a legend of the classes and their share of the predicted area.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

import apache_beam as beam
import numpy as np
import rasterio
import rasterio.shutil
from apache_beam.io.filesystems import FileSystems
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import MemoryFile

from transforms.contracts.label_scheme import LabelScheme, classes_tag
from transforms.contracts.prediction import (
    CLASSES_NAME,
    POSITIVE_NAME,
    PROBABILITIES,
    PROBABILITIES_NAME,
    PROBABILITY_NODATA_UINT8,
    PROBABILITY_SCALE,
    TILES_DIR,
)
from transforms.contracts.schema import CLASS_NODATA
from transforms.geometry.grid import PixelGrid
from transforms.inference import TilePrediction
from transforms.io.files import join
from transforms.runtime import progress

# Internal tiles of the COGs. Per-tile files are small, so a smaller block keeps partial blocks small
# and gives the larger tiles (e.g. --tile-size 1024) overview levels of their own.
TILE_BLOCKSIZE = 256
MOSAIC_BLOCKSIZE = 512
COMPRESSION = "DEFLATE"
QUICKLOOK_MAX_SIDE = 1024
QUICKLOOK_MAX_ENTRIES = 12  # legend lines of a map that lists only its classes present
QUICKLOOK_MIN_SIDE = 512
QUICKLOOK_NODATA_RGB = (255, 255, 255)


def colormap(scheme: LabelScheme) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: class colours, nodata transparent, unused entries black."""
    table = {i: (0, 0, 0, 255) for i in range(256)}
    for i, rgb in enumerate(scheme.palette_rgb()):
        table[i] = (*rgb, 255)
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """What to write for each tile, and where."""

    output: str  # folder, local or gs://
    scheme: LabelScheme  # the model's classes, in output order
    probabilities: str = "none"  # one of PROBABILITIES

    def __post_init__(self) -> None:
        if self.probabilities not in PROBABILITIES:
            raise ValueError(f"--probabilities must be one of {PROBABILITIES}, got {self.probabilities!r}.")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.scheme.names

    @property
    def positive_encoding(self) -> str | None:
        """How the positive class's probability is written (two-class schemes only), else None."""
        if not self.scheme.is_binary:
            return None
        return "uint8" if self.probabilities == "uint8" else "float32"

    @property
    def kinds(self) -> list[str]:
        """The rasters written for each tile."""
        kinds = [CLASSES_NAME]
        if self.probabilities != "none":
            kinds.append(PROBABILITIES_NAME)
        if self.positive_encoding:
            kinds.append(POSITIVE_NAME)
        return kinds

    @property
    def needs_probabilities(self) -> bool:
        return len(self.kinds) > 1

    def bands_of(self, kind: str) -> tuple[tuple[str, ...], str]:
        """(band names, encoding) of a kind of raster."""
        if kind == CLASSES_NAME:
            return (CLASSES_NAME,), "uint8"
        if kind == POSITIVE_NAME:
            return (self.scheme.positive_class,), self.positive_encoding
        return self.classes, self.probabilities

    def path(self, *parts: str) -> str:
        return join(self.output, *parts)

    def tile_path(self, kind: str, tile_id: str) -> str:
        return self.path(TILES_DIR, kind, f"{tile_id}.tif")


# --- encoding rasters -----------------------------------------------------------------------------


def _profile(grid: PixelGrid, count: int, dtype: str, nodata: float, blocksize: int, resampling: str) -> dict:
    return {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": dtype,
        "crs": CRS.from_user_input(grid.crs),
        "transform": grid.affine,
        "nodata": nodata,
        "compress": COMPRESSION,
        "predictor": "YES" if dtype == "float32" else "NO",
        "blocksize": blocksize,
        "overview_resampling": resampling,
        "bigtiff": "IF_SAFER",
    }


def encode_classes(classes: np.ndarray, grid: PixelGrid, scheme: LabelScheme) -> bytes:
    """A class map (h, w) uint8 as COG bytes, with the colour table and class names."""
    profile = _profile(grid, 1, "uint8", CLASS_NODATA, TILE_BLOCKSIZE, "MODE")
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(classes, 1)
            dst.write_colormap(1, colormap(scheme))
            dst.set_band_description(1, CLASSES_NAME)
            dst.update_tags(1, **class_tags(scheme))
        return memory.read()


def class_tags(scheme: LabelScheme) -> dict[str, str]:
    """Band metadata of a class map: what each value means (also `classes`, in terrabeam's own
    "value:name" form that extraction reads back from a label raster)."""
    return {
        "class_names": ",".join(scheme.names),
        "class_colors": ",".join(scheme.colors),
        "classes": classes_tag(scheme.names),
        "label_scheme": scheme.name,
        "nodata_meaning": "no prediction",
    }


def probability_band(probabilities: np.ndarray, encoding: str) -> np.ndarray:
    """(h, w, classes) float32 with NaN nodata -> (classes, h, w) in the requested encoding."""
    bands = np.moveaxis(probabilities, -1, 0)
    if encoding == "float32":
        return np.ascontiguousarray(bands, dtype=np.float32)
    scaled = np.rint(np.nan_to_num(bands, nan=0.0) * PROBABILITY_SCALE)
    out = np.clip(scaled, 0, PROBABILITY_SCALE).astype(np.uint8)
    out[np.isnan(bands)] = PROBABILITY_NODATA_UINT8
    return out


def encode_probabilities(
    probabilities: np.ndarray, grid: PixelGrid, class_names: Sequence[str], encoding: str
) -> bytes:
    """Per-class probabilities (h, w, classes) as COG bytes, one band per class."""
    bands = probability_band(probabilities, encoding)
    nodata = float("nan") if encoding == "float32" else PROBABILITY_NODATA_UINT8
    profile = _profile(grid, len(class_names), encoding, nodata, TILE_BLOCKSIZE, "AVERAGE")
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.write(bands)
            for i, name in enumerate(class_names, start=1):
                dst.set_band_description(i, name)
            if encoding == "uint8":
                dst.scales = [1.0 / PROBABILITY_SCALE] * len(class_names)
                dst.offsets = [0.0] * len(class_names)
        return memory.read()


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file, local or remote, replacing it (the write of a retried bundle is idempotent).

    A local file appears under its name only once complete (written aside, then renamed), so a job
    stopped mid-write leaves no partial tile for `--resume` to trust; cloud objects appear whole anyway.
    """
    if "://" not in path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        partial = f"{path}.partial-{os.getpid()}-{threading.get_ident()}"
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
        return
    with FileSystems.create(path) as f:
        f.write(data)


# --- per-tile writer ------------------------------------------------------------------------------


def write_tile(prediction: TilePrediction, spec: OutputSpec) -> dict[str, Any]:
    """Write a tile's COG(s); returns what the mosaic and the summary need (small)."""
    tile = prediction.tile
    write_bytes(
        spec.tile_path(CLASSES_NAME, tile.id), encode_classes(prediction.classes, tile.core, spec.scheme)
    )
    if spec.probabilities != "none" and prediction.probabilities is not None:
        data = encode_probabilities(prediction.probabilities, tile.core, spec.classes, spec.probabilities)
        write_bytes(spec.tile_path(PROBABILITIES_NAME, tile.id), data)
    if spec.positive_encoding and prediction.probabilities is not None:
        names, encoding = spec.bands_of(POSITIVE_NAME)
        data = encode_probabilities(prediction.probabilities[..., 1:2], tile.core, names, encoding)
        write_bytes(spec.tile_path(POSITIVE_NAME, tile.id), data)
    counts = np.bincount(prediction.classes.ravel(), minlength=256)
    return {
        "id": tile.id,
        "window": [tile.col_off, tile.row_off, tile.width, tile.height],
        "class_counts": counts[: len(spec.classes)].tolist(),
        "nodata": int(counts[CLASS_NODATA]),
    }


class WriteTiles(beam.DoFn):
    """TilePrediction -> COG file(s) per tile; emits the small record of what was written."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self.written = progress.counter("predict", "tiles_written")
        self.pixels = progress.counter("predict", "pixels_written")

    def process(self, prediction: TilePrediction) -> Iterator[dict[str, Any]]:
        record = write_tile(prediction, self.spec)
        self.written.inc()
        self.pixels.inc(prediction.tile.width * prediction.tile.height)
        yield record


# --- mosaics --------------------------------------------------------------------------------------


def _geotransform(grid: PixelGrid) -> str:
    a, b, c, d, e, f = grid.transform
    return ", ".join(repr(float(v)) for v in (c, a, b, f, d, e))


def build_vrt(
    grid: PixelGrid,
    records: Sequence[Mapping[str, Any]],
    spec: OutputSpec,
    kind: str,
) -> str:
    """VRT XML mosaicking the tile files of `kind` (see `OutputSpec.kinds`), paths relative to it."""
    names, encoding = spec.bands_of(kind)
    data_type = "Float32" if encoding == "float32" else "Byte"
    bands = [(name, data_type) for name in names]
    if kind == CLASSES_NAME:
        nodata = str(CLASS_NODATA)
    else:
        nodata = "nan" if encoding == "float32" else str(PROBABILITY_NODATA_UINT8)
    block = TILE_BLOCKSIZE
    lines = [
        f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">',
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(CRS.from_user_input(grid.crs).to_wkt())}</SRS>',
        f"  <GeoTransform>{_geotransform(grid)}</GeoTransform>",
    ]
    ordered = sorted(records, key=lambda r: r["id"])
    for number, (name, data_type) in enumerate(bands, start=1):
        lines.append(f'  <VRTRasterBand dataType="{data_type}" band="{number}">')
        lines.append(f"    <Description>{escape(name)}</Description>")
        lines.append(f"    <NoDataValue>{nodata}</NoDataValue>")
        if kind == CLASSES_NAME:
            lines.append("    <ColorInterp>Palette</ColorInterp>")
            lines.append("    <ColorTable>")
            for _, (r, g, b, a) in sorted(colormap(spec.scheme).items()):
                lines.append(f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>')
            lines.append("    </ColorTable>")
            lines.append("    <Metadata>")
            for key, value in class_tags(spec.scheme).items():
                lines.append(f'      <MDI key="{key}">{escape(value)}</MDI>')
            lines.append("    </Metadata>")
        elif encoding == "uint8":
            lines.append(f"    <Scale>{1.0 / PROBABILITY_SCALE!r}</Scale>")
            lines.append("    <Offset>0</Offset>")
        for record in ordered:
            x, y, w, h = record["window"]
            source = posixpath.join(TILES_DIR, kind, f"{record['id']}.tif")
            lines += [
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="1">{source}</SourceFilename>',
                f"      <SourceBand>{number}</SourceBand>",
                f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="{data_type}" '
                f'BlockXSize="{block}" BlockYSize="{block}"/>',
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                f'      <DstRect xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/>',
                "    </SimpleSource>",
            ]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def gdal_path(path: str) -> str:
    """A path GDAL opens: gs:// and s3:// through its virtual file systems."""
    for scheme, vsi in (("gs://", "/vsigs/"), ("s3://", "/vsis3/")):
        if path.startswith(scheme):
            return vsi + path[len(scheme) :]
    return path


def vrt_to_cog(vrt: str, destination: str, kind: str) -> None:
    """Copy a VRT mosaic into one COG with overviews (GDAL streams it block by block)."""
    resampling = "MODE" if kind == CLASSES_NAME else "AVERAGE"
    with rasterio.open(gdal_path(vrt)) as src:
        predictor = "YES" if src.dtypes[0] == "float32" else "NO"
    options = {
        "driver": "COG",
        "compress": COMPRESSION,
        "predictor": predictor,
        "blocksize": MOSAIC_BLOCKSIZE,
        "overview_resampling": resampling,
        "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",
    }
    if "://" not in destination:
        os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
        partial = destination + ".partial"
        rasterio.shutil.copy(gdal_path(vrt), partial, **options)
        os.replace(partial, destination)
        return
    with tempfile.TemporaryDirectory(prefix="terrabeam-mosaic-") as tmp:
        local = os.path.join(tmp, "mosaic.tif")
        rasterio.shutil.copy(gdal_path(vrt), local, **options)
        with open(local, "rb") as src, FileSystems.create(destination) as dst:
            shutil.copyfileobj(src, dst, length=16 << 20)


# --- quick-look -----------------------------------------------------------------------------------


def quicklook_png(
    classes_raster: str,
    scheme: LabelScheme,
    class_counts: Sequence[int],
    title: str = "",
    max_side: int = QUICKLOOK_MAX_SIDE,
    only_present: bool = False,
) -> bytes:
    """A PNG of the class map at reduced resolution (read from overviews when there are), with a legend
    (of the classes the map holds only, largest first, with `only_present`: a transitions map has dozens
    of codes; beyond QUICKLOOK_MAX_ENTRIES they are one line)."""
    from PIL import Image, ImageDraw

    with rasterio.open(gdal_path(classes_raster)) as src:
        factor = max(src.width, src.height) / max_side
        shape = (
            (max(1, round(src.height / factor)), max(1, round(src.width / factor))) if factor > 1 else None
        )
        if shape is None:
            data = src.read(1)
        else:
            data = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = QUICKLOOK_NODATA_RGB
    colours = scheme.palette_rgb()
    for i, rgb in enumerate(colours):
        lut[i] = rgb
    image = Image.fromarray(lut[data], "RGB")
    if max(image.size) < QUICKLOOK_MIN_SIDE:  # blow small maps up, pixels kept square and sharp
        zoom = -(-QUICKLOOK_MIN_SIDE // max(image.size))
        image = image.resize((image.width * zoom, image.height * zoom), Image.Resampling.NEAREST)

    font = _font(14)
    total = max(sum(class_counts), 1)
    order = range(len(scheme.names))
    if only_present:
        # Present classes, largest first; the long tail of a transitions map folded into one line.
        order = sorted((i for i in order if class_counts[i]), key=lambda i: -class_counts[i])
    order = list(order)
    limit = QUICKLOOK_MAX_ENTRIES if only_present else len(order)
    shown, rest = order[:limit], order[limit:]
    entries = [(colours[i], f"{scheme.names[i]}  {100 * class_counts[i] / total:.1f} %") for i in shown]
    if rest:
        others = sum(class_counts[i] for i in rest)
        entries.append(((255, 255, 255), f"{len(rest)} more  {100 * others / total:.1f} %"))
    pad, swatch, line = 12, 16, 22
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max([measure.textlength(text, font=font) for _, text in entries] + [0])
    title_width = measure.textlength(title, font=font) if title else 0
    legend_width = int(pad * 3 + swatch + text_width)
    width = max(image.width + legend_width, int(title_width + 2 * pad))
    title_height = line + pad if title else 0
    height = max(image.height, pad * 2 + line * len(entries)) + title_height
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), title, fill=(0, 0, 0), font=font)
    canvas.paste(image, (0, title_height))
    x = image.width + pad
    for i, (rgb, text) in enumerate(entries):
        y = title_height + pad + i * line
        draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(rgb), outline=(0, 0, 0))
        draw.text((x + swatch + pad, y), text, fill=(0, 0, 0), font=font)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()
