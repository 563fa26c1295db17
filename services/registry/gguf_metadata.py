"""The key/values at the head of a GGUF file, read without loading the model.

The `gguf` package reads them too, but it builds an array object for every
element of every field: 2.0 s for the bundled 135M model, whose vocabulary alone
is 49,152 strings, and more for larger vocabularies. Here long arrays are skipped
over (their length is kept), which takes milliseconds.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy

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
_STRING, _ARRAY, _FLOAT32 = 8, 9, 6


class NotGguf(ValueError):
    pass


class SkippedArray(int):
    """A long array's place in the metadata: its element count."""


# llama_ftype names by value, as Ollama's FileType.String() gives them (general.file_type).
FILE_TYPES = (
    "F32 F16 Q4_0 Q4_1 unknown unknown unknown Q8_0 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S "
    "Q4_K_M Q5_K_S Q5_K_M Q6_K IQ2_XXS IQ2_XS Q2_K_S IQ3_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ3_M IQ2_S "
    "IQ2_M IQ4_XS IQ1_M BF16 unknown unknown unknown TQ1_0 TQ2_0 MXFP4_MOE NVFP4 Q1_0"
).split()


# GGML tensor type names by value, as Ollama's TensorType.String() gives them.
TENSOR_TYPES = (
    "F32 F16 Q4_0 Q4_1 unknown unknown Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ2_XXS "
    "IQ2_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 F64 IQ1_M BF16 unknown unknown "
    "unknown TQ1_0 TQ2_0 unknown unknown unknown MXFP4 NVFP4 Q1_0"
).split()


@dataclass(frozen=True)
class Tensor:
    name: str
    type: str  # TENSOR_TYPES' name
    shape: tuple[int, ...]  # as the file gives it, innermost dimension first


def is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == MAGIC


def read_metadata(path: Path, arrays_kept: int | None = ARRAY_KEPT) -> dict[str, Any]:
    """`arrays_kept`: arrays longer than this become their length (None: every array whole)."""
    with path.open("rb") as f:
        return _header(f, path.name, arrays_kept)[0]


def read_tensors(path: Path) -> list[Tensor]:
    """The tensor table that follows the key/values."""
    with path.open("rb") as f:
        _, count = _header(f, path.name, 0)
        tensors = []
        for _ in range(count):
            name = _string(f)
            shape = tuple(_read(f, "<Q") for _ in range(_read(f, "<I")))
            kind = _read(f, "<I")
            f.seek(8, 1)  # offset
            type_name = TENSOR_TYPES[kind] if kind < len(TENSOR_TYPES) else "unknown"
            tensors.append(Tensor(name, type_name, shape))
        return tensors


def parameter_count(path: Path) -> int:
    """The model's parameters: the elements of all its tensors (Ollama's general.parameter_count)."""
    return sum(math.prod(t.shape) for t in read_tensors(path))


def file_type(metadata: dict[str, Any]) -> str:
    value = metadata.get("general.file_type")
    return FILE_TYPES[value] if isinstance(value, int) and 0 <= value < len(FILE_TYPES) else "unknown"


def _header(f: IO[bytes], name: str, arrays_kept: int | None) -> tuple[dict[str, Any], int]:
    """The key/values and the tensor count; leaves `f` at the first tensor's description."""
    if f.read(4) != MAGIC:
        raise NotGguf(f"{name} is not a GGUF file")
    version = _read(f, "<I")
    if version < 2:
        raise NotGguf(f"{name}: GGUF version {version} is too old")
    tensors = _read(f, "<Q")
    count = _read(f, "<Q")
    return {_string(f): _value(f, _read(f, "<I"), arrays_kept) for _ in range(count)}, tensors


def _value(f: IO[bytes], kind: int, arrays_kept: int | None = None) -> Any:
    if kind == _FLOAT32:
        return shortest_float32(_read(f, "<f"))
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        element, length = _read(f, "<I"), _read(f, "<Q")
        if arrays_kept is None or length <= arrays_kept:
            return [_value(f, element, arrays_kept) for _ in range(length)]
        _skip(f, element, length)
        return SkippedArray(length)
    raise NotGguf(f"unknown GGUF value type {kind}")


def shortest_float32(value: float) -> float:
    """The shortest decimal that is the same float32, as Go writes a float32 (1e-05, not the
    9.999999747378752e-06 its widening to a double prints)."""
    return float(str(numpy.float32(value)))  # numpy prints a float32 by its shortest round trip


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
