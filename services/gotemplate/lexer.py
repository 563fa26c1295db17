"""Tokens of a template, cut exactly where Go's text/template/parse lexer cuts them.

Whitespace trimming is decided here, as in Go: `{{- ` drops the spaces, tabs and newlines before the
action, ` -}}` those after it, and a trim marker needs its space (`{{-3}}` is the number -3).
Comments `{{/* ... */}}` vanish, taking their trim markers' effect with them.
"""

from __future__ import annotations

import bisect
import unicodedata
from dataclasses import dataclass
from enum import Enum

from .gostr import quote

_SPACE = " \t\r\n"
_SPACES = frozenset(_SPACE)
_KEYWORDS = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)


class Kind(Enum):
    TEXT = "text"
    LEFT_DELIM = "{{"
    RIGHT_DELIM = "}}"
    SPACE = "space"
    PIPE = "|"
    LEFT_PAREN = "("
    RIGHT_PAREN = ")"
    ASSIGN = "="
    DECLARE = ":="
    CHAR = "char"
    FIELD = "field"
    VARIABLE = "variable"
    IDENTIFIER = "identifier"
    DOT = "."
    NIL = "nil"
    BOOL = "bool"
    NUMBER = "number"
    CHAR_CONSTANT = "char constant"
    STRING = "string"
    RAW_STRING = "raw string"
    KEYWORD = "keyword"
    ERROR = "error"
    EOF = "EOF"


_PUNCTUATION = {
    "=": Kind.ASSIGN,
    ":=": Kind.DECLARE,
    "|": Kind.PIPE,
    "(": Kind.LEFT_PAREN,
    ")": Kind.RIGHT_PAREN,
}


@dataclass(frozen=True)
class Token:
    kind: Kind
    val: str
    pos: int
    line: int

    def __str__(self) -> str:
        """How Go's parser names a token in "unexpected ..." errors."""
        if self.kind is Kind.EOF:
            return "EOF"
        if self.kind is Kind.ERROR:
            return self.val
        if self.kind in (Kind.KEYWORD, Kind.DOT, Kind.NIL):
            return f"<{self.val}>"
        if len(self.val) > 10:
            return quote(self.val[:10]) + "..."
        return quote(self.val)


def is_alphanumeric(ch: str) -> bool:
    """Go's rule for identifier characters: a letter, a decimal digit (any script) or `_`."""
    return ch == "_" or ch.isalpha() or unicodedata.category(ch) == "Nd"


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


class _Stop(Exception):
    """Lexing ended at an error token."""


