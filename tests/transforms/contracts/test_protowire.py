"""Protobuf's wire format by hand, against protobuf's own encoding of the same values."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2, wrappers_pb2

from transforms.contracts.protowire import LENGTH_DELIMITED, VARINT, field, fields, read_varint, varint


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**63 - 1, 2**64 - 1])
def test_varints_are_protobufs(value):
    encoded = wrappers_pb2.UInt64Value(value=value).SerializeToString()  # key 0x08, then the varint
    assert encoded == (b"\x08" + varint(value) if value else b"")
    assert read_varint(varint(value), 0) == (value, len(varint(value)))


def test_fields_are_read_with_their_numbers_wire_types_and_values():
    message = struct_pb2.Value(string_value="abc").SerializeToString()  # field 3, a string
    assert message == field(b"\x1a", b"abc")
    ((number, wire, value),) = list(fields(message))
    assert (number, wire, bytes(value)) == (3, LENGTH_DELIMITED, b"abc")
    assert list(fields(b"\x08\x96\x01")) == [(1, VARINT, 150)]


def test_malformed_messages_raise():
    with pytest.raises(ValueError, match="past the end"):
        list(fields(field(b"\x1a", b"abcdef")[:-2]))
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        read_varint(b"\xff" * 11 + b"\x01", 0)
    with pytest.raises(IndexError):
        read_varint(b"\x80\x80", 0)
    with pytest.raises(ValueError, match="wire type 3"):
        list(fields(b"\x0b"))
