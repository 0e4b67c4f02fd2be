"""Label schemes: which raster values are which classes, their names and colours, as data.

A scheme travels from extraction (`--label-scheme`) into `manifest.json`, from there into the model
folder (`model.json`) and from there into every output (COG colour tables and band names,
`prediction.json`, the quick-look legend, Earth Engine's output band names).

The classes file (JSON), following Raster Vision's class config (names, colours, a null class):

    {
      "name": "nc-landclass96",
      "classes": [
        {"name": "developed", "values": [1], "color": "#c4281b"},
        {"name": "agriculture", "values": [2]},
        ...
      ],
      "ignore": [0]
    }

- The class index is the position in `classes`; `values` are the label values (raster pixel values or
  Earth Engine label values) that become that class; several values may map to one class (NLCD 21-24
  -> "developed"). `"values": "*"` makes a class take every value no other class lists (the negative
  class of a binary problem); at most one class may do so.
- `ignore` values become "no label" (255), as does a raster's own nodata; they are left out of the
  loss and the metrics.
- `color` is optional: `#rrggbb`, `#rgb`, a CSS colour name or `[r, g, b]`; without it the class gets
  the next colour of a default palette.
- Raster Vision's own form, `{"names": [...], "colors": [...], "null_class": "..."}`, is read too: the
  value of a class is its position in `names`, and the null class's value is ignored.

Presets by name: `dynamic-world` (the 9 Dynamic World classes, values 0-8), `worldcover` (the 11 ESA
WorldCover codes), `dynamic-world-from-worldcover` (WorldCover codes grouped into the Dynamic World
classes), `nlcd` (the NLCD legend), `forest-loss` (0 `no_forest_loss`, 1 `forest_loss`: the Earth
Engine recipe hansen-loss), and the binary shortcut `binary:NAME=V[,V...][:ignore=V[,V...]]`
(class 1 NAME from those values, class 0 `not_NAME` from every other value).
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from transforms.contracts.schema import LABEL_NODATA

# Class indices 0..253 fit a uint8 label next to LABEL_NODATA (255); 254 marks an unknown value
# while remapping, before the policy for unknown values decides what it becomes.
MAX_CLASSES = 254
UNKNOWN_INDEX = 254
REST = "*"
# Integer labels are remapped through a table when their values span at most this many integers.
MAX_LOOKUP_TABLE = 1 << 20
FORMAT = "terrabeam-label-scheme/1"

# What a label value no class lists becomes: an error before the job starts, or "no label".
UNKNOWN_ERROR = "error"
UNKNOWN_IGNORE = "ignore"
UNKNOWN_POLICIES = (UNKNOWN_ERROR, UNKNOWN_IGNORE)

# Colours for classes that do not give one: Tableau 20, then evenly spread hues.
DEFAULT_PALETTE: tuple[str, ...] = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)
# The negative class of the binary shortcut: a neutral grey, so the positive class stands out.
BINARY_NEGATIVE_COLOR = "#d9d9d9"
BINARY_POSITIVE_COLOR = "#1a9850"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class LabelSchemeError(ValueError):
    """A label scheme that cannot be used; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class LabelClass:
    """One class: its name, the label values that make it, its colour (`#rrggbb`)."""

    name: str
    values: tuple[int, ...]
    color: str
    rest: bool = False  # takes every value that no other class lists and that is not ignored

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "values": REST if self.rest else list(self.values), "color": self.color}