class Lexer:
    """Turns template text into a list of tokens ending with EOF, or with an ERROR token.

    As in Go, a lexing error is a token: the parser reports it only when it reaches it, so an
    earlier syntax error (say, an undefined function) is the one reported.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[Token] = []
        self._newlines = [i for i, ch in enumerate(text) if ch == "\n"]

    def line_of(self, pos: int) -> int:
        return bisect.bisect_left(self._newlines, pos) + 1

    def error(self, pos: int, message: str) -> _Stop:
        self.tokens.append(Token(Kind.ERROR, message, pos, self.line_of(pos)))
        return _Stop()

    def emit(self, kind: Kind, start: int, end: int) -> None:
        self.tokens.append(Token(kind, self.text[start:end], start, self.line_of(start)))

    def run(self) -> list[Token]:
        try:
            self._lex()
        except _Stop:
            pass
        return self.tokens

    def _lex(self) -> None:
        text, pos = self.text, 0
        while (delim := text.find("{{", pos)) >= 0:
            trim = text[delim + 2 : delim + 3] == "-" and text[delim + 3 : delim + 4] in _SPACES
            end = len(text[pos:delim].rstrip(_SPACE)) + pos if trim else delim
            if end > pos:
                self.emit(Kind.TEXT, pos, end)
            inner = delim + (4 if trim else 2)
            if text.startswith("/*", inner):
                pos = self._comment(inner)
            else:
                self.emit(Kind.LEFT_DELIM, delim, delim + 2)
                pos = self._action(inner)
        if pos < len(text):
            self.emit(Kind.TEXT, pos, len(text))
        self.emit(Kind.EOF, len(text), len(text))

    def _right_delim(self, pos: int) -> tuple[bool, bool]:
        """(at a closing delimiter, with a trim marker)."""
        text = self.text
        if text[pos : pos + 1] in _SPACES and text.startswith("-}}", pos + 1):
            return True, True
        return text.startswith("}}", pos), False

    def _skip_space(self, pos: int) -> int:
        while pos < len(self.text) and self.text[pos] in _SPACE:
            pos += 1
        return pos

    def _comment(self, pos: int) -> int:
        close = self.text.find("*/", pos + 2)
        if close < 0:
            raise self.error(pos, "unclosed comment")
        pos = close + 2
        delim, trim = self._right_delim(pos)
        if not delim:
            raise self.error(pos, "comment ends before closing delimiter")
        pos += 4 if trim else 2
        return self._skip_space(pos) if trim else pos

    def _action(self, pos: int) -> int:
        """Lex inside `{{ }}` from pos; return the position after the closing delimiter."""
        text, depth = self.text, 0
        while True:
            delim, trim = self._right_delim(pos)
            if delim:
                if depth:
                    raise self.error(pos, "unclosed left paren")
                start = pos + (2 if trim else 0)
                self.emit(Kind.RIGHT_DELIM, start, start + 2)
                return self._skip_space(start + 2) if trim else start + 2
            if pos >= len(text):
                raise self.error(pos, "unclosed action")
            ch = text[pos]
            punctuation = ":=" if text.startswith(":=", pos) else ch
            if ch in _SPACES:
                pos = self._space(pos)
            elif punctuation in _PUNCTUATION:
                self.emit(_PUNCTUATION[punctuation], pos, pos + len(punctuation))
                depth += {"(": 1, ")": -1}.get(ch, 0)
                pos += len(punctuation)
                if depth < 0:
                    raise self.error(pos, "unexpected right paren U+0029 ')'")
            elif ch == ":":
                raise self.error(pos, "expected :=")
            elif ch in "\"'`":
                pos = self._quoted(pos, ch)
            elif ch == "$":
                pos = self._word(pos, Kind.VARIABLE)
            elif ch == "." and pos + 1 < len(text) and not _is_digit(text[pos + 1]):
                pos = self._word(pos, Kind.FIELD)
            elif ch in "+-." or _is_digit(ch):
                pos = self._number(pos)
            elif is_alphanumeric(ch):
                pos = self._word(pos, Kind.IDENTIFIER)
            elif ch.isascii() and ch.isprintable():
                self.emit(Kind.CHAR, pos, pos + 1)
                pos += 1
            else:
                raise self.error(pos, f"unrecognized character in action: {_unicode_name(ch)}")

    def _space(self, pos: int) -> int:
        end = self._skip_space(pos)
        if self.text.startswith("-}}", end):  # the last space belongs to a " -}}"
            end -= 1
        if end > pos:
            self.emit(Kind.SPACE, pos, end)
        return end

    def _at_terminator(self, pos: int) -> bool:
        return pos >= len(self.text) or self.text[pos] in _SPACE + ".,|:()" or self.text.startswith("}}", pos)

    def _word(self, pos: int, kind: Kind) -> int:
        """A field (.Name), a variable ($ or $name) or an identifier (keyword, true/false, function)."""
        start, end = pos, pos + (0 if kind is Kind.IDENTIFIER else 1)
        while end < len(self.text) and is_alphanumeric(self.text[end]):
            end += 1
        if not self._at_terminator(end):
            raise self.error(end, f"bad character {_unicode_name(self.text[end])}")
        word = self.text[start:end]
        if kind is Kind.FIELD and word == ".":
            kind = Kind.DOT
        elif kind is Kind.IDENTIFIER:
            if word in _KEYWORDS:
                kind = Kind.KEYWORD
            elif word in ("true", "false"):
                kind = Kind.BOOL
            elif word == "nil":
                kind = Kind.NIL
        self.emit(kind, start, end)
        return end

    def _quoted(self, pos: int, quote_char: str) -> int:
        end = pos + 1
        while True:
            if end >= len(self.text) or (quote_char != "`" and self.text[end] == "\n"):
                what = {"'": "character constant", '"': "quoted string", "`": "raw quoted string"}
                raise self.error(pos, f"unterminated {what[quote_char]}")
            ch = self.text[end]
            end += 1
            if ch == "\\" and quote_char != "`":
                if end >= len(self.text) or self.text[end] == "\n":
                    continue  # reported as unterminated on the next turn
                end += 1
            elif ch == quote_char:
                break
        kind = {"'": Kind.CHAR_CONSTANT, '"': Kind.STRING, "`": Kind.RAW_STRING}[quote_char]
        self.emit(kind, pos, end)
        return end

    def _number(self, pos: int) -> int:
        """A number, scanned as Go's lexNumber does; complex numbers (2i, 1+2i) are refused."""
        end, ok = self._scan_number(pos)
        if ok and self.text[end : end + 1] in ("+", "-"):  # Go reads on for a complex number
            end, ok = self._scan_number(end)
            ok = ok and self.text[end - 1] == "i"
        if not ok:
            raise self.error(pos, f"bad number syntax: {quote(self.text[pos:end])}")
        if self.text[end - 1] == "i":
            raise self.error(pos, f"complex numbers are not supported: {quote(self.text[pos:end])}")
        self.emit(Kind.NUMBER, pos, end)
        return end

    def _scan_number(self, pos: int) -> tuple[int, bool]:
        """Go's scanNumber: sign, 0x/0o/0b, digits and _, fraction, exponent, i; no letter after."""
        text, end = self.text, pos
        end += text[end : end + 1] in ("+", "-")
        digits, exponent = "0123456789_", "eE"
        if text[end : end + 1] == "0" and text[end + 1 : end + 2] in ("x", "X", "o", "O", "b", "B"):
            base = text[end + 1].lower()
            digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[base]
            exponent = "pP" if base == "x" else ""
            end += 2
        end = self._run(end, digits)
        if text[end : end + 1] == ".":
            end = self._run(end + 1, digits)
        if exponent and text[end : end + 1] in (exponent[0], exponent[1]):
            end += 1
            end += text[end : end + 1] in ("+", "-")
            end = self._run(end, "0123456789_")
        end += text[end : end + 1] == "i"
        if end < len(text) and is_alphanumeric(text[end]):
            return end + 1, False
        return end, True

    def _run(self, pos: int, chars: str) -> int:
        while pos < len(self.text) and self.text[pos] in chars:
            pos += 1
        return pos


def _unicode_name(ch: str) -> str:
    """Go's %#U: U+0041 'A'."""
    return f"U+{ord(ch):04X} '{ch}'"


def lex(text: str) -> list[Token]:
    return Lexer(text).run()
