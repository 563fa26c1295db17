"""`corral show`'s overview of an /api/show answer, as `ollama show` prints it (cmd.go's showInfo).

Sections, each a title and a borderless table, then a blank line: Model, Capabilities,
Projector, Parameters, Metadata and Tensors (with verbose), System and License (their
first two lines). Numbers are printed as Go prints a JSON number (a float64).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from rich.cells import cell_len

from corral.tables import table

ARRAY_WIDTH = 10  # showInfo's targetWidth: a metadata array shows the items that fit, then "...+N more]"
HEAD_LINES = 2  # lines of the system message and the license shown
TEXT_WIDTH = 100  # SetColWidth(100) for the System and License tables


def model_summary(shown: dict[str, Any], verbose: bool = False) -> str:
    details = shown.get("details") or {}
    info, projector = shown.get("model_info"), shown.get("projector_info")
    sections = [("Model", _model(shown, details, info))]
    if capabilities := shown.get("capabilities"):
        sections.append(("Capabilities", [["", str(c)] for c in capabilities]))
    if projector is not None:
        sections.append(("Projector", _projector(projector)))
    if parameters := shown.get("parameters"):
        sections.append(("Parameters", [["", *line.split()] for line in _lines(parameters) if line]))
    if info is not None and verbose:
        sections.append(("Metadata", [["", key, _metadata_value(info[key])] for key in sorted(info)]))
    if (tensors := shown.get("tensors")) and verbose:
        sections.append(("Tensors", [["", t["name"], t["type"], _shape(t["shape"])] for t in tensors]))
    text = "".join(f"  {title}\n{table(rows)}\n" for title, rows in sections)
    for title in ("System", "License"):
        if body := shown.get(title.lower()):
            text += f"  {title}\n{table(_head(body, HEAD_LINES), width=TEXT_WIDTH)}\n"
    return text


def _model(shown: dict[str, Any], details: dict[str, Any], info: dict[str, Any] | None) -> list[list[str]]:
    rows = []
    if shown.get("remote_host"):
        rows.append(["", "Remote model", shown.get("remote_model", "")])
        rows.append(["", "Remote URL", shown["remote_host"]])
    if info is not None:
        arch = info.get("general.architecture")
        arch = arch if isinstance(arch, str) else ""
        if arch:
            rows.append(["", "architecture", arch])
        count = _number(info.get("general.parameter_count"))
        size = details.get("parameter_size") or (human_number(int(count)) if count is not None else "")
        if size:
            rows.append(["", "parameters", size])
        for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
            if (value := _number(info.get(f"{arch}.{key}"))) is not None:
                rows.append(["", label, _go_fixed(value)])
    else:
        rows.append(["", "architecture", details.get("family", "")])
        rows.append(["", "parameters", details.get("parameter_size", "")])
    rows.append(["", "quantization", details.get("quantization_level", "")])
    if shown.get("requires"):
        rows.append(["", "requires", shown["requires"]])
    return rows


def _projector(projector: dict[str, Any]) -> list[list[str]]:
    rows = []
    arch = projector.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""
    if arch:
        rows.append(["", "architecture", arch])
    if (count := _number(projector.get("general.parameter_count"))) is not None:
        rows.append(["", "parameters", human_number(int(count))])
    for key, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
        found = (_number(projector.get(f"{arch}.{modality}.{key}")) for modality in ("vision", "audio"))
        if (value := next((v for v in found if v is not None), None)) is not None:
            rows.append(["", label, _go_fixed(value)])
    return rows


def _lines(text: str) -> list[str]:
    """The lines bufio.Scanner reads: no line after a final newline, a "\\r" before one dropped."""
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]


def _head(text: str, count: int) -> list[list[str]]:
    """The first `count` non-blank lines, trimmed, then "..." when there are more."""
    lines = [stripped for line in _lines(text) if (stripped := line.strip())]
    return [["", line] for line in lines[:count]] + ([["", "..."]] if len(lines) > count else [])


def human_number(count: int) -> str:
    """format.HumanNumber: 8B, 1.5B, 135M, 133.70M, 42K, 999."""
    for scale, unit, decimals in ((10**9, "B", 1), (10**6, "M", 2), (10**3, "K", 0)):
        if count >= scale:
            value = count / scale
            if unit == "K" or value != int(value):
                return f"{value:.{decimals}f}{unit}"
            return f"{value:.0f}{unit}"
    return str(count)


def _number(value: Any) -> float | None:
    """A JSON number as Go decodes it into `any` (a float64); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _metadata_value(value: Any) -> str:
    """One Metadata cell: an array shows the items that fit in ARRAY_WIDTH columns."""
    if isinstance(value, list):
        shown, used = 0, 1  # "["
        for i, item in enumerate(value):
            width = cell_len(_go_value(item)) + (2 if i else 0)  # ", " counted as showInfo does
            if used + width > ARRAY_WIDTH and i > 0:
                break
            used, shown = used + width, shown + 1
        if shown < len(value):
            return _go_value(value[:shown]).removesuffix("]") + f" ...+{len(value) - shown} more]"
        return _go_value(value)
    if value is None or isinstance(value, dict):
        return _GO_TYPE_NAMES[type(value)]  # showInfo's %T for any other type
    return _go_value(value)


_GO_TYPE_NAMES: dict[type, str] = {type(None): "<nil>", dict: "map[string]interface {}"}


def _go_value(value: Any) -> str:
    """fmt's %v of a decoded JSON value: true, 8e+09, [1 2 3], map[k:v], <nil>."""
    formats: dict[type, Callable[[Any], str]] = {
        bool: lambda v: "true" if v else "false",
        str: str,
        int: _go_general,
        float: _go_general,
        list: lambda v: "[" + " ".join(_go_value(item) for item in v) + "]",
        dict: lambda v: "map[" + " ".join(f"{k}:{_go_value(v[k])}" for k in sorted(v)) + "]",
    }
    return formats.get(type(value), lambda _: "<nil>")(value)


def _shape(shape: Sequence[int]) -> str:
    """A tensor's shape as Go prints a []uint64: [576 49152]."""
    return "[" + " ".join(str(int(size)) for size in shape) + "]"


def _shortest(value: float) -> tuple[int, Sequence[int], int]:
    """The shortest digits that read back as `value`: (sign, digits, exponent) of a Decimal."""
    sign, digits, exponent = Decimal(repr(float(value))).normalize().as_tuple()
    assert isinstance(exponent, int)  # a finite number: JSON has no other
    return sign, digits, exponent


def _go_general(value: float) -> str:
    """%g with the shortest digits: an exponent (two digits at least) below 1e-4 and from 1e6."""
    sign, digits, exponent = _shortest(value)
    power = exponent + len(digits) - 1
    if digits == (0,) or -4 <= power < 6:
        return _go_fixed(value)
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"


def _go_fixed(value: float) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64): the shortest digits, never an exponent."""
    return format(Decimal(repr(float(value))).normalize(), "f")
