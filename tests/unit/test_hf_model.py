"""A Hugging Face model directory as the exllama engines read it: token bytes from tokenizer.json,
end tokens, the metadata the prompt rules use, and the directory of links to the blobs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from services.worker.engines.base import EngineError
from services.worker.engines.hf_model import (
    HfVocab,
    chat_template,
    link_directory,
    metadata,
    remove_directory,
    stop_tokens,
    token_table,
)

BYTE_LEVEL = {  # GPT-2 style (Llama 3, Qwen, SmolLM2): Ġ stands for a space, bytes as characters
    "model": {"type": "BPE", "vocab": {"Hello": 0, "Ġworld": 1, "Ã©": 2, "Ã": 3, "©": 4}},
    "decoder": {"type": "ByteLevel"},
    "added_tokens": [
        {"id": 5, "content": "<|im_end|>", "special": True},
        {"id": 6, "content": "<tool_call>", "special": False},
    ],
}
SENTENCEPIECE = {  # Llama 2 / Mistral style: ▁ for a space, <0xNN> byte fallback
    "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "▁Hello": 2, "<0xC3>": 3, "<0xA9>": 4}},
    "decoder": {
        "type": "Sequence",
        "decoders": [{"type": "Replace"}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip"}],
    },
    "added_tokens": [
        {"id": 0, "content": "<s>", "special": True},
        {"id": 1, "content": "</s>", "special": True},
    ],
}


@pytest.mark.parametrize(
    ("tokenizer", "token", "output", "written"),
    [
        pytest.param(BYTE_LEVEL, 1, b" world", " world", id="byte-level-space"),
        pytest.param(BYTE_LEVEL, 2, "é".encode(), "é", id="byte-level-two-bytes"),
        pytest.param(BYTE_LEVEL, 3, b"\xc3", "\ufffd", id="byte-level-half-a-character"),
        pytest.param(BYTE_LEVEL, 5, b"", "<|im_end|>", id="special-token-outputs-nothing"),
        pytest.param(BYTE_LEVEL, 6, b"<tool_call>", "<tool_call>", id="added-token-is-text"),
        pytest.param(SENTENCEPIECE, 2, b" Hello", " Hello", id="sentencepiece-space"),
        pytest.param(SENTENCEPIECE, 3, b"\xc3", "\ufffd", id="sentencepiece-byte-fallback"),
        pytest.param(SENTENCEPIECE, 1, b"", "</s>", id="sentencepiece-special"),
        pytest.param(SENTENCEPIECE, 99, b"", "", id="beyond-the-vocabulary"),
    ],
)
def test_token_bytes(tokenizer: dict[str, Any], token: int, output: bytes, written: str) -> None:
    table = token_table(tokenizer)
    assert table.token_bytes(token) == output
    assert table.special_text(token) == written


def test_a_character_split_over_two_tokens_is_whole_again() -> None:
    table = token_table(SENTENCEPIECE)
    assert (table.token_bytes(3) + table.token_bytes(4)).decode() == "é"


def test_every_end_token_stops_a_job() -> None:
    table = token_table(BYTE_LEVEL)
    ends = stop_tokens(
        {"eos_token_id": 1}, {"eos_token_id": [1, 7]}, {"eos_token": {"content": "<|im_end|>"}}, table
    )
    assert ends == {1, 5, 7}


def test_metadata_for_the_prompt_rules() -> None:
    table = token_table(SENTENCEPIECE)
    values = metadata({"model_type": "llama", "bos_token_id": 0}, {"eos_token": "</s>"}, "{{ x }}", table)
    assert values == {
        "general.architecture": "llama",
        "tokenizer.chat_template": "{{ x }}",
        "tokenizer.ggml.bos_token_id": "0",
        "tokenizer.ggml.eos_token_id": "1",
    }


def test_the_chat_template_file_wins_then_the_default_of_a_list(tmp_path: Path) -> None:
    listed = {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
    assert chat_template({}, listed) == "D"
    assert chat_template({}, {"chat_template": "S"}) == "S"
    jinja = tmp_path / "blob"
    jinja.write_text("J")
    assert chat_template({"chat_template.jinja": jinja}, listed) == "J"
    assert chat_template({}, {}) is None


def test_the_model_directory_links_each_blob_under_its_name(tmp_path: Path) -> None:
    blobs = {}
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        blobs[name] = tmp_path / f"sha256-{len(blobs)}"
        blobs[name].write_text(name)
    directory = link_directory(blobs)
    try:
        assert sorted(p.name for p in directory.iterdir()) == sorted(blobs)
        assert (directory / "model.safetensors").read_text() == "model.safetensors"
    finally:
        remove_directory(directory)
    assert not directory.exists() and all(path.exists() for path in blobs.values())


def test_a_directory_without_its_tokenizer_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("{}")
    with pytest.raises(EngineError, match=r"tokenizer\.json"):
        link_directory({"config.json": tmp_path / "c"})


@pytest.mark.skipif(importlib.util.find_spec("tokenizers") is not None, reason="tokenizers is installed here")
def test_without_the_tokenizers_library_a_load_fails_clearly(tmp_path: Path) -> None:
    files = {}
    for name, content in (("config.json", {}), ("tokenizer.json", BYTE_LEVEL)):
        files[name] = tmp_path / name
        files[name].write_text(json.dumps(content))
    with pytest.raises(EngineError, match=r"tokenizer\.json"):
        HfVocab(files)
