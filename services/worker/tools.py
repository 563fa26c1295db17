"""Finding tool calls in a model's answer, as Ollama's tools.Parser does.

The model's template says how it writes a call: after a tag such as
`<tool_call>` (or, when the template has none, as a bare JSON object). Text
before the tag is content. After it, a call is recognised by the name of one of
the request's tools followed by a JSON object holding its arguments (under
`arguments` or `parameters`, as an object or a JSON string). With the bare `{`
or `[` tag, an answer that begins with anything else is content throughout.
"""

from __future__ import annotations

import json
from typing import Any

Call = dict[str, Any]  # {"function": {"index", "name", "arguments"}}


class ToolCallParser:
    def __init__(self, tag: str, tools: list[dict[str, Any]]) -> None:
        self.tag = tag
        self._names = [n for t in tools if (n := str((t.get("function") or {}).get("name") or ""))]
        self._buffer = ""
        self._looking = True
        self._done = False
        self._count = 0

    def add(self, text: str) -> tuple[list[Call], str]:
        """(calls, content) that can be told apart now."""
        if self._done:
            return [], text
        self._buffer += text
        content = ""
        if self._looking:
            index, found = self._find_tag()
            if index == -1:
                content, self._buffer = self._buffer, ""
            else:
                content, self._buffer = self._buffer[:index], self._buffer[index:]
            if self.tag in ("{", "[") and content.strip():
                self._done = True
                rest, self._buffer = self._buffer, ""
                return [], content + rest
            if not found:
                return [], content
            self._looking = False
        calls = []
        while (call := self._next_call()) is not None:
            calls.append(call)
        if self._closed():
            self._done = True
            content, self._buffer = self._buffer, ""
        return calls, content

    def flush(self) -> str:
        """Content still held at the end: a bare-JSON answer that held no call is text after all."""
        held, self._buffer = self._buffer, ""
        if self._count == 0 and (self._looking or self.tag in ("{", "[")):
            return held
        return ""

    def _find_tag(self) -> tuple[int, bool]:
        index = self._buffer.find(self.tag)
        if index != -1:
            return index, True
        for n in range(min(len(self._buffer), len(self.tag)), 0, -1):
            if self._buffer.endswith(self.tag[:n]):
                return len(self._buffer) - n, False
        return -1, False

    def _next_call(self) -> Call | None:
        name, end = self._find_tool()
        if name is None:
            return None
        arguments, arguments_end = _find_arguments(name, self._buffer)
        if arguments is None:
            return None
        call = {"function": {"index": self._count, "name": name, "arguments": arguments}}
        self._count += 1
        self._buffer = self._buffer[max(end, arguments_end) :]
        return call

    def _find_tool(self) -> tuple[str | None, int]:
        """The first tool name in the buffer, unless it ends with what may be the start of one."""
        if not self._buffer or not self._names:
            return None, 0
        longest = max(len(n) for n in self._names)
        for i in range(1, min(len(self._buffer), longest) + 1):
            tail = self._buffer[-i:]
            if any(len(tail) < len(n) and n.startswith(tail) for n in self._names):
                return None, 0  # "get" may yet become "get_weather"
        best: str | None = None
        start = -1
        for name in self._names:
            position = self._buffer.find(name)
            if position == -1:
                continue
            if best is not None and (position > start or (position == start and len(name) <= len(best))):
                continue
            best, start = name, position
        return (best, start + len(best)) if best is not None else (None, 0)

    def _closed(self) -> bool:
        """For the bare `{` / `[` tags: has the JSON value that began the answer ended?"""
        if self.tag not in ("{", "["):
            return False
        opening, closing = ("{", "}") if self.tag == "{" else ("[", "]")
        depth = 0
        for char, in_string in _scan(self._buffer):
            if in_string:
                continue
            if char == opening:
                depth += 1
            elif char == closing:
                depth -= 1
                if depth == 0:
                    return True
        return False


def _find_arguments(name: str, buffer: str) -> tuple[dict[str, Any] | None, int]:
    """The first JSON object in `buffer` that holds arguments for tool `name`, and where it ends."""
    start, depth = -1, 0
    for i, (char, in_string) in enumerate(_scan(buffer)):
        if in_string:
            continue
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0 and start != -1:
                try:
                    data = json.loads(buffer[start : i + 1])
                except json.JSONDecodeError:
                    start = -1
                    continue
                if isinstance(data, dict):
                    found = _arguments_in(name, data)
                    return (found if found is not None else data), i + 1
            depth = max(depth, 0)
    return None, 0


def _arguments_in(name: str, data: dict[str, Any]) -> dict[str, Any] | None:
    def as_map(value: Any) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                return None
            return parsed if isinstance(parsed, dict) else None
        return None

    if "name" in data:
        for key in ("arguments", "parameters"):
            if (found := as_map(data.get(key))) is not None:
                return found
        return {}
    if (found := as_map(data.get(name))) is not None:
        return found
    for value in data.values():
        children = value if isinstance(value, list) else [value]
        for child in children:
            if isinstance(child, dict) and (found := _arguments_in(name, child)) is not None:
                return found
    return None


def _scan(text: str) -> list[tuple[str, bool]]:
    """Each character with whether it lies inside a JSON string (quotes count as inside)."""
    out = []
    in_string = escaped = False
    for char in text:
        if escaped:
            escaped = False
            out.append((char, True))
            continue
        if char == "\\":
            escaped = True
            out.append((char, True))
            continue
        if char == '"':
            in_string = not in_string
            out.append((char, True))
            continue
        out.append((char, in_string))
    return out
