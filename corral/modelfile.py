"""Ollama's Modelfile (parser/parser.go): parsing, printing, and the /api/create body it makes.

`parse` is Go's ParseFile rune for rune, `Command.__str__` and `format_modelfile` its
printing, `format_parameters` api.FormatParams, and `create_request` Modelfile.CreateRequest
followed by what `ollama create` does to the request before sending it: each local file is
named relative to the files' common directory (or by its base name) and listed in `uploads`
to be sent as a blob first. Errors are `ModelfileError` with Ollama's own text; reading
local files may also raise OSError.
"""

from __future__ import annotations

import codecs
import enum
import glob
import hashlib
import math
import os
import pwd
import re
import stat
import struct
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.protocol import option_type

COMMANDS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)
MESSAGE_ROLES = ("system", "user", "assistant")
# The commands Command.__str__ writes as NAME "value".
_QUOTED_COMMANDS = ("license", "template", "system", "adapter", "renderer", "parser", "requires", "draft")
DEPRECATED_PARAMETERS = frozenset(
    {
        "penalize_newline",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mlock",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
    }
)

INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
INVALID_MESSAGE_ROLE = 'message role must be one of "system", "user", or "assistant"'
MISSING_FROM = "no FROM line"
UNEXPECTED_EOF = "unexpected EOF"
MODEL_NOT_FOUND = "no Modelfile or safetensors files found"
INVALID_REQUIRES = "requires must be a valid semver (e.g. 0.14.0)"

# Go's unicode.IsSpace, which strings.TrimSpace trims (str.strip() would also trim \x1c-\x1f).
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
_GO_SPACE += "\u2028\u2029\u202f\u205f\u3000"

_CHUNK = 1 << 20  # bytes hashed at a time


class ModelfileError(ValueError):
    """A Modelfile Ollama would refuse; str() is Ollama's message."""


@dataclass(frozen=True)
class Command:
    """One Modelfile instruction: `name` is the lower-case command ("model" for FROM) or, for
    PARAMETER, the parameter's name as written; `args` its value ("role: content" for MESSAGE)."""

    name: str
    args: str

    def __str__(self) -> str:
        """The instruction as Go's Command.String writes it."""
        if self.name == "model":
            return f"FROM {self.args}"
        if self.name in _QUOTED_COMMANDS:
            return f"{self.name.upper()} {_quote(self.args)}"
        if self.name == "message":
            role, _, content = self.args.partition(": ")
            return f"MESSAGE {role} {_quote(content)}"
        return f"PARAMETER {self.name} {_quote(self.args)}"


def format_modelfile(commands: Sequence[Command]) -> str:
    """The commands as a Modelfile, one per line (Go's Modelfile.String)."""
    return "".join(f"{command}\n" for command in commands)


def _quote(text: str) -> str:
    if "\n" in text or text.startswith(" ") or text.endswith(" "):
        return f'"""{text}"""' if '"' in text else f'"{text}"'
    return text


def _unquote(text: str) -> str | None:
    """The text inside `"…"` or `\"\"\"…\"\"\"`, the text itself when unquoted, or None while a
    quote is still open."""
    if text.startswith('"""'):
        return text[3:-3] if len(text) >= 6 and text.endswith('"""') else None
    if text.startswith('"'):
        return text[1:-1] if len(text) >= 2 and text.endswith('"') else None
    return text


def decode_modelfile(data: bytes) -> str:
    """A Modelfile's text: UTF-16 when it starts with a UTF-16 byte order mark, else UTF-8
    (Go's BOMOverride); invalid bytes become U+FFFD and the mark stays, for `parse` to drop."""
    if data.startswith(codecs.BOM_UTF16_LE):
        return data.decode("utf-16-le", "replace")
    if data.startswith(codecs.BOM_UTF16_BE):
        return data.decode("utf-16-be", "replace")
    return data.decode("utf-8", "replace")


def parse(text: str) -> list[Command]:
    """The commands of a Modelfile, as Go's ParseFile reads them (a leading byte order mark
    dropped)."""
    parser = _Parser()
    for char in text.removeprefix("\ufeff"):
        parser.feed(char)
    return parser.finish()


