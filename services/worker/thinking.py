"""Separating a model's thinking from its answer, as Ollama's thinking.Parser does.

The answer may open with the opening tag (after whitespace); what follows up to
the closing tag is thinking, what follows that is content. Whitespace right
after either tag is eaten. A partial tag at the end of the text seen so far is
held back until more text tells whether it is one.
"""

from __future__ import annotations

from enum import Enum, auto


class _State(Enum):
    LOOKING_FOR_OPENING = auto()
    STARTED_EATING_WHITESPACE = auto()
    THINKING = auto()
    DONE_EATING_WHITESPACE = auto()
    DONE = auto()


class ThinkingParser:
    def __init__(self, opening: str, closing: str) -> None:
        self.opening, self.closing = opening, closing
        self._state = _State.LOOKING_FOR_OPENING
        self._acc = ""

    def add(self, text: str) -> tuple[str, str]:
        """(thinking, content) that can be told apart now."""
        self._acc += text
        thinking, content = "", ""
        more = True
        while more:
            think, rest, more = self._eat()
            thinking += think
            content += rest
        return thinking, content

    def _eat(self) -> tuple[str, str, bool]:
        acc = self._acc
        match self._state:
            case _State.LOOKING_FOR_OPENING:
                trimmed = acc.lstrip()
                if trimmed.startswith(self.opening):
                    after = trimmed[len(self.opening) :].lstrip()
                    self._acc = after
                    self._state = _State.THINKING if after else _State.STARTED_EATING_WHITESPACE
                    return "", "", True
                if self.opening.startswith(trimmed):  # a partial tag, or whitespace only
                    return "", "", False
                self._state, self._acc = _State.DONE, ""  # no thinking: keep the text as written
                return "", acc, False
            case _State.STARTED_EATING_WHITESPACE:
                trimmed, self._acc = acc.lstrip(), ""
                if not trimmed:
                    return "", "", False
                self._state, self._acc = _State.THINKING, trimmed
                return "", "", True
            case _State.THINKING:
                if self.closing in acc:
                    thinking, _, rest = acc.partition(self.closing)
                    rest = rest.lstrip()
                    self._acc = ""
                    self._state = _State.DONE if rest else _State.DONE_EATING_WHITESPACE
                    return thinking, rest, False
                held = _overlap(acc, self.closing)
                self._acc = acc[len(acc) - held :] if held else ""
                return acc[: len(acc) - held], "", False
            case _State.DONE_EATING_WHITESPACE:
                trimmed, self._acc = acc.lstrip(), ""
                if trimmed:
                    self._state = _State.DONE
                return "", trimmed, False
            case _State.DONE:
                self._acc = ""
                return "", acc, False
        raise AssertionError(self._state)  # pragma: no cover - every state is handled above

    def flush(self) -> tuple[str, str]:
        """What is still held at the end of the answer: a partial tag is text after all."""
        held, self._acc = self._acc, ""
        if self._state in (_State.THINKING, _State.STARTED_EATING_WHITESPACE):
            return held, ""
        return "", held


def _overlap(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a prefix of `tag`."""
    for n in range(min(len(tag), len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0
