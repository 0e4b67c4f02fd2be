"""Writing TFRecord shards straight from the DoFn that encodes the records.

Hand-written instead of `beam.io.WriteToTFRecord` for two measured reasons (docs/performance.md):
- compression: Beam's GZIP writer uses zlib at its default level (~12 patches/s per core for float
  patches); ISA-L's gzip-compatible deflate (`isal`) at level 1 is ~35× faster with a *better* ratio
  than zlib level 1, and TensorFlow's GZIP reader reads it like any gzip stream;
- fusion: records are written in the stage that made them, so nothing but file names leaves it.

Files are written under a temporary folder, one per bundle and split, and moved into place by
`finalize_shards` once the pipeline has produced them all, so a retried bundle leaves no duplicates.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue
from isal import isal_zlib

from transforms.contracts.schema import COMPRESSIONS

SUFFIX = {"gzip": ".tfrecord.gz", "none": ".tfrecord"}
# ISA-L offers levels 0-3; higher levels fall back to zlib (much slower, barely smaller for floats).
ISAL_MAX_LEVEL = 3
_GZIP_WBITS = 31  # zlib/ISA-L: deflate with a gzip header and trailer


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> tuple[bytes, bytes]:
    """The bytes around one TFRecord's data: (length + masked CRC-32C of it, masked CRC-32C of the data)."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc(length)), struct.pack("<I", _masked_crc(record))


def compressor(compression: str, level: int):
    """A gzip compressor object for `level`, or None for uncompressed output."""
    if compression == "none":
        return None
    if compression != "gzip":
        raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}.")
    if not 0 <= level <= 9:
        raise ValueError(f"compression level must be 0-9, got {level}.")
    if level <= ISAL_MAX_LEVEL:
        return isal_zlib.compressobj(level, isal_zlib.DEFLATED, _GZIP_WBITS)
    return zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)


class ShardWriter:
    """Appends framed (and optionally gzip-compressed) records to one file, local or remote."""

    def __init__(self, path: str, compression: str = "gzip", level: int = 1) -> None:
        self.path = path
        self.count = 0
        self._compressor = compressor(compression, level)
        self._file = FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED)

    def write(self, record: bytes) -> None:
        # Header, data and footer go out separately: joining them would copy the record once more.
        header, footer = frame(record)
        for part in (header, record, footer):
            self._file.write(self._compressor.compress(part) if self._compressor else part)
        self.count += 1

    def close(self) -> None:
        if self._compressor:
            self._file.write(self._compressor.flush())
        self._file.close()


class WriteRecords(beam.DoFn):
    """Writes each bundle's records to a new temporary shard; emits the shard's path."""

    def __init__(self, temp_dir: str, split: str, compression: str = "gzip", level: int = 1) -> None:
        compressor(compression, level)  # validate early, at pipeline construction
        self.temp_dir = temp_dir
        self.split = split
        self.compression = compression
        self.level = level
        self._writer: ShardWriter | None = None

    def start_bundle(self) -> None:
        self._writer = None

    def process(self, record: bytes) -> Iterator[str]:
        if self._writer is None:
            name = f"{self.split}-{uuid.uuid4().hex}{SUFFIX[self.compression]}"
            self._writer = ShardWriter(f"{self.temp_dir}/{name}", self.compression, self.level)
        self._writer.write(record)
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._writer is not None:
            self._writer.close()
            yield WindowedValue(self._writer.path, GlobalWindow().max_timestamp(), [GlobalWindow()])
            self._writer = None


def finalize_shards(temp_paths: Sequence[str], target_prefix: str, suffix: str) -> list[str]:
    """Move temporary shards to `<target_prefix>-00000-of-0000N<suffix>`; returns the final paths."""
    temp_paths = sorted(temp_paths)
    final = [f"{target_prefix}-{i:05d}-of-{len(temp_paths):05d}{suffix}" for i in range(len(temp_paths))]
    if temp_paths:
        parent = target_prefix.rsplit("/", 1)[0]
        if "://" not in parent:
            import os

            os.makedirs(parent, exist_ok=True)
        FileSystems.rename(temp_paths, final)
    return final


def read_records(path: str, compression: str = "gzip") -> Iterator[bytes]:
    """The records of one TFRecord file (local or remote), checking each frame's CRCs.

    For reading a few fields without TensorFlow (e.g. the points of an extraction); training reads
    records with tf.data.
    """
    kind = CompressionTypes.GZIP if compression.lower() == "gzip" else CompressionTypes.UNCOMPRESSED
    with FileSystems.open(path, compression_type=kind) as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord frame header")
            length = struct.unpack("<Q", header[:8])[0]
            if struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]):
                raise ValueError(f"{path}: corrupt TFRecord length")
            data = f.read(length)
            footer = f.read(4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"{path}: truncated TFRecord")
            if struct.unpack("<I", footer)[0] != _masked_crc(data):
                raise ValueError(f"{path}: corrupt TFRecord data")
            yield data
