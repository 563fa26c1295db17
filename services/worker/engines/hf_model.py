"""A model directory in the Hugging Face layout, as the exllama engines need it: its files laid
out under their names, what the worker reads of it (chat template, start and end tokens), and
its vocabulary as token ids and bytes.

Tokenizing goes through the `tokenizers` library (what both exllama libraries use underneath, on
the same tokenizer.json) rather than a library's tokenizer object: the worker tokenizes on its
event loop while the generator runs on its own thread, and a `tokenizers.Tokenizer` may be used
from any thread. The bytes of each token come from tokenizer.json itself (byte-level BPE's
character map, or SentencePiece's ▁ and <0xNN> pieces), since both libraries give pieces as
text, which loses a token that ends inside a UTF-8 character.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from services.worker.engines.base import EngineError

REQUIRED = ("config.json", "tokenizer.json")  # exllamav2 0.3.1 dropped SentencePiece: tokenizer.json
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def link_directory(files: Mapping[str, Path]) -> Path:
    """A new private directory holding a link to each file under its name: the model directory
    the libraries open (ExLlamaV2Config(dir), exllamav3's Config.from_directory(dir)). Removed
    with `remove_directory` at unload; the blobs stay where they are."""
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise EngineError(f"the model's files lack {', '.join(missing)}")
    directory = Path(tempfile.mkdtemp(prefix="corral-model-"))
    for name, path in files.items():
        os.symlink(path, directory / Path(name).name)  # the wire allows plain names only
    return directory


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def read_json(files: Mapping[str, Path], name: str) -> dict[str, Any]:
    """A JSON file of the model, {} when it is absent or not an object."""
    path = files.get(name)
    if path is None:
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"the model's {name} cannot be read: {exc}") from exc
    return value if isinstance(value, dict) else {}


def chat_template(files: Mapping[str, Path], tokenizer_config: Mapping[str, Any]) -> str | None:
    """chat_template.jinja, else tokenizer_config.json's chat_template (a list's "default" or first)."""
    if "chat_template.jinja" in files:
        try:
            return files["chat_template.jinja"].read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EngineError(f"the model's chat_template.jinja cannot be read: {exc}") from exc
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default", next(iter(named.values()), None))
    return template if isinstance(template, str) else None


@dataclass(frozen=True)
class TokenTable:
    """Each token id's output bytes (special tokens: none) and written form."""

    pieces: tuple[bytes, ...]
    special: frozenset[int]
    written: Mapping[int, str]  # added tokens as written ("<|im_end|>")
    ids: Mapping[str, int]  # piece or added token content -> id

    def token_bytes(self, token: int) -> bytes:
        if token in self.special or not 0 <= token < len(self.pieces):
            return b""
        return self.pieces[token]

    def special_text(self, token: int) -> str:
        if token in self.written:
            return self.written[token]
        return self.token_bytes(token).decode("utf-8", errors="replace")


def token_table(tokenizer_json: Mapping[str, Any]) -> TokenTable:
    """The table of a tokenizer.json: its model's vocabulary (BPE/WordPiece map or Unigram list)
    decoded as its decoder says, then its added tokens."""
    model = tokenizer_json.get("model") or {}
    vocab = model.get("vocab") or {}
    if isinstance(vocab, list):  # Unigram: [[piece, score], ...] in id order
        vocab = {entry[0]: i for i, entry in enumerate(vocab)}
    byte_level = "ByteLevel" in _decoder_types(tokenizer_json.get("decoder"))
    added = [a for a in tokenizer_json.get("added_tokens") or [] if isinstance(a, dict)]
    size = max([*vocab.values(), *(int(a["id"]) for a in added)], default=-1) + 1
    pieces = [b""] * size
    for piece, index in vocab.items():
        pieces[index] = _byte_level(piece) if byte_level else _sentencepiece(piece)
    written = {int(a["id"]): str(a["content"]) for a in added}
    for a in added:
        pieces[int(a["id"])] = str(a["content"]).encode()
    return TokenTable(
        pieces=tuple(pieces),
        special=frozenset(int(a["id"]) for a in added if a.get("special")),
        written=written,
        ids={**vocab, **{content: index for index, content in written.items()}},
    )