@dataclasses.dataclass(frozen=True)
class LabelScheme:
    """Classes in index order, the ignored values, and a name for the whole scheme."""

    name: str
    classes: tuple[LabelClass, ...]
    ignore: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check(self)

    # --- what downstream jobs read ------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def colors(self) -> tuple[str, ...]:
        return tuple(c.color for c in self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_binary(self) -> bool:
        """Two classes: class 1 is the positive one, whose probability is the headline map."""
        return len(self.classes) == 2

    @property
    def positive_class(self) -> str | None:
        return self.classes[1].name if self.is_binary else None

    def palette_rgb(self) -> list[tuple[int, int, int]]:
        return [hex_to_rgb(c) for c in self.colors]

    def index(self, name: str) -> int:
        """The index of the class `name`; a LabelSchemeError lists the names otherwise."""
        try:
            return self.names.index(name)
        except ValueError:
            raise LabelSchemeError(
                f"No class named {name!r} in the label scheme {self.name!r}; its classes are "
                f"{', '.join(self.names)}."
            ) from None

    @property
    def rest_index(self) -> int | None:
        return next((i for i, c in enumerate(self.classes) if c.rest), None)

    def value_map(self) -> dict[int, int]:
        """Label value -> class index (LABEL_NODATA for ignored values); the rest class is not in it."""
        mapping = {v: LABEL_NODATA for v in self.ignore}
        for index, cls in enumerate(self.classes):
            mapping.update({v: index for v in cls.values})
        return mapping

    @property
    def is_identity(self) -> bool:
        """Value i is class i for every class, nothing else is mapped: remapping changes nothing."""
        return not self.ignore and all(c.values == (i,) and not c.rest for i, c in enumerate(self.classes))

    # --- remapping ----------------------------------------------------------------------------
    def remap(self, values: np.ndarray, nodata: float | None = None) -> np.ndarray:
        """Label values -> uint8 class indices: ignored values, NaN and `nodata` -> LABEL_NODATA (255),
        values no class lists -> UNKNOWN_INDEX (254) unless a class takes the rest.

        Integer labels of up to 16 bits go through a lookup table (and values that are their class
        index already through a bounds check), the hot path of extraction; other types through a
        sorted search."""
        values = np.asarray(values)
        has_nodata = nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata))
        if values.dtype == np.uint8 and self.is_identity and values.max(initial=0) < self.num_classes:
            return values.copy()  # every value is its own class, so no value is nodata either
        if values.dtype.kind in "iu" and values.dtype.itemsize <= 2:
            out = np.take(self._table16, values, mode="wrap")
        elif values.dtype.kind in "iu" and self._lookup is not None:
            out = self._remap_integers(values)
        else:
            out = self._remap_any(values)
            out[np.isnan(values)] = LABEL_NODATA
        if has_nodata:
            out[values == nodata] = LABEL_NODATA
        return out

    @functools.cached_property
    def _table16(self) -> np.ndarray:
        """Class index of every 16-bit value v at position v mod 65536 (signed and unsigned alike)."""
        table = np.full(1 << 16, UNKNOWN_INDEX if self.rest_index is None else self.rest_index, np.uint8)
        for value, index in self.value_map().items():
            if -(1 << 15) <= value < (1 << 16):
                table[value % (1 << 16)] = index
        return table

    @functools.cached_property
    def _lookup(self) -> tuple[int, np.ndarray] | None:
        """(lowest value, table of class indices for lowest..highest value) for integer labels; None
        when the values span too wide a range for a table."""
        mapping = self.value_map()
        default = UNKNOWN_INDEX if self.rest_index is None else self.rest_index
        low = min(mapping, default=0)
        if max(mapping, default=0) - low >= MAX_LOOKUP_TABLE:
            return None
        table = np.full(max(mapping, default=0) - low + 1, default, dtype=np.uint8)
        for value, index in mapping.items():
            table[value - low] = index
        return low, table

    def _remap_integers(self, values: np.ndarray) -> np.ndarray:
        # A table lookup: a few microseconds for a patch, where a sorted search costs ~20x more.
        low, table = self._lookup
        offsets = values.astype(np.int64) - low
        outside = (offsets < 0) | (offsets >= len(table))
        out = table[np.clip(offsets, 0, len(table) - 1)]
        if outside.any():
            out[outside] = UNKNOWN_INDEX if self.rest_index is None else self.rest_index
        return out

    def _remap_any(self, values: np.ndarray) -> np.ndarray:
        flat = values.astype(np.float64, copy=False).ravel()
        mapping = self.value_map()
        keys = np.array(sorted(mapping), dtype=np.float64)
        targets = np.array([mapping[k] for k in sorted(mapping)], dtype=np.uint8)
        rest = self.rest_index
        out = np.full(flat.shape, UNKNOWN_INDEX if rest is None else rest, dtype=np.uint8)
        if len(keys):
            pos = np.minimum(np.searchsorted(keys, flat), len(keys) - 1)
            hit = keys[pos] == flat
            out[hit] = targets[pos[hit]]
        return out.reshape(values.shape)

    def unknown_values(self, histogram: Mapping[float, int]) -> dict[float, int]:
        """Of a {value: pixel count} histogram, the values no class lists (and no rest class takes)."""
        if self.rest_index is not None:
            return {}
        known = self.value_map()
        return {v: n for v, n in histogram.items() if not _is_whole(v) or int(v) not in known}

    def ee_remap(self, unknown: str = UNKNOWN_ERROR) -> tuple[list[int], list[int], int]:
        """(from, to, defaultValue) for Earth Engine's `Image.remap`, the same mapping as `remap`."""
        mapping = self.value_map()
        rest = self.rest_index
        if rest is not None:
            default = rest
        else:
            default = LABEL_NODATA if unknown == UNKNOWN_IGNORE else UNKNOWN_INDEX
        keys = sorted(mapping)
        return keys, [mapping[k] for k in keys], default

    # --- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "classes": [c.to_json() for c in self.classes],
            "ignore": list(self.ignore),
        }


