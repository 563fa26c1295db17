"""Ollama's progress display on a terminal (progress/bar.go, spinner.go, progress.go).

`render_bar` is bar.go's `Bar.String` and `render_spinner` spinner.go's `Spinner.String`, pure:
the terminal width, the rate and the clock are passed in. `Bar` keeps bar.go's rate buckets
against an injected clock. `Progress` is progress.go's loop: every line redrawn in place on
stderr every 100 ms, and `stop` / `stop_and_clear` to leave them or wipe them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TextIO

from corral.tables import human_bytes

DEFAULT_WIDTH = 80  # progress.go's defaultTermWidth and defaultTermHeight, when there is no tty
DEFAULT_HEIGHT = 24
TICK = 0.1  # seconds between redraws, and between a spinner's frames
SPINNER_FRAMES = ("⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏")
MAX_BUCKETS = 10  # rate samples kept, at most one a second
HOUR = 3600

Clock = Callable[[], float]


def _pad(text: str, width: int) -> str:
    """bar.go's `repeat(" ", width-len(text)) + text`."""
    return " " * (width - len(text)) + text


def _go_round_seconds(seconds: float) -> int:
    """time.Duration.Round(time.Second): halves away from zero."""
    return int(seconds + 0.5) if seconds >= 0 else -int(-seconds + 0.5)


def format_duration(seconds: int) -> str:
    """bar.go's formatDuration of a whole number of seconds: `4s`, `1m5s`, `2h3m`, `99h+`."""
    if seconds >= 100 * HOUR:
        return "99h+"
    if seconds >= HOUR:
        return f"{seconds // HOUR}h{seconds // 60 % 60}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60}s"
    return f"{seconds}s"


def render_bar(message: str, total: int, completed: int, rate: float, width: int, stopped: bool) -> str:
    """One bar as bar.go draws it, e.g. `pulling 5b9e1e94900d:  45% ▕███   ▏  44 MB/ 98 MB ...`:
    while it runs, bytes so far / total, the rate and the time left; once stopped, the total."""
    percent = completed / total * 100 if total > 0 else 0.0
    pre = f"{message.strip()} " if message else ""
    pre += f"{percent:3.0f}%"

    if not stopped:
        suf = f"{_pad(human_bytes(completed), 6)}/{_pad(human_bytes(total), 6)}"
    else:
        suf = _pad(human_bytes(total), 6) + " " * 7
    if not stopped and rate > 0:
        suf += "  " + _pad(human_bytes(int(rate)), 6) + "/s"
        remaining = int((total - completed) / rate)
        suf += "  " + _pad(format_duration(remaining), 6)
    else:
        suf += " " * 10 + " " * 8

    # Go measures both in bytes; 5 = the two boundary characters and a space at each end.
    free = width - len(pre.encode()) - len(suf.encode()) - 5
    filled = int(free * percent / 100)
    mid = " ▕" + "█" * max(filled, 0) + " " * max(free - filled, 0) + "▏ "
    return pre + mid + suf


def render_spinner(message: str, elapsed: float, stopped: bool) -> str:
    """spinner.go: the message, then the frame for `elapsed` seconds (none once stopped)."""
    text = f"{message.strip()} " if message else ""
    if not stopped:
        text += SPINNER_FRAMES[int(elapsed / TICK) % len(SPINNER_FRAMES)] + " "
    return text


class State(Protocol):
    def render(self, width: int, now: float) -> str: ...


