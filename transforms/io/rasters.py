"""Pixel sources: read named bands on an explicit `PixelGrid`.

`LocalRasterSource` reads any GeoTIFF/COG that rasterio/GDAL opens (local paths, `gs://`, `/vsicurl/`
...), one multi-band file or one file per band. When a file's grid matches the requested lattice it is a
plain windowed read; otherwise GDAL's `WarpedVRT` reprojects onto the requested lattice first, so
extraction and prediction see the same pixels whatever the source's own CRS and resolution.

`check_files()` checks every file before a job starts (`transforms.io.integrity.check_raster`). During the
job a failed read is sorted by `transforms.io.integrity.FileHealth`: transient (retried) only where it can
be, and a file that keeps failing is marked broken, so its remaining reads fail at once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Protocol

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from transforms.geometry.grid import GridSpec, PixelGrid
from transforms.io.integrity import (  # noqa: F401 (the errors are part of this module's interface)
    FileHealth,
    ReadError,
    SourceError,
    TransientSourceError,
    check_rasters,
    is_remote,
    open_raster,
    remote_env,
)


@dataclasses.dataclass(frozen=True)
class _BandRef:
    path: str
    index: int  # 1-based band index inside the file


@dataclasses.dataclass
class ReadResult:
    """Pixels of one grid: `pixels` is (H, W, bands); `padded` says some fell outside the source."""

    pixels: np.ndarray
    padded: bool


class PixelSource(Protocol):
    """What extraction and prediction need from a source: named bands on an explicit pixel grid.

    `LocalRasterSource` and `transforms.io.earthengine.client.EarthEngineSource` implement it; sources are
    picklable and open their connections lazily (or in `setup()`, where they have one) on a worker.
    """

    @property
    def bands(self) -> tuple[str, ...]: ...

    def check_bands(self, bands: Sequence[str]) -> None: ...

    def read(
        self,
        grid: PixelGrid,
        bands: Sequence[str],
        *,
        fill: float = 0.0,
        dtype: str = "float32",
        resampling: Resampling = Resampling.bilinear,
    ) -> ReadResult: ...

    def close(self) -> None: ...


class LocalRasterSource:
    """Named bands from one or more rasters. Picklable: file handles are reopened on each worker."""

    def __init__(
        self,
        paths: Sequence[str],
        band_names: Sequence[str] | None = None,
        *,
        file_bands: Sequence[Sequence[str] | None] | None = None,
    ) -> None:
        """`band_names` names every band of every file, in file order (--band-names); `file_bands` names
        the bands of each file on its own (None for a file whose names come from the file), as a STAC
        asset names its bands. Without either, names come from band descriptions, else file names."""
        if not paths:
            raise SourceError("No input rasters given: pass at least one path with --inputs.")
        self.paths = tuple(str(p) for p in paths)
        self._explicit_names = tuple(band_names) if band_names else None
        if file_bands is not None and len(file_bands) != len(self.paths):
            raise ValueError(f"file_bands gives names for {len(file_bands)} files, not {len(self.paths)}.")
        self._file_bands = tuple(tuple(b) if b else None for b in file_bands) if file_bands else None
        self._refs: dict[str, _BandRef] | None = None
        self._datasets: dict[str, rasterio.DatasetReader] = {}
        self._vrts: dict[tuple, WarpedVRT] = {}
        self._aligned: dict[tuple, bool] = {}
        self._health = FileHealth()

    def __getstate__(self) -> dict:
        return {"paths": self.paths, "_explicit_names": self._explicit_names, "_file_bands": self._file_bands}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["paths"], state["_explicit_names"], file_bands=state.get("_file_bands"))

    # --- opening and band names ---------------------------------------------------------------
    def _open(self, path: str) -> rasterio.DatasetReader:
        dataset = self._datasets.get(path)
        if dataset is None:
            self._health.check(path)
            try:
                dataset = open_raster(path)
            except RasterioError as e:
                failure = self._health.failed(path, e)
                if isinstance(failure, ReadError):
                    failure = ReadError(
                        path,
                        failure.problem,
                        failure.detail,
                        f"Cannot open raster {path!r} ({failure.problem}): {failure.detail}. Check the path "
                        "and that the file is a GeoTIFF/COG or another format GDAL reads.",
                    )
                raise failure from e
            if dataset.crs is None:
                raise SourceError(f"Raster {path!r} has no CRS; georeference it (e.g. gdal_edit.py -a_srs).")
            self._datasets[path] = dataset
        return dataset

    @property
    def band_refs(self) -> dict[str, _BandRef]:
        if self._refs is None:
            names: list[tuple[str, _BandRef]] = []
            for p, path in enumerate(self.paths):
                dataset = self._open(path)
                given = self._file_bands[p] if self._file_bands else None
                if given is not None:
                    if len(given) != dataset.count:
                        raise SourceError(
                            f"Raster {path!r} holds {dataset.count} band(s) but {len(given)} name(s) are "
                            f"given for it ({', '.join(given)})."
                        )
                    names += [(name, _BandRef(path, i)) for i, name in enumerate(given, start=1)]
                    continue
                stem = PurePosixPath(path).name.split(".")[0]
                for i, description in enumerate(dataset.descriptions, start=1):
                    if description:
                        name = description
                    elif dataset.count == 1:
                        name = stem
                    else:
                        name = f"{stem}_b{i}"
                    names.append((name, _BandRef(path, i)))
            if self._explicit_names is not None:
                if len(self._explicit_names) != len(names):
                    raise SourceError(
                        f"--band-names gives {len(self._explicit_names)} names but the inputs hold "
                        f"{len(names)} bands ({', '.join(n for n, _ in names)})."
                    )
                names = [(n, ref) for n, (_, ref) in zip(self._explicit_names, names)]
            refs: dict[str, _BandRef] = {}
            for name, ref in names:
                if name in refs:
                    raise SourceError(
                        f"Band name {name!r} occurs in {refs[name].path!r} and {ref.path!r}; "
                        "rename one with --band-names."
                    )
                refs[name] = ref
            self._refs = refs
        return self._refs

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.band_refs)

    def check_files(self) -> None:
        """Check every file cheaply (header, bands, whole) before a job; SourceError names a broken one."""
        check_rasters(self.paths)

    def check_bands(self, bands: Sequence[str]) -> None:
        missing = [b for b in bands if b not in self.band_refs]
        if missing:
            raise SourceError(
                f"Band(s) {', '.join(missing)} not found in the inputs; available: {', '.join(self.bands)}."
            )

    def band_type(self, band: str) -> tuple[str, float | None]:
        """(dtype, nodata) of one band."""
        ref = self.band_refs[band]
        dataset = self._open(ref.path)
        return dataset.dtypes[ref.index - 1], dataset.nodatavals[ref.index - 1]

    def native_grid(self) -> tuple[str, object, int, int]:
        """(CRS, affine transform, width, height) of the first raster."""
        dataset = self._open(self.paths[0])
        return dataset.crs.to_string(), dataset.transform, dataset.width, dataset.height

    def footprint(self, crs: str) -> tuple[float, float, float, float]:
        """Bounds covered by every input raster, in `crs`."""
        boxes = [transform_bounds(self._open(p).crs, crs, *self._open(p).bounds) for p in self.paths]
        return (
            max(b[0] for b in boxes),
            max(b[1] for b in boxes),
            min(b[2] for b in boxes),
            min(b[3] for b in boxes),
        )

    # --- reading ------------------------------------------------------------------------------
    def read(
        self,
        grid: PixelGrid,
        bands: Sequence[str],
        *,
        fill: float = 0.0,
        dtype: str = "float32",
        resampling: Resampling = Resampling.bilinear,
    ) -> ReadResult:
        """The bands on `grid` as (H, W, bands). Pixels outside the rasters or at nodata become `fill`.

        The array is a band-last view of band-first memory: GDAL reads band planes, and the record
        encoder writes band planes, so neither side pays for a transposition.
        """
        self.check_bands(bands)
        out = np.empty((len(bands), grid.height, grid.width), dtype=dtype)
        padded = False
        by_path: dict[str, list[tuple[int, int]]] = {}
        for position, band in enumerate(bands):
            ref = self.band_refs[band]
            by_path.setdefault(ref.path, []).append((position, ref.index))
        for path, wanted in by_path.items():
            self._health.check(path)  # a file marked broken fails at once, without I/O
            try:
                with remote_env(path):
                    reader = self._reader_for(path, grid, resampling)
                    padded |= _read_into(reader, grid, wanted, out, fill)
            except (RasterioError, CPLE_BaseError) as e:
                raise self._health.failed(path, e) from e
            self._health.succeeded(path)
        return ReadResult(np.moveaxis(out, 0, -1), padded)

    def _reader_for(self, path: str, grid: PixelGrid, resampling: Resampling):
        dataset = self._open(path)
        a, _, c, _, e, f = grid.transform
        # Alignment depends only on the lattice, not on the window: decide once per lattice.
        lattice = (path, grid.crs, a, e, c % a, f % e)
        aligned = self._aligned.get(lattice)
        if aligned is None:
            aligned = self._aligned[lattice] = _aligned(dataset, grid)
        if aligned:
            return dataset
        spec = GridSpec(grid.crs, grid.transform[0], grid.transform[2], grid.transform[5])
        key = (path, grid.crs, spec.scale, spec.origin_x % spec.scale, spec.origin_y % spec.scale, resampling)
        vrt = self._vrts.get(key)
        if vrt is None:
            vrt = _BlockWarp(_warped_on_lattice(dataset, spec, resampling))
            self._vrts[key] = vrt
        return vrt

    def close(self) -> None:
        for vrt in self._vrts.values():
            vrt.close()
        for dataset in self._datasets.values():
            dataset.close()
        self._vrts.clear()
        self._datasets.clear()


def _aligned(dataset, grid: PixelGrid) -> bool:
    """True when the grid's pixels are whole pixels of the dataset (same CRS, size, lattice)."""
    t = dataset.transform
    a, b, c, d, e, f = grid.transform
    if b or d or t.b or t.d:
        return False
    if not (math.isclose(t.a, a, rel_tol=1e-9) and math.isclose(t.e, e, rel_tol=1e-9)):
        return False
    col, row = (c - t.c) / t.a, (f - t.f) / t.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return False
    return dataset.crs == rasterio.crs.CRS.from_user_input(grid.crs)


