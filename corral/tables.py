"""How `corral list` and `corral ps` print, as `ollama` prints (cmd/cmd.go, format/*.go).

Pure functions: sizes in decimal units, times as "4 minutes from now", the
PROCESSOR column, and tables left-aligned with four spaces between columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

FOREVER_YEARS = 20  # an expiry further away than this is shown as "Forever"
_UNITS = ((1000**4, "TB"), (1000**3, "GB"), (1000**2, "MB"), (1000, "KB"))


def human_bytes(size: int) -> str:
    """format.HumanBytes: 42 GB, 5.1 GB, 270 MB, 999 B."""
    for scale, unit in _UNITS:
        if size >= scale:
            value = size / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_duration(seconds: float) -> str:
    """format.humanDuration."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds // 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds // 3600) // 24 // 365} years"


def human_time(moment: datetime | None, now: datetime, zero: str = "Never") -> str:
    """format.HumanTime: "4 minutes from now", "2 hours ago", "Forever"."""
    if moment is None:
        return zero
    delta = (now - moment).total_seconds()
    if int(delta / 3600) // 24 // 365 < -FOREVER_YEARS:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def processor(size: int, size_vram: int) -> str:
    """Where a loaded model lives: 100% CPU, 100% GPU, or the split (CPU first)."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def until(expires_at: datetime, now: datetime) -> str:
    """The UNTIL column: an expiry already past means an unload is under way."""
    if expires_at < now:
        return "Stopping..."
    return human_time(expires_at, now)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, four spaces apart, no borders (tablewriter as ollama sets it)."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "    ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time from the API (nanosecond digits cut to microseconds)."""
    text = text.replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def model_summary(shown: dict[str, Any]) -> str:
    """`ollama show`'s overview of an /api/show answer: the model, then its capabilities."""
    details, info = shown.get("details") or {}, shown.get("model_info") or {}
    arch = info.get("general.architecture", "")
    rows = [
        ("architecture", arch),
        ("parameters", details.get("parameter_size", "")),
        ("context length", str(info.get(f"{arch}.context_length", ""))),
        ("embedding length", str(info.get(f"{arch}.embedding_length", ""))),
        ("quantization", details.get("quantization_level", "")),
    ]
    lines = ["  Model"] + [f"    {k:<20}{v}" for k, v in rows if v]
    lines += ["", "  Capabilities"] + [f"    {c}" for c in shown.get("capabilities") or []]
    return "\n".join(lines) + "\n"
