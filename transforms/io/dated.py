"""Imagery by date: rasters of several dates, from the command line or a STAC file (local or gs://).

`--inputs before=s2-2019.tif before=dem.tif after=s2-2023.tif` gives each file a date label (a simple
identifier, a year such as 2019, or an ISO date such as 2019-07-01; a label may repeat to give several files of one date);
`--inputs catalog.json` (a STAC Catalog or Collection, an ItemCollection, or one Item) gives one date per
item. The first date is the reference: the first on the command line, the earliest in a STAC file.

A change job reads such imagery in one of two ways:

- post-classification change: one `LocalRasterSource` per date, with the plain band names, so the same
  model runs on each date (`date_sources`);
- the direct method: one stacked source whose band names carry the date, `{band}_{label}` (`B4_before`,
  `B4_after`), for a model trained on two-date stacks (`stacked_source`). Earth Engine recipes with a
  date suffix (`s2-sr:2019@before+s2-sr:2023@after`) give the same names with `stacked_band`.

Public API:

- `parse_inputs(tokens, band_names=None) -> DatedInputs | None`: the --inputs tokens as dates, or None
  for plain paths (one multi-band file or one file per band, as before). A STAC file is read here.
- `read_stac(path) -> DatedInputs`: a STAC file, local or in Cloud Storage, one item per date.
- `DatedInputs`: label -> tuple of paths, in order (a `Mapping`); `files(label)` gives each path with
  the band names its STAC asset declares; `to_json()` is what a manifest records.
- `date_sources(dated) -> dict[str, LocalRasterSource]`: one source per date, plain band names.
- `stacked_source(sources) -> LocalRasterSource`: every date in one source, bands `{band}_{label}`
  (`stacked_band`).
- `check_dates(sources) -> str | None`: before a job: the files are whole (the source's own check) and
  every date holds the same bands; returns the one note to show when dates lie on different grids (the
  source reprojects them as it reads, through a WarpedVRT).
- `check_model_bands(model_bands, dated) -> str`: whether a model takes each date on its own
  (`PER_DATE`) or the stack (`STACKED`); an error names the bands the model misses and the date.

Errors are `DatedInputsError`, a `SourceError`: bad input that stops a job before it starts.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from transforms.io.rasters import LocalRasterSource, SourceError

# A token LABEL=PATH: only an identifier, a year or an ISO date before the first "=" makes a label, so
# that gs://..., /vsicurl/...?a=b and folder/x=1/a.tif stay plain paths.
_LABELLED = re.compile(r"(?P<label>[A-Za-z][A-Za-z0-9_-]*|\d{4}|\d{4}-\d{2}-\d{2})=(?P<path>.*)", re.DOTALL)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
STAC_SUFFIX = ".json"
TIFF_SUFFIXES = (".tif", ".tiff")
# How check_model_bands says a model reads the dates.
PER_DATE = "per-date"
STACKED = "stacked"


class DatedInputsError(SourceError):
    """Dated --inputs or a STAC file that cannot be used; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class DatedFile:
    """One raster of a date; `bands` names its bands in order (a STAC asset's), None: the file's own."""

    path: str
    bands: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class DatedInputs(Mapping[str, tuple[str, ...]]):
    """Rasters by date: label -> tuple of paths, in order; the first date is the reference.

    `catalog` is the STAC file they came from (None: the command line); `band_names` (--band-names)
    names each date's bands, in file order.
    """

    dates: tuple[tuple[str, tuple[DatedFile, ...]], ...]
    catalog: str | None = None
    band_names: tuple[str, ...] | None = None

    def __getitem__(self, label: str) -> tuple[str, ...]:
        return tuple(f.path for f in self.files(label))

    def __iter__(self) -> Iterator[str]:
        return (label for label, _ in self.dates)

    def __len__(self) -> int:
        return len(self.dates)

    @property
    def reference(self) -> str:
        return self.dates[0][0]

    @property
    def paths(self) -> list[str]:
        """Every path, date after date (a file shared by two dates appears twice)."""
        return [f.path for _, files in self.dates for f in files]

    def files(self, label: str) -> tuple[DatedFile, ...]:
        for name, files in self.dates:
            if name == label:
                return files
        raise KeyError(label)

    def to_json(self) -> dict[str, Any]:
        """The dates as data: [{label, inputs}] in order, and the STAC file they came from."""
        return {
            "dates": [{"label": label, "inputs": list(self[label])} for label in self],
            "stac": self.catalog,
        }


# --- parsing -----------------------------------------------------------------------------------------