def token_id(table: TokenTable, token: object) -> int | None:
    """A tokenizer_config.json token entry ("<s>" or {"content": "<s>", ...}) as an id."""
    if isinstance(token, dict):
        token = token.get("content")
    return table.ids.get(token) if isinstance(token, str) else None


def stop_tokens(
    config: Mapping[str, Any],
    generation_config: Mapping[str, Any],
    tokenizer_config: Mapping[str, Any],
    table: TokenTable,
) -> frozenset[int]:
    """Every end-of-generation id: config.json's and generation_config.json's eos_token_id (one
    or a list) and tokenizer_config.json's eos_token, as TabbyAPI gathers them (exllamav2 keeps
    only the first of a list)."""
    found: set[int] = set()
    for source in (config, generation_config):
        value = source.get("eos_token_id")
        found.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    eos = token_id(table, tokenizer_config.get("eos_token"))
    if eos is not None:
        found.add(eos)
    return frozenset(found)


def metadata(
    config: Mapping[str, Any], tokenizer_config: Mapping[str, Any], template: str | None, table: TokenTable
) -> dict[str, str]:
    """What the worker's prompt rules read of a model, under the GGUF keys they use."""
    values = {"general.architecture": str(config.get("model_type", ""))}
    if template is not None:
        values["tokenizer.chat_template"] = template
    for kind in ("bos", "eos"):
        token: object = token_id(table, tokenizer_config.get(f"{kind}_token"))
        if token is None:
            fallback = config.get(f"{kind}_token_id")
            token = fallback[0] if isinstance(fallback, list) and fallback else fallback
        if isinstance(token, int):
            values[f"tokenizer.ggml.{kind}_token_id"] = str(token)
    return values


class HfVocab:
    """Tokenizer and detokenizer of a model directory; any thread may use it."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.config = read_json(files, "config.json")
        self.tokenizer_config = read_json(files, "tokenizer_config.json")
        self.generation_config = read_json(files, "generation_config.json")
        self.table = token_table(read_json(files, "tokenizer.json"))
        template = chat_template(files, self.tokenizer_config)
        self.metadata = metadata(self.config, self.tokenizer_config, template, self.table)
        self.stop_tokens = stop_tokens(self.config, self.generation_config, self.tokenizer_config, self.table)
        try:
            tokenizers: Any = importlib.import_module("tokenizers")
            self._tokenizer: Any = tokenizers.Tokenizer.from_file(str(files["tokenizer.json"]))
        except Exception as exc:  # ImportError, OSError, or the Rust side's plain Exception
            raise EngineError(f"cannot read the model's tokenizer.json: {exc}") from exc
        self._tokenizer.no_truncation()

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        """Special tokens written in the text are parsed as such (tokenizers matches added tokens
        always); `add_special` adds what the tokenizer's post-processor adds (a start token where
        the model wants one), as llama.cpp's add_special does for a GGUF."""
        return list(self._tokenizer.encode(text, add_special_tokens=add_special).ids)

    def token_bytes(self, token: int) -> bytes:
        return self.table.token_bytes(token)

    def special_text(self, token: int) -> str:
        return self.table.special_text(token)


def _decoder_types(decoder: object) -> set[str]:
    if not isinstance(decoder, dict):
        return set()
    found = {str(decoder.get("type"))}
    for inner in decoder.get("decoders") or []:
        found |= _decoder_types(inner)
    return found


@cache
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: each printable stand-in character to its byte."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(kept)
    extra = 0
    for byte in range(256):
        if byte not in kept:
            kept.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(kept, chars, strict=True)}


def _byte_level(piece: str) -> bytes:
    table = _unicode_to_byte()
    if all(char in table for char in piece):
        return bytes(table[char] for char in piece)
    return piece.encode()


def _sentencepiece(piece: str) -> bytes:
    match = _BYTE_PIECE.fullmatch(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    return piece.replace("▁", " ").encode()
