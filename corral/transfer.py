"""The progress of `pull`, `push` and `create`, as `ollama` shows it on stderr.

On a terminal (`Bars`): cmd.go's progress callbacks over progress/ — a bar per layer
("pulling 5b9e1e94900d: 100% ▕██▏ 2.0 GB"), a spinner per other status, redrawn in place. In
a pipe or a log (`Lines`): each status once, a spinner's text only when it lasts (a file copied,
not "gathering model components"), no escape codes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, Protocol, TextIO

from corral.bars import Bar, Progress, Spinner

Kind = Literal["pull", "push", "create"]


class Spin(Protocol):
    def update(self, text: str) -> None: ...
    def done(self, lasting: bool) -> None: ...


class Display(Protocol):
    def spinner(self, text: str) -> Spin: ...
    def line(self, text: str) -> None: ...
    def step(self, step: dict[str, Any]) -> None: ...
    def stop(self) -> None: ...


def bar_message(kind: Kind, digest: str, status: str) -> str:
    """The text before a layer's bar: PullHandler names it from the digest; push and create
    take the server's status, or name it when there is none."""
    if kind == "pull":
        name = digest.removeprefix("sha256:").strip()
        return f"pulling {name[:12] if digest.startswith('sha256:') else name}:"
    return status or f"{'pushing' if kind == 'push' else 'pulling'} {digest[7:19]}..."


def display(kind: Kind, stream: TextIO) -> Display:
    return Bars(kind, stream) if stream.isatty() else Lines(stream)


def show(progress: Iterable[dict[str, Any]], kind: Kind, stream: TextIO) -> None:
    """Show a server's progress stream to its end (or its error, left on screen first)."""
    shown = display(kind, stream)
    try:
        for step in progress:
            shown.step(step)
    finally:
        shown.stop()


class _SpinnerHandle:
    def __init__(self, progress: Progress, spinner: Spinner) -> None:
        self.progress, self.spinner = progress, spinner

    def update(self, text: str) -> None:
        self.spinner.message = text

    def done(self, lasting: bool) -> None:
        self.spinner.stop(self.progress.clock())


class Bars:
    """cmd.go's PullHandler / PushHandler / CreateHandler callbacks on a terminal."""

    def __init__(self, kind: Kind, stream: TextIO) -> None:
        self.kind = kind
        self.progress = Progress(stream)
        self.bars: dict[str, Bar] = {}
        self.status = ""
        self.current: Spinner | None = None

    def spinner(self, text: str) -> Spin:
        return _SpinnerHandle(self.progress, self.progress.spinner(text))

    def line(self, text: str) -> None:
        self.progress.add(Spinner(text, 0.0, stopped=0.0))  # a line that stays, without a frame

    def step(self, step: dict[str, Any]) -> None:
        now = self.progress.clock()
        digest, status = str(step.get("digest") or ""), str(step.get("status") or "")
        if digest:
            completed, total = int(step.get("completed") or 0), int(step.get("total") or 0)
            if self.kind == "pull" and completed == 0:
                return  # the layer's announcement before its download: no 0% bar (cmd.go)
            if self.current is not None and self.kind != "create":
                self.current.stop(now)
            bar = self.bars.get(digest)
            if bar is None:
                message = bar_message(self.kind, digest, status)
                bar = self.bars[digest] = self.progress.bar(message, total, completed)
            bar.set(completed, now)
        elif status != self.status:
            if self.current is not None:
                self.current.stop(now)
            self.status = status
            self.current = self.progress.spinner(status)

    def stop(self) -> None:
        self.progress.stop()


class _Line:
    def __init__(self, stream: TextIO, text: str) -> None:
        self.stream, self.text = stream, text

    def update(self, text: str) -> None:
        self.text = text

    def done(self, lasting: bool) -> None:
        if lasting:
            _write(self.stream, self.text)


class Lines:
    """Not a terminal: each status written once, as a line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def spinner(self, text: str) -> Spin:
        return _Line(self.stream, text)

    def line(self, text: str) -> None:
        _write(self.stream, text)

    def step(self, step: dict[str, Any]) -> None:
        status = str(step.get("status", ""))
        if status != self.last:
            _write(self.stream, status)
            self.last = status

    def stop(self) -> None:
        pass


def _write(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()
