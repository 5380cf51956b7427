"""Just enough of the protobuf wire format to read an ONNX file's metadata without the onnx package.

The runtime must not import onnx, yet it has to check a model file before onnxruntime sees it:
its metadata, the shapes and attributes of its graph, and the checksum of its bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def records(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview, memoryview]]:
    """Yield (field number, wire type, value, the field's own bytes) for each field of one message;
    BYTES values are views. The field's bytes (key and value) let a checksum skip some fields."""
    view = memoryview(buf)
    pos, end = 0, len(view)
    while pos < end:
        start = pos
        key, pos = _varint(view, pos)
        number, kind = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if kind == VARINT:
            value, pos = _varint(view, pos)
        elif kind == BYTES:
            size, pos = _varint(view, pos)
            if pos + size > end:
                raise WireError("truncated field")
            value, pos = view[pos : pos + size], pos + size
        elif kind in (FIXED64, FIXED32):
            width = 8 if kind == FIXED64 else 4
            if pos + width > end:
                raise WireError("truncated field")
            value, pos = int.from_bytes(view[pos : pos + width], "little"), pos + width
        else:
            raise WireError(f"unsupported wire type {kind}")
        yield number, kind, value, view[start:pos]


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """Yield (field number, wire type, value) for each field of one message; BYTES values are views."""
    for number, kind, value, _ in records(buf):
        yield number, kind, value


def varints(buf: bytes | memoryview) -> list[int]:
    """The integers of a packed repeated field."""
    view, pos, values = memoryview(buf), 0, []
    while pos < len(view):
        value, pos = _varint(view, pos)
        values.append(value)
    return values
