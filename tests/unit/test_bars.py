"""Progress bars and spinners as Ollama draws them (progress/bar.go, spinner.go, progress.go),
and which bars `pull`, `push` and `create` draw (cmd.go's progress callbacks)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from corral.bars import (
    Bar,
    Spinner,
    clear_frame,
    format_duration,
    render_bar,
    render_frame,
    render_spinner,
)
from corral.transfer import Bars, Kind, Lines, bar_message

LAYER = "pulling 5b9e1e94900d:"


@pytest.mark.parametrize(
    ("message", "total", "completed", "rate", "width", "stopped", "line"),
    [(LAYER, 98_000_000, 44_000_000, 12_000_000, 80, False,
      "pulling 5b9e1e94900d:  45% ▕████████          ▏  44 MB/ 98 MB   12 MB/s      4s"),
     (LAYER, 98_000_000, 98_000_000, 0, 80, True,
      "pulling 5b9e1e94900d: 100% ▕██████████████████▏  98 MB" + " " * 25),
     (LAYER, 98_000_000, 44_000_000, 0, 80, False,
      "pulling 5b9e1e94900d:  45% ▕████████          ▏  44 MB/ 98 MB" + " " * 18),
     ("pulling abc:", 5_000_000_000, 1_000_000_000, 1_500_000, 100, False,
      "pulling abc:  20% ▕█████████" + " " * 38 + "▏   1 GB/  5 GB  1.5 MB/s  44m26s"),
     ("pushing 5b9e1e94900d", 2_000_000_000, 0, 0, 60, False,
      "pushing 5b9e1e94900d   0% ▕▏    0 B/  2 GB" + " " * 18),
     ("", 0, 0, 0, 44, True, "  0% ▕" + " " * 4 + "▏    0 B" + " " * 25)],
    ids=["running", "done", "no-rate-yet", "hours-and-minutes-left", "too-narrow-for-a-bar", "no-message"],
)  # fmt: skip
def test_render_bar(
    message: str, total: int, completed: int, rate: float, width: int, stopped: bool, line: str
) -> None:
    assert render_bar(message, total, completed, rate, width, stopped) == line


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (4, "4s"), (65, "1m5s"), (3599, "59m59s"), (3600, "1h0m"), (7380, "2h3m"),
     (100 * 3600, "99h+")],
)  # fmt: skip
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_bar_rate_from_its_samples() -> None:
    """One sample a second at most; the rate spans the first and last (whole seconds)."""
    bar = Bar.new(LAYER, 1000, 0, now=0.0)
    assert bar.rate() == 0
    bar.set(100, now=2.4)  # one sample: since the start, 2.4 s rounds to 2
    assert bar.rate() == 50
    bar.set(150, now=3.0)  # within a second of the last sample: no new one
    assert len(bar.buckets) == 1 and bar.current == 150
    bar.set(400, now=5.6)  # 300 bytes over 5.6 - 2.4 = 3.2 s, rounded to 3
    assert bar.rate() == 100
    bar.set(2000, now=7.0)  # capped at the total, stopped: the whole bar over 7 s
    assert bar.current == 1000 and bar.stopped == 7.0 and bar.rate() == 1000 / 7
    assert bar.render(80, now=7.0).startswith("pulling 5b9e1e94900d: 100% ▕")


def test_a_bar_that_starts_complete_is_stopped() -> None:
    assert Bar.new(LAYER, 10, 10, now=1.0).stopped == 1.0


@pytest.mark.parametrize(
    ("message", "elapsed", "stopped", "text"),
    [("pulling manifest", 0.0, False, "pulling manifest ⠋ "),
     ("pulling manifest", 0.35, False, "pulling manifest ⠸ "),
     ("pulling manifest", 1.05, False, "pulling manifest ⠋ "),
     ("  success ", 3.0, True, "success "),
     ("", 0.1, False, "⠙ ")],
    ids=["first-frame", "fourth-frame", "wraps-after-ten", "stopped-no-frame", "no-message"],
)  # fmt: skip
def test_render_spinner(message: str, elapsed: float, stopped: bool, text: str) -> None:
    assert render_spinner(message, elapsed, stopped) == text


def test_render_frame_redraws_in_place() -> None:
    assert render_frame(["a", "b"], previous=0, height=24) == (
        "\x1b[?2026h\x1b[?25l\x1b[1Ga\x1b[K\nb\x1b[K\x1b[?25h\x1b[?2026l"
    )
    # back up over the 3 lines drawn before; a short terminal shows only the last lines
    assert render_frame(["a", "b", "c"], previous=3, height=2) == (
        "\x1b[?2026h\x1b[?25l\x1b[A\x1b[A\x1b[1Gb\x1b[K\nc\x1b[K\x1b[?25h\x1b[?2026l"
    )
    assert clear_frame(2) == "\x1b[2K\x1b[1G\x1b[A\x1b[2K\x1b[1G"


@pytest.mark.parametrize(
    ("kind", "digest", "status", "message"),
    [("pull", "sha256:5b9e1e94900d31ab", "pulling 5b9e1e94900d", "pulling 5b9e1e94900d:"),
     ("pull", "other", "", "pulling other:"),
     ("push", "sha256:5b9e1e94900d31ab", "pushing 5b9e1e94900d", "pushing 5b9e1e94900d"),
     ("push", "sha256:5b9e1e94900d31ab", "", "pushing 5b9e1e94900d..."),
     ("create", "sha256:5b9e1e94900d31ab", "", "pulling 5b9e1e94900d...")],
    ids=["pull-names-by-digest", "pull-not-a-sha", "push-status", "push-no-status", "create-no-status"],
)  # fmt: skip
def test_bar_message(kind: Kind, digest: str, status: str, message: str) -> None:
    assert bar_message(kind, digest, status) == message


PULL = [
    {"status": "pulling manifest"},
    {"status": "pulling 5b9e1e94900d", "digest": "sha256:5b9e1e94900d31ab", "total": 100, "completed": 0},
    {"status": "pulling 5b9e1e94900d", "digest": "sha256:5b9e1e94900d31ab", "total": 100, "completed": 40},
    {"status": "pulling 5b9e1e94900d", "digest": "sha256:5b9e1e94900d31ab", "total": 100, "completed": 100},
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]


def _states(kind: Kind, steps: list[dict[str, Any]]) -> list[str]:
    bars = Bars(kind, io.StringIO())
    try:
        for step in steps:
            bars.step(step)
    finally:
        bars.progress.stop_and_clear()
    return [state.render(80, 0.0).split(" ▕")[0].strip() for state in bars.progress.states]


def test_a_pull_skips_the_zero_update_and_stops_each_spinner() -> None:
    shown = _states("pull", PULL)
    assert shown == [
        "pulling manifest",
        "pulling 5b9e1e94900d: 100%",
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]


def test_a_push_shows_the_zero_update() -> None:
    step = {"status": "pushing 5b9e1e94900d", "digest": "sha256:5b9e1e94900d31ab", "total": 100}
    bars = Bars("push", io.StringIO())
    bars.step({**step, "completed": 0})
    bars.progress.stop_and_clear()
    assert [type(s) for s in bars.progress.states] == [Bar]
    assert not [s for s in bars.progress.states if isinstance(s, Spinner)]


def test_not_a_terminal_writes_each_status_once() -> None:
    out = io.StringIO()
    lines = Lines(out)
    for step in PULL:
        lines.step(step)
    copying = lines.spinner("copying file sha256:ab 0%")
    copying.update("copying file sha256:ab 100%")
    copying.done(lasting=True)
    lines.spinner("gathering model components").done(lasting=False)
    assert out.getvalue().splitlines() == [
        "pulling manifest",
        "pulling 5b9e1e94900d",
        "verifying sha256 digest",
        "writing manifest",
        "success",
        "copying file sha256:ab 100%",
    ]
