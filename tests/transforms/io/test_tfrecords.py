"""Shards written by the fused writer are read by TensorFlow's own TFRecord reader."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipelines.extract import main
from transforms.contracts.manifest import read_manifest
from transforms.io.tfrecords import ShardWriter, compressor, finalize_shards


@pytest.mark.parametrize(
    "compression, level", [("gzip", 0), ("gzip", 1), ("gzip", 3), ("gzip", 6), ("none", 1)]
)
def test_tensorflow_reads_every_compression(tmp_path, compression, level):
    rng = np.random.default_rng(level)
    records = [rng.bytes(int(n)) for n in rng.integers(0, 5000, 50)] + [b""]
    writer = ShardWriter(str(tmp_path / "shard"), compression, level)
    for record in records:
        writer.write(record)
    writer.close()
    kind = "GZIP" if compression == "gzip" else ""
    got = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "shard"), compression_type=kind)]
    assert got == records


def test_bad_compression_settings():
    with pytest.raises(ValueError, match="compression level must be 0-9"):
        compressor("gzip", 12)
    with pytest.raises(ValueError, match="compression must be one of"):
        compressor("zstd", 1)


def test_finalize_names_shards(tmp_path):
    temps = []
    for name in ("b", "a"):
        path = tmp_path / "tmp" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode())
        temps.append(str(path))
    final = finalize_shards(temps, str(tmp_path / "train" / "data"), ".tfrecord")
    assert [p.rsplit("/", 1)[1] for p in final] == [
        "data-00000-of-00002.tfrecord",
        "data-00001-of-00002.tfrecord",
    ]
    assert open(final[0], "rb").read() == b"a"


def test_uncompressed_extraction_and_no_temp_left(tiny_scene, tmp_path):
    args = ["--inputs", tiny_scene.image, "--labels", tiny_scene.labels, "--regions", tiny_scene.regions]
    out = tmp_path / "raw"
    assert (
        main(
            [
                *args,
                "--output",
                str(out),
                "--patch-size",
                "16",
                "--points-per-class",
                "3",
                "--compression",
                "none",
            ]
        )
        == 0
    )
    manifest = read_manifest(str(out))
    assert manifest["compression"] == "NONE"
    files = manifest["splits"]["train"]["files"]
    assert files and all(f.endswith(".tfrecord") for f in files)
    assert sum(1 for _ in tf.data.TFRecordDataset(files)) == manifest["splits"]["train"]["patches"]
    assert not list(out.glob(".temp-*"))