def parse_inputs(tokens: Sequence[str] | None, band_names: Sequence[str] | None = None) -> DatedInputs | None:
    """The --inputs tokens as dates: `LABEL=PATH` tokens, or one STAC file (read here). None for plain
    paths, which keep their meaning (one multi-band file or one file per band).

    `band_names` (--band-names) names each date's bands; a STAC file names its own.
    """
    tokens = list(tokens or [])
    names = tuple(band_names) if band_names else None
    matches = [_LABELLED.fullmatch(t) for t in tokens]
    plain = [t for t, m in zip(tokens, matches) if not m]
    paths = [m["path"] if m else t for t, m in zip(tokens, matches)]
    stac = [path for path in paths if path.lower().endswith(STAC_SUFFIX)]
    if stac:
        if len(tokens) > 1 or any(matches):
            raise DatedInputsError(
                f"--inputs takes a STAC file ({stac[0]}) on its own, without a label or other files: its "
                "items give the dates and their files."
            )
        if names:
            raise DatedInputsError(
                f"--band-names renames the bands of files given on the command line; the STAC file "
                f"{stac[0]!r} names its own (asset keys or eo:bands). Leave --band-names out."
            )
        return read_stac(stac[0])
    if not any(matches):
        return None
    if plain:
        raise DatedInputsError(
            f"--inputs mixes dated files (LABEL=PATH) with plain paths ({', '.join(plain)}): give every "
            f"file a date, e.g. before={plain[0]}, or none. A path that starts with NAME= is read as a "
            "dated file; write it as ./NAME=... to keep it a plain path."
        )
    dates: dict[str, list[DatedFile]] = {}
    for match in matches:
        label, path = _label(match["label"]), match["path"]
        if not path:
            raise DatedInputsError(f"--inputs {label}= names no file: write {label}=PATH.")
        if any(f.path == path for f in dates.get(label, ())):
            raise DatedInputsError(f"--inputs gives {path!r} twice for date {label}: give each file once.")
        dates.setdefault(label, []).append(DatedFile(path))
    return DatedInputs(tuple((label, tuple(files)) for label, files in dates.items()), band_names=names)


def _label(label: str) -> str:
    if _ISO_DATE.fullmatch(label):
        try:
            datetime.date.fromisoformat(label)
        except ValueError:
            raise DatedInputsError(
                f"--inputs label {label!r} looks like a date but is none: write a real date (YYYY-MM-DD) "
                "or a name such as before."
            ) from None
    return label


def stacked_band(band: str, label: str) -> str:
    """A band's name in the stack of dates: `B4` of date `before` is `B4_before`."""
    return f"{band}_{label}"


# --- STAC ----------------------------------------------------------------------------------------------


def read_stac(path: str) -> DatedInputs:
    """The dates of a STAC file, local or gs:// (read through `tf.io.gfile`): a Catalog or Collection
    (its items, recursively), an ItemCollection, or one Item. One item per date, labelled by its UTC
    date (`datetime`, else `start_datetime`), earliest first; each item's GeoTIFF assets are its files
    (relative hrefs are resolved against the JSON file, within its bucket for gs://), named by their
    `eo:bands` (or STAC 1.1 `bands`), else their key.
    Assets whose roles leave out `data` (thumbnails, overviews, visual previews) are skipped.
    """
    import pystac
    from pystac.utils import make_absolute_href

    href = make_absolute_href(path)
    stac_io = _stac_io()
    try:
        doc = stac_io.read_json(href)
    except (OSError, ValueError) as e:
        raise DatedInputsError(f"Cannot read the STAC file {path!r}: {e}") from None
    kind = doc.get("type") if isinstance(doc, dict) else None
    try:
        if kind in ("Catalog", "Collection"):
            catalog = pystac.read_dict(doc, href=href, stac_io=stac_io)
            items = list(catalog.get_items(recursive=True))
        elif kind == "FeatureCollection":
            items = list(pystac.ItemCollection.from_dict(doc, preserve_dict=False))
        elif kind == "Feature":
            items = [pystac.Item.from_dict(doc, href=href, preserve_dict=False)]
        else:
            raise DatedInputsError(
                f"{path!r} is not a STAC Catalog, Collection, ItemCollection or Item (its type is "
                f"{kind!r}). Pass a STAC file, or the rasters themselves."
            )
    except (pystac.STACError, pystac.STACTypeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, DatedInputsError):
            raise
        raise DatedInputsError(f"The STAC file {path!r} does not parse as STAC: {e}") from None
    if not items:
        raise DatedInputsError(f"The STAC file {path!r} holds no item: add one item per date.")
    dated: dict[str, tuple[str, tuple[DatedFile, ...]]] = {}
    for item in items:
        label = _item_date(item, path)
        if label in dated:
            raise DatedInputsError(
                f"STAC items {dated[label][0]!r} and {item.id!r} in {path!r} are both dated {label}: keep "
                "one item per date (e.g. a mosaic of the day's scenes)."
            )
        dated[label] = (item.id, _item_files(item, href, path))
    dates = tuple((label, dated[label][1]) for label in sorted(dated))
    return DatedInputs(dates, catalog=path)


