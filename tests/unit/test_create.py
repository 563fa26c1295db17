"""Creating models in the store: layers from a model or from GGUF blobs, text layers on top."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.protocol import ChatMessage, CreateModelRequest, Progress
from services.registry.bundled import BUNDLED_NAME, install_bundled
from services.registry.create import CreateError, create, human_number
from services.registry.describe import resolve, show
from services.registry.names import parse_name
from services.registry.store import ModelStore


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path)
    assert install_bundled(store) is not None
    return store


def statuses_of(store: ModelStore, request: CreateModelRequest) -> list[str]:
    """Create as the registry does (pruning), and the statuses it reported."""
    reported: list[Progress] = []
    create(store, request, True, reported.append)
    return [p.status for p in reported]


def make(store: ModelStore, **fields: Any) -> list[str]:
    return statuses_of(store, CreateModelRequest.model_validate(fields))


def weights(store: ModelStore) -> str:
    found = store.find(parse_name(BUNDLED_NAME))
    assert found is not None
    return found.weights_digest


def manifest(store: ModelStore, name: str) -> dict[str, object]:
    found = store.manifest(parse_name(name))
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("count", "shown"),
    [(134_515_008, "134.52M"), (8_000_000_000, "8B"), (8_030_261_248, "8.0B"), (7_000_000, "7M"),
     (1_500, "2K"), (999, "999")],
)  # fmt: skip
def test_human_number_is_ollamas(count: int, shown: str) -> None:
    assert human_number(count) == shown


def test_from_a_gguf_blob(store: ModelStore) -> None:
    assert make(store, name="mine", files={"model.gguf": weights(store)}) == [
        "parsing GGUF",
        f"using existing layer {weights(store)}",
        "writing manifest",
    ]
    shown = show(store, "mine", verbose=False)
    assert shown.model is not None and shown.model.template is None  # the GGUF's own template renders
    assert shown.details.model_dump() == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "134.52M",
        "quantization_level": "Q4_1",
    }


def test_from_a_model_with_every_text_layer(store: ModelStore) -> None:
    request = CreateModelRequest(
        name="pirate",
        from_model=BUNDLED_NAME,
        system="Talk like a pirate.",
        license=["MIT", "Apache-2.0"],
        parameters={"temperature": 0.0, "stop": ["<|im_end|>", "Arr"]},
        messages=[ChatMessage(role="user", content="Hi"), ChatMessage(role="assistant", content="Arr!")],
    )
    statuses = statuses_of(store, request)
    assert statuses[-1] == "writing manifest"
    assert f"using existing layer {weights(store)}" in statuses
    assert (
        sum(s.startswith("creating new layer") for s in statuses) == 5
    )  # system, 2 licenses, params, messages
    resolved = resolve(store, "pirate").model
    assert resolved is not None
    assert resolved.system == "Talk like a pirate."
    assert resolved.template == resolve(store, BUNDLED_NAME).model.template  # type: ignore[union-attr]
    assert resolved.parameters is not None and resolved.parameters.stop == ["<|im_end|>", "Arr"]
    assert [m.content for m in resolved.messages] == ["Hi", "Arr!"]
    shown = show(store, "pirate", verbose=False)
    assert shown.license == "MIT\nApache-2.0"
    assert shown.parameters.splitlines() == [
        f"{'temperature':<30} 0",
        f'{"stop":<30} "<|im_end|>"',
        f'{"stop":<30} "Arr"',
    ]
    assert "SYSTEM Talk like a pirate." in shown.modelfile
    assert "PARAMETER stop <|im_end|>\n" in shown.modelfile
    assert shown.modelfile.endswith(
        "LICENSE MIT\nLICENSE Apache-2.0\nMESSAGE user Hi\nMESSAGE assistant Arr!\n"
    )


def test_parameters_merge_with_the_base_models(store: ModelStore) -> None:
    make(store, name="a", from_model=BUNDLED_NAME, parameters={"temperature": 0.5, "top_k": 3})
    make(store, name="b", from_model="a", parameters={"temperature": 0.1})
    params = resolve(store, "b").model.parameters  # type: ignore[union-attr]
    assert params is not None and (params.temperature, params.top_k) == (0.1, 3)


def test_recreating_a_name_replaces_it_and_prunes_what_only_it_used(store: ModelStore) -> None:
    make(store, name="m", from_model=BUNDLED_NAME, system="first")
    first = [layer["digest"] for layer in manifest(store, "m")["layers"]]  # type: ignore[attr-defined]
    make(store, name="M", from_model=BUNDLED_NAME, system="second")
    assert [m.name.display_shortest for m in store.list()].count("m:latest") == 1  # same name, its case kept
    assert resolve(store, "m").model.system == "second"  # type: ignore[union-attr]
    gone = [d for d in first if not store.blob(d).exists()]
    assert len(gone) == 1 and store.blob(gone[0]).name.endswith(gone[0].split(":")[1])
    assert store.blob(weights(store)).exists()


NO_BLOB = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("request_fields", "code", "error"),
    [
        ({"name": "bad name!", "from_model": BUNDLED_NAME}, "invalid", "invalid model name"),
        ({"name": "x"}, "invalid", "neither 'from' or 'files' was specified"),
        ({"name": "x", "from_model": "nope"}, "not_found", 'model "nope" not found'),
        ({"name": "x", "files": {"/etc/model.gguf": NO_BLOB}}, "invalid", "file path must be relative"),
        ({"name": "x", "files": {"../model.gguf": NO_BLOB}}, "invalid", "file path must be relative"),
        ({"name": "x", "files": {"model.gguf": ""}}, "invalid", "invalid digest format"),
        ({"name": "x", "files": {"model.gguf": "md5:1"}}, "invalid", "invalid digest format"),
        ({"name": "x", "files": {}}, "invalid", "no files provided to convert"),
        ({"name": "x", "files": {"model.gguf": NO_BLOB}}, "not_found",
         f'blob "{NO_BLOB}" not found'),
        ({"name": "x", "files": {"model.safetensors": NO_BLOB}}, "invalid",
         "converting safetensors models is not supported by corral: create from a GGUF file"),
        ({"name": "x", "from_model": BUNDLED_NAME, "template": "{{ .Prompt"}, "invalid", "template error: "),
        ({"name": "x", "from_model": BUNDLED_NAME, "quantize": "q4_K_M"}, "invalid",
         "quantization is only supported for F16, BF16 and F32 models"),
        ({"name": "x", "from_model": BUNDLED_NAME, "quantize": "q9"}, "invalid",
         "unsupported quantization type Q9 - supported types are F32, F16, Q4_K_S, Q4_K_M, Q8_0"),
        ({"name": "x", "from_model": BUNDLED_NAME, "adapters": {"a.gguf": NO_BLOB}}, "invalid",
         "adapters are not supported by corral yet"),
        ({"name": "x", "from_model": BUNDLED_NAME, "draft_files": {"d.gguf": NO_BLOB}}, "invalid",
         "draft models are not supported by corral yet"),
    ],
)  # fmt: skip
def test_errors(store: ModelStore, request_fields: dict[str, object], code: str, error: str) -> None:
    before = sorted(p.name for p in store.root.rglob("*"))
    reported: list[Progress] = []
    with pytest.raises(CreateError) as caught:
        create(store, CreateModelRequest.model_validate(request_fields), True, reported.append)
    assert caught.value.code == code and str(caught.value).startswith(error)
    assert not reported
    assert sorted(p.name for p in store.root.rglob("*")) == before  # nothing written


def test_a_file_that_is_not_gguf(store: ModelStore) -> None:
    digest = store.put_blob_bytes(b"not a model")
    with pytest.raises(CreateError, match=r"^unknown type$"):
        make(store, name="x", files={"weights.bin": digest})
    with pytest.raises(CreateError, match=r"^supplied file was not in GGUF format$"):
        make(store, name="x", files={"weights.gguf": digest})


def test_the_config_describes_the_weights(store: ModelStore) -> None:
    make(store, name="c", files={"m.gguf": weights(store)}, requires="0.14.0")
    config_digest = manifest(store, "c")["config"]["digest"]  # type: ignore[index]
    config = json.loads(store.blob(config_digest).read_text())
    assert config == {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "134.52M",
        "file_type": "Q4_1",
        "requires": "0.14.0",
        "architecture": "amd64",
        "os": "linux",
    }


def exl_directory(store: ModelStore, method: str = "exl2") -> dict[str, str]:
    """An EXL2/EXL3-shaped model directory (the bundled model's shape, no real weights) as
    uploaded blobs, by file name."""
    config = {
        "model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "hidden_size": 576, "max_position_embeddings": 8192,
        "quantization_config": {"quant_method": method, "bits": 4.0, "head_bits": 6},
    }  # fmt: skip
    files = {
        "config.json": json.dumps(config).encode(),
        "tokenizer_config.json": json.dumps({"chat_template": "{{ messages[0]['content'] }}"}).encode(),
        "output.safetensors": b"\x02\x00\x00\x00\x00\x00\x00\x00{}",
    }
    return {name: store.put_blob_bytes(data) for name, data in files.items()}


@pytest.mark.parametrize("method", ["exl2", "exl3"])
def test_from_an_exl_model_directory(store: ModelStore, method: str) -> None:
    files = exl_directory(store, method)
    statuses = make(store, name="gpu-model", files=files)
    assert statuses == [
        *(f"using existing layer {files[name]}" for name in sorted(files)),
        "writing manifest",
    ]
    layers = manifest(store, "gpu-model")["layers"]
    assert [(layer["name"], layer["digest"]) for layer in layers] == sorted(files.items())  # type: ignore[index,union-attr]
    resolved = resolve(store, "gpu-model").model
    assert resolved is not None and resolved.format == method
    assert sorted(f.name for f in resolved.files) == sorted(files)
    assert resolved.context_length == 8192 and resolved.capabilities == ["completion"]
    details = show(store, "gpu-model", verbose=False).details
    assert (details.format, details.family, details.quantization_level) == (method, "llama", "4.0bpw")
    # A model made from it keeps its files.
    make(store, name="gpu-pirate", from_model="gpu-model", system="Talk like a pirate.")
    again = resolve(store, "gpu-pirate").model
    assert again is not None and again.digest == resolved.digest and again.format == method
    # Its Modelfile builds on the model itself (no one weights file to name).
    assert "\nFROM gpu-pirate:latest\n" in show(store, "gpu-pirate", verbose=False).modelfile


@pytest.mark.parametrize(
    ("change", "error"),
    [({"config.json": None},
      "converting safetensors models is not supported by corral: create from a GGUF file"),
     ({"output.safetensors": None}, "the model directory has no .safetensors weights"),
     ({"sub/tokenizer.json": "config.json"},
      "invalid file name 'sub/tokenizer.json': a model directory's files are plain names")],
    ids=["no-quantization-config", "no-weights", "a-path-not-a-name"],
)  # fmt: skip
def test_a_model_directory_that_cannot_be_kept_is_refused(
    store: ModelStore, change: dict[str, str | None], error: str
) -> None:
    files = exl_directory(store)
    for name, source in change.items():
        if source is None:
            files.pop(name)
        else:
            files[name] = files[source]
    with pytest.raises(CreateError) as refused:
        make(store, name="broken", files=files)
    assert str(refused.value) == error
