"""Protobuf's wire format, written and read without protobuf: for messages whose bulk is one long run
of numbers (a record's float32 bands, a tensor's pixels), which protobuf's classes would copy.

A field is a key varint (field number << 3 | wire type) and its value: a varint, or a length varint and
that many bytes. https://protobuf.dev/programming-guides/encoding/
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

VARINT = 0
LENGTH_DELIMITED = 2


def varint(value: int) -> bytes:
    """`value` (not negative) as a base-128 varint, least significant group first."""
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its key (`tag`), the payload's length and the payload."""
    return tag + varint(len(payload)) + payload


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it: IndexError when the data ends inside it,
    ValueError past 10 bytes (64 bits, as protobuf's own parser; a megabyte of continuation bytes in
    a request must not become a megabyte-long integer)."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("a protobuf varint longer than 10 bytes")


def fields(data: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of a message: an int for varints, a memoryview
    into `data` otherwise. ValueError for a wire type protobuf no longer writes (groups) or a field that
    runs past the end of the data; IndexError when the data ends inside a varint."""
    view = memoryview(data)
    pos, end = 0, len(view)
    while pos < end:
        key, pos = read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(view, pos)
        elif wire == 1:  # 64-bit
            value, pos = view[pos : pos + 8], pos + 8
        elif wire == LENGTH_DELIMITED:
            length, pos = read_varint(view, pos)
            value, pos = view[pos : pos + length], pos + length
        elif wire == 5:  # 32-bit
            value, pos = view[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError(f"protobuf field {number} runs past the end of its message")
        yield number, wire, value
