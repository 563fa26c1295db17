"""How `corral list` and `corral ps` print, as `ollama` prints (cmd/cmd.go, format/*.go).

Pure functions: sizes in decimal units, times as "4 minutes from now", the
PROCESSOR column, the NAME filter, and tables as ollama's tablewriter (v0.0.5) draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rich.cells import cell_len

FOREVER_YEARS = 20  # an expiry further away than this is shown as "Forever"
_UNITS = ((1000**4, "TB"), (1000**3, "GB"), (1000**2, "MB"), (1000, "KB"))
COLUMN_WIDTH = 30  # tablewriter's MAX_ROW_WIDTH: a wider cell is wrapped at its spaces
PADDING = "    "  # ollama's SetTablePadding, after every cell
WRAP_PENALTY = 10**5  # tablewriter's defaultPenalty, for a line longer than the limit


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


def named(name: str, prefix: str, *, fold_case: bool) -> bool:
    """The NAME filter of `list` and `ps`: a prefix, case-insensitive for `list` only (ListHandler
    lowercases both sides since Ollama's mixed-case names; ListRunningHandler does not)."""
    if fold_case:
        return name.lower().startswith(prefix.lower())
    return name.startswith(prefix)


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = (), width: int = COLUMN_WIDTH) -> str:
    """Rows as ollama's tablewriter draws them: left-aligned, no borders, every cell followed by
    four spaces (a header's last cell by one), a cell wider than `width` wrapped at its spaces."""
    cells = [[_cell_lines(text, width) for text in row] for row in [header, *rows] if row]
    widths: dict[int, int] = {}
    for row in cells:
        for i, (_, cell_width) in enumerate(row):
            widths[i] = max(widths.get(i, 0), cell_width)
    out = []
    for n, row in enumerate(cells):
        height = max(len(lines) for lines, _ in row)
        for y in range(height):
            line = ""
            for i, (lines, _) in enumerate(row):
                # tablewriter fills a shorter cell with two spaces, then pads to the column's width
                text = lines[y] if y < len(lines) else "  "
                last_of_header = bool(header) and n == 0 and i == len(widths) - 1
                line += text + " " * (widths[i] - cell_len(text)) + (" " if last_of_header else PADDING)
            out.append(line + "\n")
    return "".join(out)


def _cell_lines(text: str, limit: int) -> tuple[list[str], int]:
    """tablewriter's parseDimension: a cell's lines (its lines joined, then wrapped at `limit`
    or its longest word) and the width it asks of its column."""
    width = min(max(cell_len(line) for line in text.split("\n")), limit)
    lines = _wrap(text.replace("\n", " "), width)
    return lines, max([width, *(cell_len(line) for line in lines)])


def _wrap(text: str, limit: int) -> list[str]:
    """tablewriter's WrapString: the words into lines of minimal raggedness (WrapWords)."""
    words = text.split(" ")
    sizes = [cell_len(word) for word in words]
    limit = max([limit, *sizes])
    count = len(words)
    starts = [0]  # starts[i]: the widths of the words before word i

    for size in sizes:
        starts.append(starts[-1] + size)

    def span(first: int, last: int) -> int:  # words[first..last] set one space apart
        return starts[last + 1] - starts[first] + last - first

    cost, breaks = [0] * count, [count] * count
    for i in range(count - 1, -1, -1):
        if span(i, count - 1) <= limit:
            continue
        cost[i] = 2**31 - 1
        for j in range(i + 1, count):
            length = span(i, j - 1)
            penalty = (limit - length) ** 2 + cost[j] + (WRAP_PENALTY if length > limit else 0)
            if penalty < cost[i]:
                cost[i], breaks[i] = penalty, j
    lines, i = [], 0
    while i < count:
        lines.append(" ".join(words[i : breaks[i]]))
        i = breaks[i]
    return lines


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
