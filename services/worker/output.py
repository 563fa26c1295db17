"""Splitting a model's streamed answer into content, thinking and tool calls.

A parser is fed the answer's text as it grows and says, each time, what it can
already tell apart; text that may still turn out to be a tag is held back until
it can be told. Which parser a model gets depends on its template (the tags it
writes for thinking and tool calls); `PlainParser` passes everything through.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.worker.thinking import ThinkingParser
from services.worker.tools import ToolCallParser


@dataclass
class Parsed:
    content: str = ""
    thinking: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: Parsed) -> None:
        self.content += other.content
        self.thinking += other.thinking
        self.tool_calls += other.tool_calls


class OutputParser(Protocol):
    def add(self, text: str) -> Parsed: ...

    def flush(self) -> Parsed:
        """Whatever is still held back, once the answer has ended."""
        ...


class PlainParser:
    """Everything is content."""

    def add(self, text: str) -> Parsed:
        return Parsed(content=text)

    def flush(self) -> Parsed:
        return Parsed()


class ModelParser:
    """Thinking first (when the request thinks), then tool calls (when it offers tools)."""

    def __init__(self, thinking: ThinkingParser | None, tools: ToolCallParser | None) -> None:
        self._thinking = thinking
        self._tools = tools

    def add(self, text: str) -> Parsed:
        thinking, content = self._thinking.add(text) if self._thinking else ("", text)
        return self._with_calls(thinking, content)

    def flush(self) -> Parsed:
        thinking, content = self._thinking.flush() if self._thinking else ("", "")
        parsed = self._with_calls(thinking, content)
        if self._tools is not None:
            parsed.content += self._tools.flush()
        return parsed

    def _with_calls(self, thinking: str, content: str) -> Parsed:
        if self._tools is None or not content:
            return Parsed(content=content, thinking=thinking)
        calls, content = self._tools.add(content)
        for call in calls:
            call["id"] = call_id()
        return Parsed(content=content, thinking=thinking, tool_calls=calls)


def call_id() -> str:
    """Ollama's tool call ids: "call_" and eight lowercase letters or digits."""
    return "call_" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