class _State(enum.Enum):
    NIL = enum.auto()
    NAME = enum.auto()
    VALUE = enum.auto()
    PARAMETER = enum.auto()
    MESSAGE = enum.auto()
    COMMENT = enum.auto()


def _is_alpha(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _is_space(char: str) -> bool:
    return char in (" ", "\t")


def _is_newline(char: str) -> bool:
    return char in ("\r", "\n")


def _is_print(char: str) -> bool:
    """Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    return char.isprintable()


class _Parser:
    """Go's ParseFile loop: the state, the text gathered in it, the line, and the command
    being built (its name and, for MESSAGE, its role)."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.state = _State.NIL
        self.buffer: list[str] = []
        self.line = 1
        self.name = ""
        self.role = ""

    def feed(self, char: str) -> None:
        if _is_newline(char):
            self.line += 1
        next_state, char = self._step(char)
        if next_state is not self.state:
            if self.state is _State.VALUE:
                # Go unquotes before testing for a space; only the outcome at a newline matters.
                value = None if _is_space(char) else _unquote(self._text().strip(_GO_SPACE))
                if value is None:
                    self.buffer.append(char)
                    return
                self._emit(value)
            else:
                next_state = self._leave(next_state)
            self.buffer.clear()
            self.state = next_state
        if char and _is_print(char):
            self.buffer.append(char)

    def finish(self) -> list[Command]:
        """The commands once the text has ended: an open value or command is an error."""
        if self.state is _State.VALUE:
            value = _unquote(self._text().strip(_GO_SPACE))
            if value is None:
                raise ModelfileError(UNEXPECTED_EOF)
            self._emit(value)
        elif self.state not in (_State.NIL, _State.COMMENT):
            raise ModelfileError(UNEXPECTED_EOF)
        if not any(command.name == "model" for command in self.commands):
            raise ModelfileError(MISSING_FROM)
        return self.commands

    def _text(self) -> str:
        return "".join(self.buffer)

    def _error(self, message: str) -> ModelfileError:
        return ModelfileError(f"(line {self.line}): {message}")

    def _unexpected_eof(self) -> ModelfileError:
        return ModelfileError(f"{UNEXPECTED_EOF}: {self._text()}")

    def _step(self, char: str) -> tuple[_State, str]:
        """Go's parseRuneForState: the next state and the character to keep ("" for none)."""
        state = self.state
        if state is _State.NIL:
            if char == "#":
                return _State.COMMENT, ""
            if _is_space(char) or _is_newline(char):
                return _State.NIL, ""
            return _State.NAME, char
        if state is _State.VALUE:
            return (_State.NIL if _is_newline(char) or _is_space(char) else _State.VALUE), char
        if state is _State.COMMENT:
            return (_State.NIL if _is_newline(char) else _State.COMMENT), ""
        if _is_space(char):
            return _State.VALUE, ""
        if _is_alpha(char) or (state is _State.PARAMETER and (_is_digit(char) or char == "_")):
            return state, char
        if state is _State.NAME:
            raise self._error(INVALID_COMMAND)
        raise self._unexpected_eof()

    def _leave(self, next_state: _State) -> _State:
        """Finish the state being left; the state to go to, which the command name may change."""
        text = self._text()
        if self.state is _State.NAME:
            command = text.lower()
            if command not in COMMANDS:
                raise self._error(INVALID_COMMAND)
            if command == "parameter":
                return _State.PARAMETER
            self.name = "model" if command == "from" else command
            return _State.MESSAGE if command == "message" else next_state
        if self.state is _State.PARAMETER:
            self.name = text
        elif self.state is _State.MESSAGE:
            if text not in MESSAGE_ROLES:
                raise self._error(INVALID_MESSAGE_ROLE)
            self.role = text
        return next_state

    def _emit(self, value: str) -> None:
        if self.role:
            value = f"{self.role}: {value}"
            self.role = ""
        self.commands.append(Command(self.name, value))


# --- parameters (api.FormatParams) ---

# Go's float syntax: underscores may separate digits (and follow a 0x prefix).
_DIGITS = r"[0-9]+(?:_[0-9]+)*"
_HEX_DIGITS = r"[0-9a-fA-F]+(?:_[0-9a-fA-F]+)*"
_DECIMAL = re.compile(rf"[+-]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:[eE][+-]?{_DIGITS})?")
_HEX = re.compile(
    rf"[+-]?0[xX](?:_?{_HEX_DIGITS}(?:\.(?:{_HEX_DIGITS})?)?|\.{_HEX_DIGITS})[pP][+-]?{_DIGITS}"
)
_INT = re.compile(r"[+-]?[0-9]+")
_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def _to_float32(value: float) -> float | None:
    """`value` rounded to the nearest float32, or None when that is not finite."""
    try:
        single: float = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return None
    return single if math.isfinite(single) else None


def _parse_float32(text: str) -> float:
    """Go's strconv.ParseFloat(text, 32), finite values only, given the shortest decimal that
    reads back as the same float32 (what encoding/json writes for a float32)."""
    try:
        if _DECIMAL.fullmatch(text):
            value: float | None = float(text)
        elif _HEX.fullmatch(text):
            value = float.fromhex(text.replace("_", ""))
        else:
            value = None
    except OverflowError:  # a hexadecimal beyond any float
        value = None
    single = None if value is None else _to_float32(value)
    if single is None:
        raise ValueError(text)
    for digits in range(1, 9):
        shortest = float(f"{single:.{digits}g}")
        if _to_float32(shortest) == single:
            return shortest
    return float(f"{single:.9g}")


def _parse_int64(text: str) -> int:
    """Go's strconv.ParseInt(text, 10, 64)."""
    value = int(text) if _INT.fullmatch(text) else None
    if value is None or not -(1 << 63) <= value < 1 << 63:
        raise ValueError(text)
    return value


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool."""
    if text not in _BOOLS:
        raise ValueError(text)
    return _BOOLS[text]


_SCALARS: dict[type, tuple[str, Callable[[str], Any]]] = {
    float: ("float", _parse_float32),
    int: ("int", _parse_int64),
    bool: ("bool", parse_bool),
}


def format_parameters(params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Parameter values typed as Ollama's options are (api.FormatParams): the first value of
    each scalar option, all values of a list option."""
    out: dict[str, Any] = {}
    for key, values in params.items():
        kind = option_type(key)
        if kind is None:
            raise ModelfileError(f"unknown parameter '{key}'")
        if kind is list:
            out[key] = list(values)
            continue
        if kind not in _SCALARS:
            raise ModelfileError(f"unknown type {kind.__name__} for {key}")
        label, convert = _SCALARS[kind]
        try:
            out[key] = convert(values[0])
        except ValueError as exc:
            # Go formats the []string: [a b]
            raise ModelfileError(f"invalid {label} value [{' '.join(values)}]") from exc
    return out


# --- the create request (Modelfile.CreateRequest and the CLI's CreateHandler) ---


@dataclass
class CreateBody:
    """What `create` sends: the /api/create JSON without `model` (only the fields set), the
    local files to upload as blobs before posting it (digest -> path), and warnings to show."""

    body: dict[str, Any]
    uploads: dict[str, Path]
    warnings: list[str]


@dataclass
class _Request:
    """Go's api.CreateRequest as CreateRequest fills it: file digests keyed by local path, and
    the local paths FROM and DRAFT used so far."""

    source: str = ""
    files: dict[str, str] = field(default_factory=dict)
    draft_files: dict[str, str] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)
    template: str = ""
    licenses: list[str] = field(default_factory=list)
    system: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    warnings: list[str] = field(default_factory=list)
    model_paths: list[str] = field(default_factory=list)
    draft_paths: list[str] = field(default_factory=list)


