"""How `corral run` prints an answer, as `ollama run` does (cmd/cmd.go, api/types.go).

Pure functions: `display_response` is cmd.go's word wrapping, `Answer` its streaming of
thinking ("Thinking..." … "...done thinking.") then the answer, and `summary` api's
Metrics.Summary (`--verbose`, `/set verbose`) with Go's Duration spelling.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GREY, BOLD, DEFAULT = "\x1b[38;5;245m", "\x1b[1m", "\x1b[0m"  # readline/types.go's colours
SECOND = 1_000_000_000  # nanoseconds, as the API's durations are


def rune_width(char: str) -> int:
    """go-runewidth's RuneWidth: 0 for control and combining characters, 2 for wide ones."""
    if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or unicodedata.combining(char):
        return 0
    if unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    return sum(rune_width(c) for c in text)


@dataclass
class WrapState:
    """cmd.go's displayResponseState: columns used on the current line, and the word so far."""

    line_length: int = 0
    word_buffer: str = ""


def display_response(content: str, word_wrap: bool, state: WrapState, width: int) -> str:
    """cmd.go's displayResponse: what to write for `content`. Wrapping keeps 5 columns free: a
    character that would cross `width - 5` moves its word to a new line (the cursor steps back
    over it and clears), unless the word is wider than `width - 10`, which then runs on.

    One change from Ollama: on a word too long to move, Ollama writes the word again before the
    character (it has been written already), doubling it on screen; here the character alone."""
    if not word_wrap or width < 10:
        text, state.word_buffer = state.word_buffer + content, ""
        return text
    out: list[str] = []
    for char in content:
        if state.line_length + 1 > width - 5:
            if text_width(state.word_buffer) > width - 10:
                out.append(char)
                state.word_buffer, state.line_length = "", 0
                continue
            back = text_width(state.word_buffer)
            out.append((f"\x1b[{back}D" if back > 0 else "") + "\x1b[K\n" + state.word_buffer + char)
            state.line_length = back + rune_width(char)
            continue
        out.append(char)
        state.line_length += rune_width(char)
        if rune_width(char) >= 2:
            state.word_buffer = ""
        elif char in " \t":
            state.word_buffer = ""
        elif char in "\n\r":
            state.line_length, state.word_buffer = 0, ""
        else:
            state.word_buffer += char
    return "".join(out)


def thinking_opening(plain: bool) -> str:
    """cmd.go's thinkingOutputOpeningText: grey from here on a terminal."""
    text = "Thinking...\n"
    return text if plain else GREY + BOLD + text + DEFAULT + GREY


def thinking_closing(plain: bool) -> str:
    text = "...done thinking.\n\n"
    return text if plain else GREY + BOLD + text + DEFAULT


@dataclass
class Answer:
    """One streamed answer as chat()/generate() print it: thinking (unless hidden) framed and
    wrapped, then the content, wrapped afresh. `thinking` and `content` keep what came."""

    word_wrap: bool
    width: int
    plain: bool
    hide_thinking: bool = False
    thinking: str = ""
    content: str = ""
    _state: WrapState = field(default_factory=WrapState)
    _opened: bool = False
    _closed: bool = False

    def feed(self, thinking: str, content: str) -> str:
        out: list[str] = []
        if thinking and not self.hide_thinking:
            if not self._opened:
                out.append(thinking_opening(self.plain))
                self._opened, self._closed = True, False
            self.thinking += thinking
            out.append(display_response(thinking, self.word_wrap, self._state, self.width))
        if self._opened and not self._closed and content:
            if not self.thinking.endswith("\n"):
                out.append("\n")
            out.append(thinking_closing(self.plain))
            self._opened, self._closed = False, True
            self._state = WrapState()
        self.content += content
        out.append(display_response(content, self.word_wrap, self._state, self.width))
        return "".join(out)


def _frac(value: int, digits: int) -> tuple[int, str]:
    """Go's fmtFrac: the whole part, and `.ddd` without trailing zeros (nothing when zero)."""
    whole, fraction = divmod(value, 10**digits)
    text = f"{fraction:0{digits}d}".rstrip("0")
    return whole, f".{text}" if text else ""


def go_duration(nanoseconds: int) -> str:
    """time.Duration.String: `1.5s`, `2m3.25s`, `1h0m0s`, `523.4ms`, `45µs`, `800ns`, `0s`."""
    if nanoseconds == 0:
        return "0s"
    sign, value = ("-" if nanoseconds < 0 else ""), abs(nanoseconds)
    if value < 1_000:
        return f"{sign}{value}ns"
    if value < 1_000_000:
        whole, frac = _frac(value, 3)
        return f"{sign}{whole}{frac}µs"
    if value < SECOND:
        whole, frac = _frac(value, 6)
        return f"{sign}{whole}{frac}ms"
    seconds, frac = _frac(value, 9)
    text = f"{seconds % 60}{frac}s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _seconds(nanoseconds: int) -> float:
    """Duration.Seconds, computed as Go does (whole seconds plus the fraction)."""
    whole, rest = divmod(nanoseconds, SECOND)
    return whole + rest / 1e9


def summary(metrics: Mapping[str, Any]) -> str:
    """api.Metrics.Summary's lines (for stderr), each only when its value is there."""
    total, load = int(metrics.get("total_duration") or 0), int(metrics.get("load_duration") or 0)
    prompt_count = int(metrics.get("prompt_eval_count") or 0)
    prompt_time = int(metrics.get("prompt_eval_duration") or 0)
    count, time = int(metrics.get("eval_count") or 0), int(metrics.get("eval_duration") or 0)
    lines: list[str] = []
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if prompt_count > 0:
        lines.append(f"prompt eval count:    {prompt_count} token(s)")
    if prompt_time > 0:
        lines.append(f"prompt eval duration: {go_duration(prompt_time)}")
        lines.append(f"prompt eval rate:     {prompt_count / _seconds(prompt_time):.2f} tokens/s")
    if count > 0:
        lines.append(f"eval count:           {count} token(s)")
    if time > 0:
        lines.append(f"eval duration:        {go_duration(time)}")
        lines.append(f"eval rate:            {count / _seconds(time):.2f} tokens/s")
    return "".join(line + "\n" for line in lines)