def _stac_io() -> Any:
    """pystac's reader, with gs:// (any filesystem of TensorFlow's `tf.io.gfile`) besides local files
    and http(s), so that a catalogue can sit in Cloud Storage beside its COGs."""
    from pystac.stac_io import DefaultStacIO

    class GfileStacIO(DefaultStacIO):
        def read_text_from_href(self, href: str) -> str:
            scheme = href.split("://", 1)[0].lower() if "://" in href else ""
            if scheme in ("", "file", "http", "https"):
                return super().read_text_from_href(href)
            import tensorflow as tf

            try:
                with tf.io.gfile.GFile(href, "r") as f:
                    return f.read()
            except tf.errors.OpError as e:  # not an OSError: said as one, as pystac's own reader does
                raise OSError(f"{href}: {e.message}") from None

    return GfileStacIO()


def _item_date(item: Any, path: str) -> str:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise DatedInputsError(
            f"STAC item {item.id!r} in {path!r} has neither datetime nor start_datetime: date it."
        )
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)  # STAC datetimes are UTC; an offset is kept to it
    return when.date().isoformat()


def _item_files(item: Any, base: str, path: str) -> tuple[DatedFile, ...]:
    from pystac.utils import make_absolute_href

    files: list[DatedFile] = []
    seen: dict[str, str] = {}
    for key, asset in item.assets.items():
        if not _is_raster_data(asset):
            continue
        # An item read on its own has a self link; one of an ItemCollection has none: resolve against
        # the file it was read from.
        href = asset.get_absolute_href() or make_absolute_href(asset.href, base)
        bands = _asset_bands(key, asset, item.id, path)
        for band in bands:
            if band in seen:
                raise DatedInputsError(
                    f"STAC item {item.id!r} in {path!r} names band {band!r} in assets {seen[band]!r} and "
                    f"{key!r}: each band once per item."
                )
            seen[band] = key
        files.append(DatedFile(href, bands))
    if not files:
        raise DatedInputsError(
            f"STAC item {item.id!r} in {path!r} has no GeoTIFF data asset (type image/tiff, or a .tif href): "
            f"its assets are {', '.join(item.assets) or 'none'}."
        )
    return tuple(files)


def _is_raster_data(asset: Any) -> bool:
    roles = asset.roles or []
    if roles and "data" not in roles:
        return False
    media_type = (asset.media_type or "").lower()
    if media_type:
        return "tiff" in media_type  # image/tiff; application=geotiff[; profile=cloud-optimized]
    return asset.href.lower().split("?")[0].endswith(TIFF_SUFFIXES)


def _asset_bands(key: str, asset: Any, item: str, path: str) -> tuple[str, ...]:
    declared = asset.extra_fields.get("eo:bands") or asset.extra_fields.get("bands")
    if not declared:
        return (key,)
    names = [band.get("name") if isinstance(band, dict) else None for band in declared]
    if not all(isinstance(n, str) and n for n in names):
        raise DatedInputsError(
            f"STAC asset {key!r} of item {item!r} in {path!r} lists bands without a name: "
            f"{json.dumps(declared)}."
        )
    return tuple(names)


# --- sources -------------------------------------------------------------------------------------------


def date_sources(dated: DatedInputs) -> dict[str, LocalRasterSource]:
    """One source per date, in order, with the plain band names (the same model can run on each)."""
    sources = {}
    for label in dated:
        files = dated.files(label)
        paths = [f.path for f in files]
        if dated.band_names:
            sources[label] = LocalRasterSource(paths, dated.band_names)
        else:
            named = [f.bands for f in files]
            sources[label] = LocalRasterSource(paths, file_bands=named if any(named) else None)
    return sources


def stacked_source(sources: Mapping[str, LocalRasterSource]) -> LocalRasterSource:
    """Every date's files in one source whose bands carry their date: `{band}_{label}`.

    Opens each file's header to learn its bands (the names follow the files' band order).
    """
    paths: list[str] = []
    names: list[str] = []
    for label, source in sources.items():
        paths += source.paths
        names += [stacked_band(band, label) for band in _bands_of(label, source)]
    return LocalRasterSource(paths, names)


def _bands_of(label: str, source: LocalRasterSource) -> tuple[str, ...]:
    try:
        return source.bands
    except DatedInputsError:
        raise
    except SourceError as e:
        raise DatedInputsError(f"Date {label}: {e}") from None


# --- checks --------------------------------------------------------------------------------------------


