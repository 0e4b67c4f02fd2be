"""The numpy record encoder against TensorFlow's own parser."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.scenes import shared_data
from transforms.contracts.schema import PatchSchema, encode_example, int64_feature, scalar_feature


def parse(record: bytes, schema: PatchSchema) -> dict:
    return {
        k: v.numpy()
        for k, v in tf.io.parse_single_example(record, schema.feature_spec(with_metadata=True)).items()
    }


def test_round_trip_random_values_with_nan_and_inf():
    rng = np.random.default_rng(0)
    schema = PatchSchema(("B2", "B3", "elevation"), 8)
    inputs = rng.normal(0, 1e4, (8, 8, 3)).astype(np.float32)
    inputs[0, 0, 0], inputs[1, 2, 1], inputs[7, 7, 2] = np.nan, np.inf, -np.inf
    label = rng.integers(0, 9, (8, 8)).astype(np.uint8)
    record = schema.encode(
        inputs, label, {"point_id": "r/1/2", "lon": 7.5, "lat": 46.25, "region": "é", "padded": 1}
    )
    parsed = parse(record, schema)
    for i, band in enumerate(schema.bands):
        np.testing.assert_array_equal(parsed[band], inputs[..., i])
    np.testing.assert_array_equal(parsed["landcover"], label.astype(np.float32))
    assert parsed["point_id"] == b"r/1/2"
    assert parsed["region"] == "é".encode()
    assert (parsed["lon"], parsed["lat"], parsed["padded"]) == (7.5, 46.25, 1)


def test_bytes_equal_protobuf_serialization():
    """Same bytes as tf.train.Example for the same content (map order as inserted)."""
    values = np.arange(6, dtype=np.float32)
    ours = encode_example({"a": scalar_feature(3), "b": scalar_feature(b"xy")})
    example = tf.train.Example()
    example.features.feature["a"].int64_list.value.append(3)
    example.features.feature["b"].bytes_list.value.append(b"xy")
    assert tf.train.Example.FromString(ours) == example
    from transforms.contracts.schema import float_feature

    parsed = tf.train.Feature.FromString(float_feature(values))
    assert list(parsed.float_list.value) == values.tolist()


def test_negative_and_large_int64():
    record = encode_example({"n": int64_feature([-1, 2**40, 0])})
    assert list(tf.train.Example.FromString(record).features.feature["n"].int64_list.value) == [-1, 2**40, 0]


def test_shape_mismatch_is_a_clear_error():
    schema = PatchSchema(("a", "b"), 4)
    with pytest.raises(ValueError, match=r"expects \(4, 4, 2\)"):
        schema.encode(np.zeros((4, 4, 3), np.float32), None)
    with pytest.raises(ValueError, match="positive"):
        PatchSchema(("a",), 0)
    with pytest.raises(ValueError, match="unique"):
        PatchSchema(("a", "a"), 4)


@pytest.mark.shared_data
def test_reads_earth_engine_exported_patches():
    """The shared feature spec parses Earth Engine's own TFRecord exports, and our encoder reproduces them."""
    folder = shared_data("gcp-landcover", "v0_506b40d_8x8")
    files = sorted(glob.glob(str(folder / "**" / "*.tfrecord.gz"), recursive=True))
    assert files
    bands = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
    schema = PatchSchema(bands, 8)
    spec = schema.feature_spec()
    count = 0
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(20):
        parsed = {k: v.numpy() for k, v in tf.io.parse_single_example(record, spec).items()}
        labels = parsed["landcover"]
        assert labels.shape == (8, 8) and labels.min() >= 0 and labels.max() <= 8
        inputs = np.stack([parsed[b] for b in bands], axis=-1)
        again = parse_plain(schema.encode(inputs, labels), schema)
        for band in bands:
            np.testing.assert_array_equal(again[band], parsed[band])
        count += 1
    assert count == 20


def parse_plain(record: bytes, schema: PatchSchema) -> dict:
    return {k: v.numpy() for k, v in tf.io.parse_single_example(record, schema.feature_spec()).items()}


def test_decoder_reads_what_tensorflow_writes_without_tensorflow():
    """decode_example against records serialized by TensorFlow itself (packed and unpacked lists)."""
    from transforms.contracts.schema import decode_example

    example = tf.train.Example()
    features = example.features.feature
    features["lon"].float_list.value.extend([7.25, -1.5])
    features["id"].bytes_list.value.extend([b"north/1/2", "é".encode()])
    features["n"].int64_list.value.extend([-1, 2**40, 0])
    features["empty"].float_list.value.extend([])
    features["big"].float_list.value.extend(np.arange(1000, dtype=np.float32).tolist())
    decoded = decode_example(example.SerializeToString())
    np.testing.assert_array_equal(decoded["lon"], np.array([7.25, -1.5], np.float32))
    assert decoded["id"] == [b"north/1/2", "é".encode()] and decoded["n"] == [-1, 2**40, 0]
    np.testing.assert_array_equal(decoded["big"], np.arange(1000, dtype=np.float32))
    assert len(decoded["empty"]) == 0
    assert set(decode_example(example.SerializeToString(), {"lon", "missing"})) == {"lon"}
    # Unpacked repeated floats (proto2-style writers) decode the same.
    unpacked = b"".join(b"\x0d" + np.float32(v).tobytes() for v in (1.0, 2.0))
    feature = b"\x12" + bytes([len(unpacked)]) + unpacked
    entry = b"\x0a\x01x" + b"\x12" + bytes([len(feature)]) + feature
    record = b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    np.testing.assert_array_equal(decode_example(record)["x"], [1.0, 2.0])


def test_records_read_back_with_crc_checks(tmp_path):
    from transforms.contracts.schema import decode_example
    from transforms.io.tfrecords import ShardWriter, read_records

    schema = PatchSchema(("a",), 2)
    records = [
        schema.encode(np.full((2, 2, 1), i, np.float32), None, {"point_id": f"p{i}", "lon": i, "lat": -i})
        for i in range(5)
    ]
    for compression in ("gzip", "none"):
        writer = ShardWriter(str(tmp_path / compression), compression, 1)
        for record in records:
            writer.write(record)
        writer.close()
        assert list(read_records(str(tmp_path / compression), compression)) == records
    assert [decode_example(r, {"point_id"})["point_id"] for r in records] == [
        [f"p{i}".encode()] for i in range(5)
    ]
    corrupt = bytearray((tmp_path / "none").read_bytes())
    corrupt[20] ^= 0xFF
    (tmp_path / "corrupt").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="corrupt TFRecord"):
        list(read_records(str(tmp_path / "corrupt"), "none"))
