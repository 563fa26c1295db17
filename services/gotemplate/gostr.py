"""Go's string quoting (strconv.Quote, strconv.Unquote), which template literals, `%q` and errors use.

Go strings are bytes; Python strings are code points. Bytes that are not UTF-8 (a `"\\xff"` literal,
a string sliced mid-character) travel as surrogate escapes, so they round-trip to the output intact.
"""

from __future__ import annotations

_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_QUOTE_ESCAPES = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


def go_len(s: str) -> int:
    """len(s) in Go: bytes of UTF-8, not characters."""
    return len(to_bytes(s))


def to_bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def from_bytes(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def quote(s: str, quote_char: str = '"') -> str:
    """strconv.Quote: printable characters kept, the rest escaped (\\n, \\x00, \\u00a0, ...)."""
    out = [quote_char]
    for ch in s:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an escaped non-UTF-8 byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in (quote_char, "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif code in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[code])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append(quote_char)
    return "".join(out)


def unquote(token: str) -> str:
    """strconv.Unquote of a `"..."`, `` `...` `` or `'.'` literal; ValueError("invalid syntax") if bad."""
    if len(token) < 2 or token[0] != token[-1] or token[0] not in "\"`'":
        raise ValueError("invalid syntax")
    quote_char, body = token[0], token[1:-1]
    if quote_char == "`":
        if "`" in body:
            raise ValueError("invalid syntax")
        return body.replace("\r", "")
    if "\n" in body:
        raise ValueError("invalid syntax")
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == quote_char:
            raise ValueError("invalid syntax")
        if ch != "\\":
            out += to_bytes(ch)
            i += 1
            continue
        i = _unescape(body, i + 1, quote_char, out)
    text = from_bytes(bytes(out))
    if quote_char == "'" and len(text) != 1:
        raise ValueError("invalid syntax")
    return text


def _unescape(body: str, i: int, quote_char: str, out: bytearray) -> int:
    """Append the escape starting after the backslash at body[i-1]; return the index after it."""
    if i >= len(body):
        raise ValueError("invalid syntax")
    ch = body[i]
    if ch in _SIMPLE_ESCAPES:
        out.append(_SIMPLE_ESCAPES[ch])
        return i + 1
    if ch == quote_char:
        out += to_bytes(ch)
        return i + 1
    width = {"x": 2, "u": 4, "U": 8}.get(ch)
    if width is not None:
        digits = body[i + 1 : i + 1 + width]
        if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
            raise ValueError("invalid syntax")
        value = int(digits, 16)
        if ch == "x":
            out.append(value)
        elif value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            raise ValueError("invalid syntax")
        else:
            out += chr(value).encode("utf-8")
        return i + 1 + width
    digits = body[i : i + 3]
    if len(digits) == 3 and all(d in "01234567" for d in digits) and int(digits, 8) < 256:
        out.append(int(digits, 8))
        return i + 3
    raise ValueError("invalid syntax")