def create_request(commands: Sequence[Command], relative_dir: Path) -> CreateBody:
    """The create request for these commands, local paths read relative to `relative_dir`
    (the Modelfile's directory)."""
    request = _Request()
    for command in commands:
        _apply(request, command, str(relative_dir))
    return _body(request)


def _apply(request: _Request, command: Command, relative_dir: str) -> None:
    args = command.args
    match command.name:
        case "model":
            _add_model(request, args, relative_dir)
        case "draft":
            path = _expand_path(args, relative_dir)
            digests = _file_digest_map(path)
            _reject_same_path("DRAFT", path, request.model_paths)
            request.draft_paths.append(path)
            request.draft_files.update(digests)
        case "adapter":
            request.adapters = _file_digest_map(_expand_path(args, relative_dir))
        case "template":
            request.template = args
        case "system":
            request.system = args
        case "license":
            request.licenses.append(args)
        case "renderer":
            request.renderer = args
        case "parser":
            request.parser = args
        case "requires":
            request.requires = _requires(args)
        case "message":
            role, _, content = args.partition(": ")
            request.messages.append({"role": role, "content": content})
        case name if name in DEPRECATED_PARAMETERS:
            request.warnings.append(f"parameter {name} is deprecated")
        case name:
            _add_parameter(request.parameters, name, args)