def check_dates(sources: Mapping[str, LocalRasterSource]) -> str | None:
    """Check the dates before a job; return the note to show once when some lie on another grid.

    Every file must be whole (`LocalRasterSource.check_files`) and every date must hold the same bands
    (the error names the bands each date lacks). Dates on different grids are fine: the source reads
    each onto the job's grid through a WarpedVRT.
    """
    for source in sources.values():
        source.check_files()
    bands = {label: _bands_of(label, source) for label, source in sources.items()}
    every = list(dict.fromkeys(b for names in bands.values() for b in names))
    lacking = {label: [b for b in every if b not in names] for label, names in bands.items()}
    lacking = {label: missing for label, missing in lacking.items() if missing}
    if lacking:
        which = "; ".join(
            f"date {label} lacks {', '.join(missing)} (it has {', '.join(bands[label])})"
            for label, missing in lacking.items()
        )
        raise DatedInputsError(
            f"The dates hold different bands: {which}. Give every date the same bands (the same band "
            "files, or --band-names)."
        )
    return _grid_note(sources)


def _grid_note(sources: Mapping[str, LocalRasterSource]) -> str | None:
    grids = {label: _grid(source) for label, source in sources.items()}
    reference, ref_grid = next(iter(grids.items()))
    other = [label for label, grid in grids.items() if grid[0] != ref_grid[0]]
    if not other:
        return None
    listed = " and ".join(f"{label} ({grids[label][1]})" for label in other)
    are = "are" if len(other) > 1 else "is"
    return (
        f"date{'s' if len(other) > 1 else ''} {listed} {are} on another grid than date {reference} "
        f"({ref_grid[1]}): reprojected onto the job's grid as {'they are' if len(other) > 1 else 'it is'} read."
    )


def _grid(source: LocalRasterSource) -> tuple[tuple, str]:
    """(what makes a grid, how to say it) of a date's first file."""
    import rasterio.crs

    crs, transform, _, _ = source.native_grid()
    xres, yres = abs(transform.a), abs(transform.e)
    key = (
        rasterio.crs.CRS.from_user_input(crs),
        round(xres, 9),
        round(yres, 9),
        round(transform.c % xres, 6),
        round(transform.f % yres, 6),
        transform.b,
        transform.d,
    )
    units = "°" if key[0].is_geographic else " m" if key[0].linear_units in ("metre", "meter") else " units"
    size = f"{xres:g}" if xres == yres else f"{xres:g}×{yres:g}"
    return key, f"{crs}, {size}{units}"


def check_model_bands(
    model_bands: Sequence[str], dated: DatedInputs | Mapping[str, LocalRasterSource]
) -> str:
    """How a model with `model_bands` reads the dates: `PER_DATE` when each date holds all of its bands
    (the same model runs on each), `STACKED` when the stack does (`{band}_{label}`, the direct method).

    `dated`: the inputs, or their per-date sources (`date_sources`). A DatedInputsError names the
    model's bands that a date lacks, and the date.
    """
    sources = date_sources(dated) if isinstance(dated, DatedInputs) else dated
    bands = {label: _bands_of(label, source) for label, source in sources.items()}
    stacked = {stacked_band(b, label) for label, names in bands.items() for b in names}
    if all(b in stacked for b in model_bands):
        return STACKED
    if all(b in names for names in bands.values() for b in model_bands):
        return PER_DATE
    # Longest label first: `B4_t_0` is B4 of date t_0 even when there is a date 0.
    labels = sorted(bands, key=len, reverse=True)
    date_of = {b: next((lab for lab in labels if b.endswith("_" + lab)), None) for b in model_bands}
    every = {b for names in bands.values() for b in names}
    wanted = ", ".join(model_bands)

    def suffixed(band: str) -> bool:
        """A band of the dates with a suffix: the model reads a stack, maybe of other dates."""
        cuts = [i for i, c in enumerate(band) if c == "_"]
        return band not in every and any(band[:i] in every for i in cuts)

    if any(date_of.values()) or any(suffixed(b) for b in model_bands):
        problems = []
        for label in bands:
            missing = [b for b in model_bands if date_of[b] == label and b not in stacked]
            if missing:
                plain = ", ".join(b[: -len(label) - 1] for b in missing)
                problems.append(f"date {label} lacks {plain} (the model's {', '.join(missing)})")
        undated = [b for b in model_bands if date_of[b] is None]
        if undated:
            problems.append(
                f"{', '.join(undated)} name{'s' if len(undated) == 1 else ''} none of the dates "
                f"({', '.join(bands)})"
            )
        raise DatedInputsError(
            f"The model reads a stack of dates ({wanted}), but {'; '.join(problems)}. Give the dates the "
            "model was trained on, with the same labels and bands."
        )
    problems = [
        f"date {label} lacks {', '.join(b for b in model_bands if b not in names)} (it has {', '.join(names)})"
        for label, names in bands.items()
        if any(b not in names for b in model_bands)
    ]
    raise DatedInputsError(
        f"The model needs bands {wanted} on every date, but {'; '.join(problems)}. Give every date the "
        "model's bands."
    )
