"""The numpy record encoder against TensorFlow's own parser."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import shared_data
from transforms.schema import PatchSchema, encode_example, int64_feature, scalar_feature


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
    from transforms.schema import float_feature

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
