"""The key/values at the head of a GGUF file, read without loading the model.

The `gguf` package reads them too, but it builds an array object for every
element of every field: 2.0 s for the bundled 135M model, whose vocabulary alone
is 49,152 strings, and more for larger vocabularies. Here long arrays are skipped
over (their length is kept), which takes milliseconds.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import IO, Any

MAGIC = b"GGUF"
ARRAY_KEPT = 64  # arrays up to this many elements are read; longer ones become their length
_SCALARS = {
    0: "<B",  # uint8
    1: "<b",  # int8
    2: "<H",  # uint16
    3: "<h",  # int16
    4: "<I",  # uint32
    5: "<i",  # int32
    6: "<f",  # float32
    7: "<?",  # bool
    10: "<Q",  # uint64
    11: "<q",  # int64
    12: "<d",  # float64
}
_STRING, _ARRAY = 8, 9


class NotGguf(ValueError):
    pass


class SkippedArray(int):
    """A long array's place in the metadata: its element count."""


def read_metadata(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        if f.read(4) != MAGIC:
            raise NotGguf(f"{path.name} is not a GGUF file")
        version = _read(f, "<I")
        if version < 2:
            raise NotGguf(f"{path.name}: GGUF version {version} is too old")
        _read(f, "<Q")  # tensor count
        count = _read(f, "<Q")
        return {_string(f): _value(f, _read(f, "<I")) for _ in range(count)}


def _value(f: IO[bytes], kind: int) -> Any:
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        element, length = _read(f, "<I"), _read(f, "<Q")
        if length <= ARRAY_KEPT:
            return [_value(f, element) for _ in range(length)]
        _skip(f, element, length)
        return SkippedArray(length)
    raise NotGguf(f"unknown GGUF value type {kind}")


def _skip(f: IO[bytes], element: int, length: int) -> None:
    if element in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[element]) * length, 1)
    elif element == _STRING:
        for _ in range(length):
            f.seek(_read(f, "<Q"), 1)
    else:
        for _ in range(length):
            _value(f, element)


def _string(f: IO[bytes]) -> str:
    return f.read(_read(f, "<Q")).decode("utf-8", errors="replace")


def _read(f: IO[bytes], fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise NotGguf("the GGUF header ends early")
    return struct.unpack(fmt, data)[0]