def _warped_on_lattice(dataset, spec: GridSpec, resampling: Resampling) -> WarpedVRT:
    """A WarpedVRT of the whole dataset on the lattice `spec`, so each patch is a window read."""
    left, bottom, right, top = transform_bounds(dataset.crs, spec.crs, *dataset.bounds, densify_pts=21)
    col0, row0 = spec.pixel_of(left, top)
    col1, row1 = spec.pixel_of(right, bottom)
    window = spec.window(col0, row0, col1 - col0 + 1, row1 - row0 + 1)
    return WarpedVRT(
        dataset,
        crs=spec.crs,
        transform=window.affine,
        width=window.width,
        height=window.height,
        resampling=resampling,
    )


class _BlockWarp:
    """A WarpedVRT read through fixed blocks of its lattice.

    GDAL's warper gives slightly different values for the same pixel depending on the window asked
    for (it plans source windows and resampling scales per request). Reading only whole fixed blocks
    makes every pixel come from the same warp whatever the patch or tile size, so training patches
    and prediction tiles see identical values. Recent blocks are kept for neighbouring reads.
    """

    BLOCK = 256
    CACHED_BLOCKS = 16

    def __init__(self, vrt: WarpedVRT) -> None:
        self.vrt = vrt
        self.transform, self.width, self.height = vrt.transform, vrt.width, vrt.height
        self.nodata, self.dtypes, self.name = vrt.nodata, vrt.dtypes, vrt.name
        self._blocks: dict[tuple, np.ndarray] = {}

    def _block(self, row: int, col: int, indexes: tuple[int, ...], masked: bool) -> np.ndarray:
        key = (row, col, indexes, masked)
        block = self._blocks.pop(key, None)
        if block is None:
            b = self.BLOCK
            window = Window(col * b, row * b, min(b, self.width - col * b), min(b, self.height - row * b))
            block = self.vrt.read(list(indexes), window=window, masked=masked)
            if len(self._blocks) >= self.CACHED_BLOCKS:
                self._blocks.pop(next(iter(self._blocks)))
        self._blocks[key] = block  # most recently used last
        return block

    def read(self, indexes, window: Window, masked: bool = False, out: np.ndarray | None = None):
        b = self.BLOCK
        c0, r0 = int(window.col_off), int(window.row_off)
        c1, r1 = c0 + int(window.width), r0 + int(window.height)
        data = np.empty((len(indexes), r1 - r0, c1 - c0), dtype=self.dtypes[0]) if out is None else out
        mask = np.zeros(data.shape, dtype=bool) if masked else None
        for row in range(r0 // b, (r1 - 1) // b + 1):
            for col in range(c0 // b, (c1 - 1) // b + 1):
                block = self._block(row, col, tuple(indexes), masked)
                y0, y1 = max(r0, row * b), min(r1, row * b + block.shape[1])
                x0, x1 = max(c0, col * b), min(c1, col * b + block.shape[2])
                part = (slice(None), slice(y0 - row * b, y1 - row * b), slice(x0 - col * b, x1 - col * b))
                target = (slice(None), slice(y0 - r0, y1 - r0), slice(x0 - c0, x1 - c0))
                data[target] = np.ma.getdata(block[part])
                if masked:
                    mask[target] = np.ma.getmaskarray(block[part])
        return np.ma.masked_array(data, mask) if masked else data

    def close(self) -> None:
        self.vrt.close()


def _read_into(reader, grid: PixelGrid, wanted: list[tuple[int, int]], out: np.ndarray, fill: float) -> bool:
    """Read the grid's window from `reader` into band planes `out[positions]`; True when clipped."""
    t = reader.transform
    col = round((grid.transform[2] - t.c) / t.a)
    row = round((grid.transform[5] - t.f) / t.e)
    c0, r0 = max(col, 0), max(row, 0)
    c1, r1 = min(col + grid.width, reader.width), min(row + grid.height, reader.height)
    padded = c0 != col or r0 != row or c1 != col + grid.width or r1 != row + grid.height
    positions = [position for position, _ in wanted]
    if padded:
        out[positions] = fill
    if c1 <= c0 or r1 <= r0:
        return True
    indexes = [index for _, index in wanted]
    window = Window(c0, r0, c1 - c0, r1 - r0)
    # Masking only matters when nodata must become a different fill value.
    masked = reader.nodata is not None and reader.nodata != fill
    if not (padded or masked) and positions == list(range(len(out))) and out.dtype == reader.dtypes[0]:
        reader.read(indexes, window=window, out=out)  # the common case: straight into the result
        return False
    block = reader.read(indexes, window=window, masked=masked)
    if np.ma.isMaskedArray(block):
        block = block.astype(out.dtype, copy=False).filled(fill)  # e.g. NaN fill of an integer raster
    out[positions, r0 - row : r1 - row, c0 - col : c1 - col] = block
    return padded
