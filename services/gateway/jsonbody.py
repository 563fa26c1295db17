"""Decoding a JSON body the way Go's encoding/json decodes it, for the cases Python's differs.

- Invalid UTF-8 becomes U+FFFD, and so do lone surrogate escapes (`"\\ud800"`): Go accepts
  both and replaces them, where Python raises or keeps an unencodable string.
- `NaN` and `Infinity` are not JSON: Go refuses them, Python's json accepts them.
- Nesting deeper than Python's parser can follow is refused as Go refuses nesting past 10,000
  ("exceeded max depth"), only sooner (about 1,000 levels).
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class InvalidJson(ValueError):
    """The body is not JSON Go would accept; the message is Go's (or close to it)."""


def decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        data = json.loads(text, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"invalid JSON: {exc.msg} at offset {exc.pos}") from exc
    except RecursionError as exc:
        raise InvalidJson("exceeded max depth") from exc
    if _SURROGATE_ESCAPE.search(raw):
        data = _replace_surrogates(data)
    return data


def _constant(name: str) -> Any:
    character = name.lstrip("-")[0]
    raise InvalidJson(f"invalid character '{character}' looking for beginning of value")


def _replace_surrogates(value: Any) -> Any:
    """Lone surrogates (which no UTF-8 can carry) as U+FFFD, as Go decodes them; Python's json
    has already joined the escapes of valid pairs into one character."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_replace_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    return value