@dataclass
class Bar:
    """bar.go's Bar: its value, and up to ten (time, value) samples a second apart for the rate."""

    message: str
    total: int
    initial: int
    started: float
    current: int = 0
    stopped: float | None = None
    buckets: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def new(cls, message: str, total: int, initial: int, now: float) -> Bar:
        return cls(message, total, initial, now, initial, now if initial >= total else None)

    def set(self, value: int, now: float) -> None:
        value = min(value, self.total)
        self.current = value
        if value >= self.total:
            self.stopped = now
        if not self.buckets or now - self.buckets[-1][0] > 1:
            self.buckets = [*self.buckets, (now, value)][-MAX_BUCKETS:]

    def rate(self) -> float:
        """Bytes a second: over the whole bar once stopped, else between the first and last samples
        (each span rounded to whole seconds, as Go's Duration.Round does)."""
        if self.stopped is not None:
            numerator = self.current - self.initial
            denominator = _go_round_seconds(self.stopped - self.started)
        elif not self.buckets:
            return 0.0
        elif len(self.buckets) == 1:
            numerator = self.buckets[0][1] - self.initial
            denominator = _go_round_seconds(self.buckets[0][0] - self.started)
        else:
            (first_at, first), (last_at, last) = self.buckets[0], self.buckets[-1]
            numerator, denominator = last - first, _go_round_seconds(last_at - first_at)
        return numerator / denominator if denominator else 0.0

    def render(self, width: int, now: float) -> str:
        stopped = self.stopped is not None
        return render_bar(self.message, self.total, self.current, self.rate(), width, stopped)


@dataclass
class Spinner:
    message: str
    started: float
    stopped: float | None = None

    def stop(self, now: float) -> None:
        if self.stopped is None:
            self.stopped = now

    def render(self, width: int, now: float) -> str:
        return render_spinner(self.message, now - self.started, self.stopped is not None)


def render_frame(lines: list[str], previous: int, height: int) -> str:
    """progress.go's renderLocked: back to the first line drawn last time (`previous` lines), then
    the last `height` lines, each cleared to its end, with synchronized output and no cursor."""
    shown = lines[len(lines) - min(len(lines), height) :]
    body = "\n".join(line + "\x1b[K" for line in shown)
    back = "\x1b[A" * max(previous - 1, 0)
    return f"\x1b[?2026h\x1b[?25l{back}\x1b[1G{body}\x1b[?25h\x1b[?2026l"


def clear_frame(previous: int) -> str:
    """StopAndClear's erasing of the `previous` lines drawn."""
    return "".join(("\x1b[A" if i else "") + "\x1b[2K\x1b[1G" for i in range(previous))


def terminal_size(stream: TextIO) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError):
        return DEFAULT_WIDTH, DEFAULT_HEIGHT
    return size.columns or DEFAULT_WIDTH, size.lines or DEFAULT_HEIGHT


class Progress:
    """progress.go's Progress: states drawn on `stream` every TICK until stopped, from a thread."""

    def __init__(self, stream: TextIO, clock: Clock = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        self.states: list[State] = []
        self._lock = threading.Lock()
        self._drawn = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="corral-progress", daemon=True)
        self._thread.start()

    def add(self, state: State) -> None:
        with self._lock:
            self.states.append(state)

    def spinner(self, message: str) -> Spinner:
        spinner = Spinner(message, self.clock())
        self.add(spinner)
        return spinner

    def bar(self, message: str, total: int, initial: int) -> Bar:
        bar = Bar.new(message, total, initial, self.clock())
        self.add(bar)
        return bar

    def stop(self) -> bool:
        """Draw the last frame and leave it, with a newline after it; False if already stopped."""
        stopped = self._stop()
        if stopped:
            self._write("\n")
        return stopped

    def stop_and_clear(self) -> bool:
        """Wipe every line drawn; False if already stopped."""
        self._write("\x1b[?25l")
        stopped = self._stop()
        if stopped:
            self._write(clear_frame(self._drawn))
        self._write("\x1b[?25h")
        return stopped

    def _stop(self) -> bool:
        first = not self._done.is_set()
        self._done.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            now = self.clock()
            for state in self.states:
                if isinstance(state, Spinner):
                    state.stop(now)
            if first:
                self._render_locked()
        return first

    def _loop(self) -> None:
        while not self._done.wait(TICK):
            with self._lock:
                self._render_locked()

    def _render_locked(self) -> None:
        width, height = terminal_size(self.stream)
        now = self.clock()
        lines = [state.render(width, now) for state in self.states]
        self._write(render_frame(lines, self._drawn, height))
        self._drawn = len(lines)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
