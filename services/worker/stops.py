"""Stop sequences over streamed text: emit what is safe, hold back what may start a stop."""

from __future__ import annotations

import ahocorasick


class StopMatcher:
    """Feed generated text piece by piece; text that could still begin a stop is held back.

    `feed` returns the text safe to send and whether a stop sequence was reached
    (the stop itself and anything after it are never sent, as in Ollama).

    The stops are one Aho-Corasick automaton (pyahocorasick), so a piece costs the same
    with one stop or 100,000 (a request may send that many): it is scanned once, with
    what was held back, for every stop at the same time.
    """

    def __init__(self, stops: list[str]) -> None:
        stops = [s for s in stops if s]
        self._automaton: ahocorasick.Automaton | None = None
        self._longest = max(map(len, stops), default=0)
        self._held = ""
        if stops:
            self._automaton = ahocorasick.Automaton()
            for stop in stops:
                self._automaton.add_word(stop, len(stop))
            self._automaton.make_automaton()

    def feed(self, text: str) -> tuple[str, bool]:
        if self._automaton is None:
            return text, False
        buffer = self._held + text
        # A held suffix is shorter than the longest stop, so a stop that starts earlier than
        # the first one found ends at most that many characters later: the earliest start wins.
        starts = [end - length + 1 for end, length in self._automaton.iter(buffer)]
        if starts:
            self._held = ""
            return buffer[: min(starts)], True
        keep = self._longest_partial(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Text still held when generation ends without reaching a stop."""
        held, self._held = self._held, ""
        return held

    def _longest_partial(self, buffer: str) -> int:
        """Length of the longest suffix of `buffer` that is a proper prefix of a stop."""
        assert self._automaton is not None
        for n in range(min(self._longest - 1, len(buffer)), 0, -1):
            if self._automaton.match(buffer[len(buffer) - n :]):  # a prefix of some stop
                return n
        return 0