def _add_model(request: _Request, args: str, relative_dir: str) -> None:
    """FROM: a local file or model directory when the path exists, else a model's name."""
    path = _expand_path(args, relative_dir)
    try:
        digests = _file_digest_map(path)
    except FileNotFoundError:
        request.source = args
        return
    _reject_same_path("DRAFT", path, request.draft_paths)
    request.model_paths.append(path)
    request.files.update(digests)


def _add_parameter(parameters: dict[str, Any], name: str, value: str) -> None:
    """One PARAMETER line: list values (stop) accumulate, others replace."""
    for key, typed in format_parameters({name: [value]}).items():
        if isinstance(parameters.get(key), list):
            parameters[key] += typed
        else:
            parameters[key] = typed


_NUMBER = r"(?:0|[1-9][0-9]*)"
_PRERELEASE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
_SEMVER = re.compile(
    rf"v{_NUMBER}(?:\.{_NUMBER}(?:\.{_NUMBER}"
    rf"(?:-{_PRERELEASE_ID}(?:\.{_PRERELEASE_ID})*)?(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?)?)?"
)


def _requires(args: str) -> str:
    """REQUIRES: a version golang.org/x/mod/semver accepts (v1 and v1.2 included), without its v."""
    version = args if args.startswith("v") else f"v{args}"
    if not _SEMVER.fullmatch(version):
        raise ModelfileError(INVALID_REQUIRES)
    return version.removeprefix("v")


def _body(request: _Request) -> CreateBody:
    """The JSON fields Go would send (omitempty), files named as the CLI names them."""
    uploads: dict[str, Path] = {}
    fields: dict[str, Any] = {"from": request.source}
    for key, files in (
        ("files", request.files),
        ("draft_files", request.draft_files),
        ("adapters", request.adapters),
    ):
        fields[key] = _request_file_names(files)
        uploads.update({digest: Path(path) for path, digest in files.items()})
    fields |= {
        "template": request.template,
        "license": request.licenses,
        "system": request.system,
        "parameters": request.parameters,
        "messages": request.messages,
        "renderer": request.renderer,
        "parser": request.parser,
        "requires": request.requires,
    }
    body = {key: value for key, value in fields.items() if value}
    return CreateBody(body=body, uploads=uploads, warnings=request.warnings)


def _request_file_names(files: Mapping[str, str]) -> dict[str, str]:
    """The CLI's createRequestFileNames: {name: digest}, each file named relative to the
    deepest directory holding them all, or by its base name when it is alone."""
    if len(files) < 2:
        return {os.path.basename(path): digest for path, digest in files.items()}
    root = os.path.commonpath([os.path.dirname(path) for path in files])
    return {os.path.relpath(path, root): digest for path, digest in files.items()}


# --- local files (expandPath, fileDigestMap, filesForModel) ---


def _expand_path(path: str, relative_dir: str) -> str:
    """Go's expandPath: absolute as is, `~` and `~user` from home directories, else relative
    to `relative_dir`; always absolute and clean."""
    if path.startswith(("/", "\\")):
        return os.path.abspath(path)
    if path == "~" or path.startswith("~/"):
        return os.path.abspath(os.path.expanduser("~") + "/" + path[1:])
    if path.startswith("~"):
        user, _, rest = path[1:].partition("/")
        try:
            home = pwd.getpwnam(user).pw_dir
        except KeyError:
            raise ModelfileError(f"failed to find user '{user}': user: unknown user {user}") from None
        return os.path.abspath(f"{home}/{rest}")
    return os.path.abspath(os.path.join(relative_dir, path))