# --- parsing ------------------------------------------------------------------------------------


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def rgb_to_hex(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb[:3])


def default_color(index: int) -> str:
    """The default palette's colour for class `index` (spread hues beyond its 20 entries)."""
    if index < len(DEFAULT_PALETTE):
        return DEFAULT_PALETTE[index]
    hue = (index * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours apart
    light = 0.45 + 0.15 * ((index // 7) % 2)
    return rgb_to_hex([round(255 * v) for v in colorsys.hls_to_rgb(hue, light, 0.65)])


def parse_color(value: Any, where: str) -> str:
    """`#rrggbb` from `#rrggbb`, `#rgb`, a CSS colour name, `rgb(...)` or `[r, g, b]`."""
    if isinstance(value, (list, tuple)):
        if len(value) in (3, 4) and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
            return rgb_to_hex(value)
    elif isinstance(value, str):
        from PIL import ImageColor

        try:
            return rgb_to_hex(ImageColor.getrgb(value.strip()))
        except ValueError:
            pass
    raise LabelSchemeError(
        f"{where}: colour {value!r} is not a colour; use '#rrggbb' (e.g. '#419bdf'), a CSS colour name "
        "or [r, g, b] with values 0-255."
    )


def _is_whole(value: Any) -> bool:
    try:
        return float(value).is_integer()
    except (TypeError, ValueError, OverflowError):
        return False


def _values(raw: Any, where: str) -> tuple[int, ...]:
    items = raw if isinstance(raw, list) else [raw]
    bad = [v for v in items if isinstance(v, bool) or not _is_whole(v)]
    if bad or not items:
        raise LabelSchemeError(
            f"{where}: values must be a list of whole numbers (label values), got {raw!r}."
        )
    return tuple(int(v) for v in items)


def _check(scheme: LabelScheme) -> None:
    if not scheme.name:
        raise LabelSchemeError("A label scheme needs a name.")
    if len(scheme.classes) < 2:
        raise LabelSchemeError(
            f"Label scheme {scheme.name!r} has {len(scheme.classes)} class(es); a land-cover map needs at "
            "least 2 (a binary problem: `binary:NAME=VALUE`)."
        )
    if len(scheme.classes) > MAX_CLASSES:
        raise LabelSchemeError(
            f"Label scheme {scheme.name!r} has {len(scheme.classes)} classes; at most {MAX_CLASSES} fit the "
            "uint8 class map (255 is no data). Group values into fewer classes."
        )
    names = scheme.names
    for name in names:
        if not _NAME.match(name):
            raise LabelSchemeError(
                f"Label scheme {scheme.name!r}: class name {name!r} must start with a letter and use only "
                "letters, digits and '_' (it names raster bands, model outputs and Earth Engine bands)."
            )
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise LabelSchemeError(f"Label scheme {scheme.name!r}: class name(s) {duplicated} occur twice.")
    if sum(c.rest for c in scheme.classes) > 1:
        raise LabelSchemeError(
            f'Label scheme {scheme.name!r}: only one class may take the other values ("values": "*").'
        )
    owner: dict[int, str] = {}
    for cls in scheme.classes:
        if not cls.rest and not cls.values:
            raise LabelSchemeError(f"Label scheme {scheme.name!r}: class {cls.name!r} lists no values.")
        for value in cls.values:
            if value in owner:
                raise LabelSchemeError(
                    f"Label scheme {scheme.name!r}: value {value} is listed by both {owner[value]!r} and "
                    f"{cls.name!r}; a value can make only one class."
                )
            owner[value] = cls.name
    both = sorted(v for v in scheme.ignore if v in owner)
    if both:
        raise LabelSchemeError(
            f"Label scheme {scheme.name!r}: value(s) {both} are both ignored and listed by class "
            f"{owner[both[0]]!r}; remove them from one of the two."
        )
    for cls in scheme.classes:
        if not re.fullmatch(r"#[0-9a-f]{6}", cls.color):
            raise LabelSchemeError(f"Label scheme {scheme.name!r}: class {cls.name!r} colour {cls.color!r}.")


def scheme_from_json(doc: Any, source: str = "classes file") -> LabelScheme:
    """A scheme from the classes-file JSON (or Raster Vision's `names`/`colors`/`null_class` form)."""
    if not isinstance(doc, dict):
        raise LabelSchemeError(f"{source}: a classes file is a JSON object with a 'classes' list.")
    if "classes" not in doc and "names" in doc:
        return _raster_vision_scheme(doc, source)
    items = doc.get("classes")
    if not isinstance(items, list) or not items:
        raise LabelSchemeError(
            f"{source}: 'classes' must be a non-empty list like "
            '[{"name": "water", "values": [1], "color": "#419bdf"}, ...].'
        )
    classes = []
    for i, item in enumerate(items):
        where = f"{source}: class {i}"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise LabelSchemeError(f"{where} must be an object with a 'name' and 'values'.")
        where = f"{source}: class {i} ({item['name']!r})"
        raw = item.get("values", item.get("value"))
        if raw is None:
            raise LabelSchemeError(f"{where} has no 'values' (the label values that make this class).")
        rest = raw == REST
        values = () if rest else _values(raw, where)
        color = parse_color(item["color"], where) if item.get("color") is not None else default_color(i)
        classes.append(LabelClass(item["name"], values, color, rest))
    ignore = _values(doc["ignore"], f"{source}: 'ignore'") if doc.get("ignore") else ()
    return LabelScheme(str(doc.get("name") or _stem(source)), tuple(classes), ignore)


def _raster_vision_scheme(doc: dict, source: str) -> LabelScheme:
    names = doc.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise LabelSchemeError(f"{source}: 'names' must be a list of class names.")
    colors = doc.get("colors") or [None] * len(names)
    if len(colors) != len(names):
        raise LabelSchemeError(f"{source}: 'colors' lists {len(colors)} colours for {len(names)} names.")
    null = doc.get("null_class")
    if null is not None and null not in names:
        raise LabelSchemeError(f"{source}: null_class {null!r} is not one of the names {names}.")
    classes, ignore = [], []
    for value, (name, color) in enumerate(zip(names, colors)):
        if name == null:
            ignore.append(value)
            continue
        where = f"{source}: class {name!r}"
        rgb = parse_color(color, where) if color is not None else default_color(len(classes))
        classes.append(LabelClass(name, (value,), rgb))
    return LabelScheme(str(doc.get("name") or _stem(source)), tuple(classes), tuple(ignore))


def _stem(source: str) -> str:
    return source.rstrip("/").rsplit("/", 1)[-1].split(".")[0] or "classes"


def binary_scheme(spec: str) -> LabelScheme:
    """`binary:NAME=V[,V...][:ignore=V[,V...]]`: class 1 NAME from those values, class 0 every other."""
    body = spec[len("binary:") :]
    parts = body.split(":")
    usage = (
        f"--label-scheme {spec!r}: the binary shortcut is binary:NAME=VALUE[,VALUE...][:ignore=VALUE,...], "
        "e.g. binary:trees=1 or binary:water=1:ignore=-1."
    )
    if "=" not in parts[0]:
        raise LabelSchemeError(usage)
    name, raw = parts[0].split("=", 1)
    ignore: tuple[int, ...] = ()
    for extra in parts[1:]:
        key, _, value = extra.partition("=")
        if key != "ignore" or not value:
            raise LabelSchemeError(usage)
        ignore = _csv_values(value, usage)
    positive = _csv_values(raw, usage)
    return LabelScheme(
        f"binary-{name}",
        (
            LabelClass(f"not_{name}", (), BINARY_NEGATIVE_COLOR, rest=True),
            LabelClass(name, positive, BINARY_POSITIVE_COLOR),
        ),
        ignore,
    )


def _csv_values(text: str, usage: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise LabelSchemeError(usage) from None


# --- presets ------------------------------------------------------------------------------------

_DYNAMIC_WORLD = (
    ("water", "#419bdf"),
    ("trees", "#397d49"),
    ("grass", "#88b053"),
    ("flooded_vegetation", "#7a87c6"),
    ("crops", "#e49635"),
    ("shrub_and_scrub", "#dfc35a"),
    ("built", "#c4281b"),
    ("bare", "#a59b8f"),
    ("snow_and_ice", "#b39fe1"),
)
# ESA WorldCover v100/v200 legend (product user manual): code, name, colour.
_WORLDCOVER = (
    (10, "tree_cover", "#006400"),
    (20, "shrubland", "#ffbb22"),
    (30, "grassland", "#ffff4c"),
    (40, "cropland", "#f096ff"),
    (50, "built_up", "#fa0000"),
    (60, "bare_sparse_vegetation", "#b4b4b4"),
    (70, "snow_and_ice", "#f0f0f0"),
    (80, "permanent_water_bodies", "#0064c8"),
    (90, "herbaceous_wetland", "#0096a0"),
    (95, "mangroves", "#00cf75"),
    (100, "moss_and_lichen", "#fae6a0"),
)
# Dynamic World class -> WorldCover codes (as Google's land-cover sample remaps them).
_DYNAMIC_WORLD_FROM_WORLDCOVER = {
    "water": (80,),
    "trees": (10,),
    "grass": (30,),
    "flooded_vegetation": (90, 95),
    "crops": (40,),
    "shrub_and_scrub": (20,),
    "built": (50,),
    "bare": (60, 100),
    "snow_and_ice": (70,),
}
# Binary forest loss (the Earth Engine label recipe hansen-loss): value 1 lost, 0 not; loss in red.
_FOREST_LOSS = ((0, "no_forest_loss", BINARY_NEGATIVE_COLOR), (1, "forest_loss", "#e31a1c"))
# NLCD legend (MRLC), code, name, colour; 0 and 250 are no data.
_NLCD = (
    (11, "open_water", "#466b9f"),
    (12, "perennial_ice_snow", "#d1def8"),
    (21, "developed_open_space", "#dec5c5"),
    (22, "developed_low_intensity", "#d99282"),
    (23, "developed_medium_intensity", "#eb0000"),
    (24, "developed_high_intensity", "#ab0000"),
    (31, "barren_land", "#b3ac9f"),
    (41, "deciduous_forest", "#68ab5f"),
    (42, "evergreen_forest", "#1c5f2c"),
    (43, "mixed_forest", "#b5c58f"),
    (51, "dwarf_scrub", "#af963c"),
    (52, "shrub_scrub", "#ccb879"),
    (71, "grassland_herbaceous", "#dfdfc2"),
    (72, "sedge_herbaceous", "#d1d182"),
    (73, "lichens", "#a3cc51"),
    (74, "moss", "#82ba9e"),
    (81, "pasture_hay", "#dcd939"),
    (82, "cultivated_crops", "#ab6c28"),
    (90, "woody_wetlands", "#b8d9eb"),
    (95, "emergent_herbaceous_wetlands", "#6c9fb8"),
)


def _presets() -> dict[str, LabelScheme]:
    dynamic_world = tuple(LabelClass(n, (i,), c) for i, (n, c) in enumerate(_DYNAMIC_WORLD))
    return {
        "dynamic-world": LabelScheme("dynamic-world", dynamic_world),
        "worldcover": LabelScheme(
            "worldcover", tuple(LabelClass(n, (v,), c) for v, n, c in _WORLDCOVER), ignore=(0,)
        ),
        "dynamic-world-from-worldcover": LabelScheme(
            "dynamic-world-from-worldcover",
            tuple(LabelClass(n, _DYNAMIC_WORLD_FROM_WORLDCOVER[n], c) for n, c in _DYNAMIC_WORLD),
            ignore=(0,),
        ),
        "nlcd": LabelScheme("nlcd", tuple(LabelClass(n, (v,), c) for v, n, c in _NLCD), ignore=(0, 250)),
        "forest-loss": LabelScheme("forest-loss", tuple(LabelClass(n, (v,), c) for v, n, c in _FOREST_LOSS)),
    }


PRESETS: dict[str, LabelScheme] = _presets()
DEFAULT_SCHEME = "dynamic-world"


def dynamic_world() -> LabelScheme:
    """The default preset: the 9 Dynamic World classes (the demo scene's and the WorldCover recipe's)."""
    return PRESETS[DEFAULT_SCHEME]


def resolve_label_scheme(spec: str) -> LabelScheme:
    """A preset name, the binary shortcut, or a classes file (local or gs://)."""
    spec = spec.strip()
    if spec in PRESETS:
        return PRESETS[spec]
    if spec.startswith("binary:"):
        return binary_scheme(spec)
    return load_classes_file(spec)


def load_classes_file(path: str) -> LabelScheme:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        exists = FileSystems.exists(path)
    except Exception:  # e.g. an unknown URL scheme
        exists = False
    if not exists:
        raise LabelSchemeError(
            f"--label-scheme {path!r} is neither a preset ({', '.join(PRESETS)}), the binary shortcut "
            "(binary:NAME=VALUE) nor an existing classes file; see README, 'Your own labels'."
        )
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            doc = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelSchemeError(f"Classes file {path!r} is not valid JSON: {e}.") from None
    return scheme_from_json(doc, source=path)


def scheme_from_metadata(metadata: Mapping[str, Any]) -> LabelScheme:
    """The scheme a manifest, model.json or prediction.json carries.

    Files written before schemes existed carry only class names: those keep the names, value i for
    class i, and the Dynamic World colours where the names are Dynamic World's.
    """
    doc = metadata.get("label_scheme")
    if doc:
        return scheme_from_json(doc, source="label_scheme")
    names = list(metadata.get("classes") or [])
    known = dict(_DYNAMIC_WORLD)
    classes = tuple(LabelClass(n, (i,), known.get(n) or default_color(i)) for i, n in enumerate(names))
    name = DEFAULT_SCHEME if tuple(names) == dynamic_world().names else "classes"
    return LabelScheme(name, classes)


def describe_histogram(histogram: Mapping[float, int], limit: int = 20) -> str:
    """'1 (65,099 px), 2 (1,433 px), ...' in value order, at most `limit` entries."""
    items = sorted(histogram.items())
    text = ", ".join(f"{_fmt_value(v)} ({n:,} px)" for v, n in items[:limit])
    return text + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _fmt_value(value: float) -> str:
    return str(int(value)) if _is_whole(value) else repr(float(value))


def example_classes_file(values: Iterable[float]) -> str:
    """A classes file to start from, one class per whole value found (names to fill in)."""
    classes = [{"name": f"class_{_fmt_value(v)}", "values": [int(v)]} for v in sorted(values) if _is_whole(v)]
    return json.dumps({"name": "my-classes", "classes": classes, "ignore": []})


# --- schemes and values a label raster carries (I/O) ---------------------------------------------


def _clean_name(name: str) -> str:
    """A category name as a class name: 'Developed, Open Space' -> 'developed_open_space'."""
    cleaned = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return cleaned if cleaned[:1].isalpha() else f"class_{cleaned}"


def classes_tag(names: Sequence[str]) -> str:
    """terrabeam's own `classes` band tag, "0:water,1:trees,...", that `raster_categories` reads."""
    return ",".join(f"{value}:{name}" for value, name in enumerate(names))


def raster_categories(path: str, band: int = 1) -> dict[int, str]:
    """{value: name} the raster carries: GDAL category names or a raster attribute table (in its
    `.aux.xml`), or terrabeam's own `classes` band tag ("0:water,1:trees,..."). Empty when none."""
    import rasterio

    with rasterio.open(path) as src:
        return _categories_of(src, path, band)


def _categories_of(src: Any, path: str, band: int) -> dict[int, str]:
    """raster_categories of the open dataset `src` (read from `path`)."""
    import os
    import xml.etree.ElementTree as ET

    tag = src.tags(band).get("classes", "")
    names: dict[int, str] = {}
    for item in filter(None, (t.strip() for t in tag.split(","))):
        value, _, name = item.partition(":")
        if _is_whole(value) and name:
            names[int(value)] = name
    aux = f"{path}.aux.xml"
    if names or "://" in path or not os.path.exists(aux):
        return names
    try:
        root = ET.parse(aux).getroot()
    except ET.ParseError:
        return names
    for pam in root.iter("PAMRasterBand"):
        if int(pam.get("band", "1")) != band:
            continue
        categories = pam.find("CategoryNames")
        if categories is not None:
            for value, cat in enumerate(categories.findall("Category")):
                if (cat.text or "").strip():
                    names[value] = cat.text.strip()
        table = pam.find("GDALRasterAttributeTable")
        if table is not None and not names:
            names.update(_attribute_table_names(table))
    return names


def _attribute_table_names(table) -> dict[int, str]:
    """{value: name} from a GDAL RAT: the value column (usage MinMax, or named 'Value') and the first
    name column (usage Name, or a string column named like 'class' or 'name')."""
    fields = []
    for defn in table.findall("FieldDefn"):
        fields.append(
            (
                (defn.findtext("Name") or "").strip().lower(),
                int(defn.findtext("Type") or 0),
                int(defn.findtext("Usage") or 0),
            )
        )
    value_col = next((i for i, (n, _, u) in enumerate(fields) if u == 5 or n == "value"), None)
    name_col = next((i for i, (_, t, u) in enumerate(fields) if u == 2), None)
    if name_col is None:
        name_col = next(
            (i for i, (n, t, _) in enumerate(fields) if t == 2 and ("class" in n or "name" in n)), None
        )
    if value_col is None or name_col is None:
        return {}
    names = {}
    for row in table.findall("Row"):
        cells = [f.text or "" for f in row.findall("F")]
        if max(value_col, name_col) < len(cells) and _is_whole(cells[value_col]) and cells[name_col].strip():
            names[int(float(cells[value_col]))] = cells[name_col].strip()
    return names


def scheme_from_raster(path: str, band: int = 1) -> LabelScheme | None:
    """The scheme a label raster describes itself (category names, with its colour table where it has
    one), or None when it names no classes."""
    import rasterio

    with rasterio.open(path) as src:
        categories = _categories_of(src, path, band)
        nodata = src.nodata
        try:
            table = src.colormap(band)
        except ValueError:
            table = {}
    if nodata is not None and _is_whole(nodata):
        categories.pop(int(nodata), None)
    if len(categories) < 2:
        return None
    classes = []
    for i, (value, name) in enumerate(sorted(categories.items())):
        rgba = table.get(value)
        color = rgb_to_hex(rgba) if rgba and (len(rgba) < 4 or rgba[3]) else default_color(i)
        classes.append(LabelClass(_clean_name(name), (value,), color))
    stem = path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    return LabelScheme(stem or "raster", tuple(classes))


def label_histogram(path: str, band: int, windows: Iterable[Any] | None = None) -> dict[float, int]:
    """{label value: pixel count} of the raster's pixels in `windows` (all of it when None), leaving
    out its nodata and NaN; read in strips so memory stays bounded."""
    import rasterio
    from rasterio.windows import Window

    counts: dict[float, int] = {}
    with rasterio.open(path) as src:
        nodata = src.nodata
        for window in windows if windows is not None else [Window(0, 0, src.width, src.height)]:
            col, row = int(window.col_off), int(window.row_off)
            width, height = int(window.width), int(window.height)
            step = max(1, (1 << 22) // max(width, 1))  # ~4 M pixels per read
            for r in range(row, row + height, step):
                strip = src.read(band, window=Window(col, r, width, min(step, row + height - r)))
                values = strip.ravel()
                keep = ~np.isnan(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
                if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
                    keep &= values != nodata
                found, n = np.unique(values[keep], return_counts=True)
                for v, c in zip(found.tolist(), n.tolist()):
                    key = float(v)
                    counts[key] = counts.get(key, 0) + int(c)
    return counts
