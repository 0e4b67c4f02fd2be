"""The TFRecord patch schema: the single source of truth for the extraction writer and the training reader.

Records follow Earth Engine's TFRecord patch layout (what `Export.image.toCloudStorage(...,
fileFormat='TFRecord', formatOptions={'patchDimensions': ...})` and Google's land-cover sample write):
one `tf.train.Example` per patch, one float feature per band holding the H×W values flattened row-major,
and the label as a float feature of its own. terrabeam adds point metadata features (id, lon/lat,
region, a padded flag); readers of Earth Engine exports simply do not ask for them.

The writer encodes the protobuf wire format straight from numpy: a packed FloatList is a tag, a length and
the little-endian float32 values, so building it through Python lists (as `tf.train.Example` would) costs
~40× more for the same bytes. Tests check that TensorFlow's own parser reads back exactly the same tensors.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from transforms.contracts.protowire import field, fields, read_varint, varint

LABEL_FEATURE = "landcover"
# Label value of pixels with no label (outside the label raster or padded at the raster edge).
LABEL_NODATA = 255
# Class-map value of pixels with no prediction (outside the imagery or the region, or masked input).
CLASS_NODATA = 255
# How record shards are compressed (manifest.json says which: "GZIP" or "NONE").
COMPRESSIONS = ("gzip", "none")

# Metadata features terrabeam writes next to the bands and label.
META_ID = "point_id"
META_LON = "lon"
META_LAT = "lat"
META_REGION = "region"
META_PADDED = "padded"


@dataclasses.dataclass(frozen=True)
class PatchSchema:
    """Which features a patch record holds: band names, label name and patch size."""

    bands: tuple[str, ...]
    patch_size: int
    label: str = LABEL_FEATURE

    def __post_init__(self) -> None:
        if not self.bands:
            raise ValueError("PatchSchema needs at least one band name.")
        if len(set(self.bands)) != len(self.bands):
            raise ValueError(f"Band names must be unique, got {list(self.bands)}.")
        if self.label in self.bands:
            raise ValueError(f"The label feature {self.label!r} cannot also be an input band.")
        if self.patch_size <= 0:
            raise ValueError(f"patch_size must be a positive number of pixels, got {self.patch_size}.")

    def feature_spec(self, with_label: bool = True, with_metadata: bool = False) -> dict[str, Any]:
        """`tf.io.parse_example` features: one (H, W) float32 tensor per band (and label)."""
        import tensorflow as tf

        shape = (self.patch_size, self.patch_size)
        spec: dict[str, Any] = {b: tf.io.FixedLenFeature(shape, tf.float32) for b in self.bands}
        if with_label:
            spec[self.label] = tf.io.FixedLenFeature(shape, tf.float32)
        if with_metadata:
            spec.update(
                {
                    META_ID: tf.io.FixedLenFeature((), tf.string),
                    META_LON: tf.io.FixedLenFeature((), tf.float32),
                    META_LAT: tf.io.FixedLenFeature((), tf.float32),
                    META_REGION: tf.io.FixedLenFeature((), tf.string, default_value=b""),
                    META_PADDED: tf.io.FixedLenFeature((), tf.int64, default_value=0),
                }
            )
        return spec

    def encode(
        self,
        inputs: np.ndarray,
        label: np.ndarray | None,
        metadata: Mapping[str, str | float | int] | None = None,
    ) -> bytes:
        """Serialize one patch: `inputs` is (H, W, bands), `label` is (H, W) or None."""
        size = self.patch_size
        if inputs.shape != (size, size, len(self.bands)):
            raise ValueError(
                f"Patch has shape {inputs.shape}; the schema expects ({size}, {size}, {len(self.bands)}) "
                f"for bands {list(self.bands)}."
            )
        planes = np.moveaxis(inputs, -1, 0)  # free when `inputs` is a band-last view of band planes
        features: list[tuple[str, memoryview | bytes]] = [
            (name, _float_payload(plane)) for name, plane in zip(self.bands, planes)
        ]
        if label is not None:
            if label.shape != (size, size):
                raise ValueError(f"Label patch has shape {label.shape}; expected ({size}, {size}).")
            features.append((self.label, _float_payload(label)))
        parts: list[bytes | memoryview] = []
        total = 0
        for name, payload in features:
            total += _append_float_entry(parts, name, payload)
        for key, value in (metadata or {}).items():
            entry = field(_TAG_1, field(_TAG_1, key.encode("utf-8")) + field(_TAG_2, scalar_feature(value)))
            parts.append(entry)
            total += len(entry)
        # One copy of the pixel bytes, in the final join.
        return b"".join([_TAG_1, varint(total), *parts])


def _float_payload(values: np.ndarray) -> memoryview | bytes:
    """Little-endian float32 bytes of `values`, without a copy when they already are."""
    array = np.ascontiguousarray(values, dtype="<f4")
    return memoryview(array).cast("B")


def _append_float_entry(parts: list, name: str, payload: memoryview | bytes) -> int:
    """Append the map entry {name: Feature(float_list=payload)} to `parts`; returns its length."""
    n = len(payload)
    float_list_len = 1 + len(varint(n)) + n
    feature_len = 1 + len(varint(float_list_len)) + float_list_len
    key = field(_TAG_1, name.encode("utf-8"))
    entry_len = len(key) + 1 + len(varint(feature_len)) + feature_len
    header = (
        _TAG_1
        + varint(entry_len)
        + key
        + _TAG_2
        + varint(feature_len)
        + _TAG_2
        + varint(float_list_len)
        + _TAG_1
        + varint(n)
    )
    parts.append(header)
    parts.append(payload)
    return len(header) + n


# --- tf.train.Example in protobuf's wire format (transforms.contracts.protowire) ---------------------
# Example { Features features = 1; }  Features { map<string, Feature> feature = 1; }
# Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
# XxxList { repeated T value = 1 [packed]; }. Field tag byte = (field_number << 3) | wire_type(2).
_TAG_1 = b"\x0a"
_TAG_2 = b"\x12"
_TAG_3 = b"\x1a"


def float_feature(values: np.ndarray) -> bytes:
    """A Feature holding a packed FloatList of `values` (any shape, flattened row-major)."""
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return field(_TAG_2, field(_TAG_1, raw))


def int64_feature(values: Sequence[int]) -> bytes:
    """A Feature holding a packed Int64List (negative values as 10-byte two's complement varints)."""
    raw = b"".join(varint(int(v) & 0xFFFFFFFFFFFFFFFF) for v in values)
    return field(_TAG_3, field(_TAG_1, raw))


def bytes_feature(values: Sequence[bytes]) -> bytes:
    """A Feature holding a BytesList."""
    return field(_TAG_1, b"".join(field(_TAG_1, v) for v in values))


def scalar_feature(value: str | bytes | float | int) -> bytes:
    """A one-element Feature; the type follows the Python value (bool and int -> int64)."""
    if isinstance(value, str):
        return bytes_feature([value.encode("utf-8")])
    if isinstance(value, bytes):
        return bytes_feature([value])
    if isinstance(value, bool | int | np.integer):
        return int64_feature([int(value)])
    if isinstance(value, float | np.floating):
        return field(_TAG_2, field(_TAG_1, struct.pack("<f", float(value))))
    raise TypeError(f"Cannot store metadata value {value!r} of type {type(value).__name__} in a record.")


def encode_example(features: Mapping[str, bytes]) -> bytes:
    """An Example from already-encoded Feature messages, keyed by feature name."""
    entries = b"".join(
        field(_TAG_1, field(_TAG_1, name.encode("utf-8")) + field(_TAG_2, feature))
        for name, feature in features.items()
    )
    return field(_TAG_1, entries)


# --- decoding (without TensorFlow) -----------------------------------------------------------------


def _decode_feature(feature: memoryview) -> list | np.ndarray:
    for kind, _, payload in fields(feature):
        if kind == 1:  # BytesList
            return [bytes(v) for n, _, v in fields(payload) if n == 1]
        if kind == 2:  # FloatList, packed (proto3) or not
            parts = [np.frombuffer(v, "<f4") for n, _, v in fields(payload) if n == 1]
            return np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if kind == 3:  # Int64List, packed or not
            values: list[int] = []
            for n, w, v in fields(payload):
                if n != 1:
                    continue
                if w == 0:
                    values.append(v)
                else:
                    pos = 0
                    while pos < len(v):
                        value, pos = read_varint(v, pos)
                        values.append(value)
            return [v - (1 << 64) if v >= 1 << 63 else v for v in values]
    return []


def decode_example(record: bytes, names: Iterable[str] | None = None) -> dict[str, list | np.ndarray]:
    """The features of a serialized tf.train.Example (only `names` when given), without TensorFlow.

    Float features come back as float32 arrays, int64 and bytes features as lists. Features not asked
    for are skipped without being decoded, so reading a record's metadata costs little.
    """
    wanted = set(names) if names is not None else None
    out: dict[str, list | np.ndarray] = {}
    for number, _, features in fields(record):
        if number != 1:
            continue
        for entry_number, _, entry in fields(features):
            if entry_number != 1:
                continue
            name, feature = None, None
            for n, _, v in fields(entry):
                if n == 1:
                    name = bytes(v).decode("utf-8")
                elif n == 2:
                    feature = v
            if name is None or (wanted is not None and name not in wanted):
                continue
            out[name] = _decode_feature(feature) if feature is not None else []
    return out