def _reject_same_path(name: str, path: str, existing: Sequence[str]) -> None:
    """A DRAFT may not be the FROM file or directory (symbolic links resolved)."""
    for candidate in existing:
        if os.path.realpath(path, strict=True) == os.path.realpath(candidate, strict=True):
            raise ModelfileError(f"{name} must not reference the same local path as FROM: {path}")


def _file_digest_map(path: str) -> dict[str, str]:
    """{local path: "sha256:<hex>"} for a file, or for a model directory's files (each
    resolved, and refused when it resolves outside the directory)."""
    if stat.S_ISDIR(os.stat(path).st_mode):
        files = [_inside(path, found) for found in _files_for_model(path)]
    else:
        files = [path]
    with ThreadPoolExecutor(max_workers=max((os.cpu_count() or 1) - 1, 1)) as pool:
        return dict(zip(files, pool.map(_digest, files), strict=True))


def _inside(directory: str, path: str) -> str:
    resolved = os.path.realpath(path, strict=True)
    relative = os.path.relpath(resolved, directory)
    if relative == ".." or relative.startswith("../"):
        if ".cache" in relative:
            hint = "Use --local-dir <dir> when downloading model to disable caching"
            raise ModelfileError(f"insecure path: {relative}\n\n{hint}")
        raise ModelfileError(f"insecure path: {relative}")
    return resolved


def _digest(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


# filesForModel's weight files: the first pattern with matches of the right kind wins.
_WEIGHTS = (
    ("model*.safetensors", ""),
    ("consolidated*.safetensors", ""),
    ("output*.safetensors", ""),  # corral's addition: exllamav2's EXL2 directories name their shards so
    ("pytorch_model*.bin", "application/zip"),
    ("consolidated*.pth", "application/zip"),
    ("*.gguf", "application/octet-stream"),
    ("*.bin", "application/octet-stream"),
)


def _files_for_model(directory: str) -> list[str]:
    """Go's filesForModel: the weights, then the configuration and tokenizer files."""
    files = _weights(directory)
    # Go's filepath.Glob reads the `**/*.json` it is given as `*/*.json`.
    for pattern in ("*.json", "*/*.json", "chat_template.jinja"):
        files += _glob(directory, pattern, "text/plain")
    return files + _tokenizer(directory)


def _weights(directory: str) -> list[str]:
    for pattern, content_type in _WEIGHTS:
        found = _glob_or_none(directory, pattern, content_type)
        if found:
            if pattern == "model*.safetensors":  # sentence-transformers modules: 2_Dense/…
                found += _glob(directory, "*/model*.safetensors", "")
            return found
    raise ModelfileError(MODEL_NOT_FOUND)


def _tokenizer(directory: str) -> list[str]:
    """tokenizer.model when it is binary, else one a level down when it is text (as Go has it)."""
    binary = _glob_or_none(directory, "tokenizer.model", "application/octet-stream")
    return binary or _glob_or_none(directory, "*/tokenizer.model", "text/plain") or []


def _glob_or_none(directory: str, pattern: str, content_type: str) -> list[str] | None:
    """The matches, or None where Go ignores the glob's error."""
    try:
        return _glob(directory, pattern, content_type)
    except (ModelfileError, OSError):
        return None


def _glob(directory: str, pattern: str, content_type: str) -> list[str]:
    """Go's filepath.Glob (`*` matches dot files too), each match sniffed: one of another
    content type is an error (whose text names the type found, as Go's does)."""
    matches = sorted(glob.glob(os.path.join(directory, pattern), include_hidden=True))
    for match in matches:
        found = _content_type(match)
        if content_type and found != content_type:
            raise ModelfileError(f"invalid content type: expected {found} for {match}")
    return matches


# http.DetectContentType's test for binary data (a byte no text has).
_BINARY_BYTES = frozenset([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])


def _content_type(path: str) -> str:
    """The part of Go's http.DetectContentType these globs rely on, for a file's first 512
    bytes: zip archives, UTF-16 text (by its byte order mark), else text unless binary."""
    with open(path, "rb") as file:
        head = file.read(512)
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if head.startswith((codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE)):
        return "text/plain"
    return "application/octet-stream" if _BINARY_BYTES.intersection(head) else "text/plain"
