"""What a model can do, read off its GGUF metadata and its template, as Ollama reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.registry.bundled import BUNDLED_NAME, BUNDLED_TEMPLATE, bundled_gguf, install_bundled
from services.registry.capabilities import capabilities
from services.registry.describe import resolve
from services.registry.gguf_metadata import NotGguf, SkippedArray, read_metadata
from services.registry.store import ModelStore

JINJA = "tokenizer.chat_template"
LLAMA = {"general.architecture": "llama", "llama.context_length": 8192}
THINKING = (
    "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}{{ end }}"
)


@pytest.mark.parametrize(
    ("metadata", "template", "projector", "expected"),
    [
        (LLAMA, None, False, ["completion"]),
        ({**LLAMA, "bert.pooling_type": 1}, None, False, ["embedding"]),
        ({**LLAMA, "llama.vision.block_count": 32}, None, False, ["completion", "vision"]),
        (LLAMA, None, True, ["completion", "vision"]),
        (LLAMA, "{{ .Prompt }}", False, ["completion"]),
        (LLAMA, "{{ if .Tools }}{{ .Tools }}{{ end }}{{ .Prompt }}", False, ["completion", "tools"]),
        (LLAMA, "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>", False, ["completion", "insert"]),
        (LLAMA, THINKING, False, ["completion", "thinking"]),
        (LLAMA, "{{ .Broken", False, ["completion"]),
        ({**LLAMA, JINJA: "{% if tools %}{% endif %}"}, None, False, ["completion", "tools"]),
        ({**LLAMA, JINJA: "<think>{{ x }}"}, None, False, ["completion", "thinking"]),
    ],
    ids=[
        "plain", "embedding", "vision-tower", "projector", "prompt-template", "tools", "insert", "thinking",
        "unparsable-template", "jinja-tools", "jinja-thinking",
    ],
)  # fmt: skip
def test_capabilities(
    metadata: dict[str, Any], template: str | None, projector: bool, expected: list[str]
) -> None:
    assert capabilities(metadata, template, projector) == expected


def test_gguf_metadata_skips_long_arrays() -> None:
    path = bundled_gguf()
    assert path is not None
    metadata = read_metadata(path)
    assert metadata["general.architecture"] == "llama" and metadata["llama.context_length"] == 8192
    assert metadata["tokenizer.ggml.tokens"] == SkippedArray(49152)
    assert "im_start" in metadata["tokenizer.chat_template"]


def test_not_a_gguf(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"nope")
    with pytest.raises(NotGguf):
        read_metadata(tmp_path / "x")


def test_the_bundled_model_resolves_with_its_template_and_capabilities(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    install_bundled(store)
    model = resolve(store, BUNDLED_NAME).model
    assert model is not None
    assert model.full_name == "registry.ollama.ai/library/smollm2:135m"
    assert model.template == BUNDLED_TEMPLATE and model.system
    assert model.capabilities == ["completion", "tools"]
