"""Tokenizer, metadata and grammars through llama.cpp's C API (llama-cpp-python's bindings).

The vocabulary and the model's key/values are read-only once loaded, so these run
on any thread, beside the engine's decoding.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from typing import Any

import llama_cpp as L
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from services.worker.engines.base import InvalidJob


def tokenize(vocab: Any, text: str, *, add_special: bool) -> list[int]:
    """Token ids; special tokens written in the text are parsed as such, as Ollama does."""
    data = text.encode()
    capacity = len(data) + 8  # a token covers at least a byte; the rest is room for BOS/EOS
    for _ in range(2):  # a negative count is the size needed
        buffer = (L.llama_token * capacity)()
        n = L.llama_tokenize(vocab, data, len(data), buffer, capacity, add_special, True)
        if n >= 0:
            return list(buffer[:n])
        capacity = -n
    raise RuntimeError("tokenization failed")


def token_bytes(vocab: Any, token: int, *, special: bool = False) -> bytes:
    """The token's bytes: in output special tokens render as nothing; `special` writes them out."""
    capacity = 64
    for _ in range(2):
        buffer = ctypes.create_string_buffer(capacity)
        n = L.llama_token_to_piece(vocab, token, buffer, capacity, 0, special)
        if n >= 0:
            return buffer.raw[:n]
        capacity = -n
    raise RuntimeError(f"no text for token {token}")


def read_metadata(model: Any) -> dict[str, str]:
    """The GGUF key/values (arrays come back as llama.cpp's summaries), as Llama.metadata."""
    count = L.llama_model_meta_count(model)
    return {
        _meta_string(L.llama_model_meta_key_by_index, model, i): _meta_string(
            L.llama_model_meta_val_str_by_index, model, i
        )
        for i in range(count)
    }


def _meta_string(read: Callable[..., int], model: Any, index: int) -> str:
    capacity = 256
    while True:
        buffer = ctypes.create_string_buffer(capacity)
        n = read(model, index, buffer, capacity)
        if n < capacity:  # the full length, as snprintf returns it
            return buffer.raw[: max(n, 0)].decode("utf-8", errors="replace")
        capacity = n + 1


def grammar_for(format: str | dict[str, Any] | None) -> str | None:
    """GBNF for Ollama's `format`: "json" (any JSON object) or a JSON Schema."""
    if format is None:
        return None
    if format == "json":
        return JSON_GBNF
    if not isinstance(format, dict):
        raise InvalidJob(
            f'invalid format: {json.dumps(format)}; expected "json" or a valid JSON Schema object'
        )
    try:
        return str(json_schema_to_gbnf(json.dumps(format)))
    except (AssertionError, KeyError, ValueError, TypeError, RecursionError) as exc:
        raise InvalidJob(f"invalid JSON schema in format: {exc}") from exc
