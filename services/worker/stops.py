"""Stop sequences over streamed text: emit what is safe, hold back what may start a stop."""

from __future__ import annotations


class StopMatcher:
    """Feed generated text piece by piece; text that could still begin a stop is held back.

    `feed` returns the text safe to send and whether a stop sequence was reached
    (the stop itself and anything after it are never sent, as in Ollama).
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i != -1]
        if hits:
            self._held = ""
            return buffer[: min(hits)], True
        keep = self._longest_partial(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Text still held when generation ends without reaching a stop."""
        held, self._held = self._held, ""
        return held

    def _longest_partial(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of a stop."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:n]):
                    best = n
                    break
        return best
