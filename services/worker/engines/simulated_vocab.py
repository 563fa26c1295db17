"""The simulated engine's vocabulary: byte tokens, ChatML's and Llama 3's special tokens (as
the bundled SmolLM2 numbers them), the one word it writes, and its model metadata.

Ids below BYTE_BASE are SPECIAL_TOKENS, parsed as such where a text writes them; any other
byte is BYTE_BASE + its value; no start token is added (as SmolLM2). An embedding is
EMBEDDING_SIZE floats computed from the tokens. For scheduler tests and benchmarks only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
BYTE_BASE = 16  # the first byte token; ids below it are special tokens
WORD = BYTE_BASE + 256  # the one token the simulated model writes
WORD_TEXT = b" sim"
EMBEDDING_SIZE = 64
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
METADATA = {  # GGUF-style key/values the worker reads (a model without an Ollama template: ChatML)
    "general.architecture": "simulated",
    "general.name": "simulated",
    "tokenizer.ggml.model": "simulated",
    "tokenizer.ggml.bos_token_id": "1",
    "tokenizer.ggml.eos_token_id": "2",
    "tokenizer.ggml.add_bos_token": "false",
    "tokenizer.chat_template": CHAT_TEMPLATE,
}
_SPECIAL = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
_SPECIAL_IDS = {text: token for token, text in enumerate(SPECIAL_TOKENS)}


def tokenize(text: str) -> list[int]:
    """Byte tokens, with the special tokens written in `text` as their own ids."""
    tokens: list[int] = []
    position = 0
    for match in _SPECIAL.finditer(text):
        tokens += [BYTE_BASE + b for b in text[position : match.start()].encode()]
        tokens.append(_SPECIAL_IDS[match.group()])
        position = match.end()
    return tokens + [BYTE_BASE + b for b in text[position:].encode()]


def token_bytes(token: int) -> bytes:
    """What a token writes in output: special tokens (and unknown ids) write nothing."""
    if token == WORD:
        return WORD_TEXT
    if BYTE_BASE <= token < WORD:
        return bytes((token - BYTE_BASE,))
    return b""


def special_text(token: int) -> str:
    if 0 <= token < len(SPECIAL_TOKENS):
        return SPECIAL_TOKENS[token]
    return token_bytes(token).decode("utf-8", errors="replace")


def embedding(tokens: Sequence[int]) -> list[float]:
    """The same tokens, the same vector; unnormalised, as the real engine's."""
    return [sum(math.sin((t + 1) * (i + 1)) for t in tokens) / len(tokens) for i in range(EMBEDDING_SIZE)]
