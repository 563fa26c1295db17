"""`corral pull` and `corral push`: the server's progress as `ollama` shows it.

On a terminal each layer gets a bar ("pulling dde5aa3fc5ff: 100% ▕██▏ 2.0 GB") and the other
statuses a line each; in a pipe or a log, each status is written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn


def show(progress: Iterable[dict[str, Any]], console: Console) -> None:
    if console.is_terminal:
        _bars(progress, console)
        return
    last = ""
    for step in progress:
        status = str(step.get("status", ""))
        if status != last:
            console.print(status, markup=False, highlight=False, soft_wrap=True)
            last = status


def _bars(progress: Iterable[dict[str, Any]], console: Console) -> None:
    columns = (
        TextColumn("{task.description}"),
        TextColumn("{task.percentage:>3.0f}%"),
        BarColumn(bar_width=None),
        DownloadColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        layers: dict[str, TaskID] = {}
        for step in progress:
            status, digest = str(step.get("status", "")), step.get("digest")
            if digest:
                if digest not in layers:
                    layers[digest] = bars.add_task(f"{status}:", total=step.get("total") or None)
                bars.update(layers[digest], completed=step.get("completed") or 0, total=step.get("total"))
            else:
                bars.console.print(status, markup=False, highlight=False)
