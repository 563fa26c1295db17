"""A model as a set of files (EXL2/EXL3): on the wire, resolved by the registry from a manifest,
found by the worker in the store, and sent to the engine for its format, or refused clearly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.config import load_settings
from services.protocol import Device, ModelRef, ResolveResult
from services.protocol.messages import ModelFile, WorkerState
from services.registry.describe import resolve
from services.registry.names import parse_name
from services.registry.store import FILE_MEDIA_TYPE, ModelStore, file_set_digest
from services.worker.engines.base import EngineError, LoadSpec
from services.worker.engines.formats import (
    FormatEngines,
    engine_for,
    formats_run,
    gpu_only_split,
    offer,
    unusable,
)
from services.worker.engines.simulated import SimulatedEngine
from services.worker.service import select_engine
from services.worker.worker import model_paths

ALL = {"llamacpp": True, "exllamav2": True, "exllamav3": True}
ONLY_LLAMA = {"llamacpp": True, "exllamav2": False, "exllamav3": False}


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# (CORRAL_ENGINE, installed, CUDA device, format, engine or refusal)
CHOICES = [
    pytest.param("auto", ALL, True, "gguf", "llamacpp", id="gguf-on-llamacpp"),
    pytest.param("auto", ALL, True, "exl2", "exllamav2", id="exl2-on-exllamav2"),
    pytest.param("auto", ALL, True, "exl3", "exllamav3", id="exl3-on-exllamav3"),
    pytest.param(
        "auto",
        ONLY_LLAMA,
        True,
        "exl2",
        "this worker cannot run exl2 models: exllamav2 is not installed",
        id="exl2-not-installed",
    ),
    pytest.param(
        "auto",
        ALL,
        False,
        "exl3",
        "this worker cannot run exl3 models: it has no CUDA device",
        id="exl3-no-gpu",
    ),
    pytest.param("auto", ALL, False, "gguf", "llamacpp", id="gguf-without-gpu"),
    pytest.param(
        "llamacpp",
        ALL,
        True,
        "exl2",
        "this worker cannot run exl2 models: CORRAL_ENGINE=llamacpp",
        id="engine-pinned-to-llamacpp",
    ),
    pytest.param(
        "exllamav2",
        ALL,
        True,
        "gguf",
        "this worker cannot run gguf models: CORRAL_ENGINE=exllamav2",
        id="engine-pinned-to-exllamav2",
    ),
]


@pytest.mark.parametrize(("setting", "installed", "cuda", "format", "expected"), CHOICES)
def test_engine_for_a_format(
    setting: str, installed: dict[str, bool], cuda: bool, format: str, expected: str
) -> None:
    offered = offer(setting, installed, cuda)
    if expected.startswith("this worker"):
        with pytest.raises(EngineError) as refused:
            engine_for(format, offered)
        assert str(refused.value) == expected
    else:
        assert engine_for(format, offered) == expected


@pytest.mark.parametrize(
    ("setting", "installed", "cuda", "problem"),
    [
        pytest.param("auto", ONLY_LLAMA, False, None, id="auto-runs-what-it-can"),
        pytest.param(
            "exllamav2",
            ONLY_LLAMA,
            True,
            "CORRAL_ENGINE=exllamav2: exllamav2 is not installed",
            id="not-installed",
        ),
        pytest.param("exllamav3", ALL, False, "CORRAL_ENGINE=exllamav3: it has no CUDA device", id="no-gpu"),
        pytest.param("auto", dict.fromkeys(ALL, False), False, "no engine can run here", id="nothing"),
    ],
)
def test_a_setting_that_cannot_start_says_why(
    setting: str, installed: dict[str, bool], cuda: bool, problem: str | None
) -> None:
    assert unusable(setting, offer(setting, installed, cuda)) == problem


@pytest.mark.parametrize(
    ("setting", "installed", "cuda", "formats"),
    [
        pytest.param("auto", ALL, True, ("gguf", "exl2", "exl3"), id="every-engine"),
        pytest.param("auto", ONLY_LLAMA, True, ("gguf",), id="only-llama-installed"),
        pytest.param("auto", ALL, False, ("gguf",), id="no-cuda-device"),
        pytest.param("exllamav3", ALL, True, ("exl3",), id="pinned-to-exllamav3"),
        pytest.param("auto", dict.fromkeys(ALL, False), False, (), id="nothing"),
    ],
)
def test_the_formats_a_worker_reports_are_those_of_its_engines(
    setting: str, installed: dict[str, bool], cuda: bool, formats: tuple[str, ...]
) -> None:
    assert formats_run(offer(setting, installed, cuda)) == formats


def test_a_heartbeat_that_names_no_formats_means_gguf_only() -> None:
    """An older worker's heartbeat: the scheduler places only GGUF models on it."""
    old = WorkerState.model_validate({"worker_id": "w1", "seq": 1, "engine": "llamacpp", "devices": []})
    assert old.formats == ["gguf"]


def test_the_simulated_engine_runs_every_format() -> None:
    assert SimulatedEngine.formats == ("gguf", "exl2", "exl3")


def test_a_worker_pinned_to_a_missing_engine_does_not_start() -> None:
    with pytest.raises(SystemExit, match="exllamav3 is not installed"):
        select_engine(load_settings({"CORRAL_ENGINE": "exllamav3"}))


class FakeEngine:
    def __init__(self, name: str, devices: list[Device]) -> None:
        self.name, self._devices, self.loaded = name, devices, []

    def devices(self) -> list[Device]:
        return self._devices

    def load(self, spec: LoadSpec, on_steps: Any) -> Any:
        self.loaded.append(spec.format)
        return spec.format


def test_loads_go_to_the_engine_of_their_format_and_devices_are_listed_once() -> None:
    gpu = Device(id="cuda:0", kind="cuda", free_memory=1, total_memory=2)
    cpu = Device(id="cpu", kind="cpu", free_memory=1)
    llama, exl2 = FakeEngine("llamacpp", [cpu, gpu]), FakeEngine("exllamav2", [gpu])
    engines = FormatEngines(
        {"llamacpp": llama, "exllamav2": exl2}, offer("auto", ONLY_LLAMA | {"exllamav2": True}, True)
    )
    assert (engines.name, engines.formats) == ("llamacpp+exllamav2", ("gguf", "exl2"))
    assert [d.id for d in engines.devices()] == ["cpu", "cuda:0"]
    engines.load(LoadSpec(path=Path("x"), num_ctx=8, slots=1, format="exl2"), print)
    engines.load(LoadSpec(path=Path("x"), num_ctx=8, slots=1), print)
    assert (llama.loaded, exl2.loaded) == (["gguf"], ["exl2"])
    with pytest.raises(EngineError, match="exllamav3 is not installed"):
        engines.load(LoadSpec(path=Path("x"), num_ctx=8, slots=1, format="exl3"), print)


@pytest.mark.parametrize(
    ("split", "gpus"),
    [
        pytest.param({}, {}, id="engines-choice"),
        pytest.param({"cuda:1": 5, "cuda:0": 0}, {1: 5}, id="gpus-by-index"),
    ],
)
def test_a_split_for_a_gpu_only_engine(split: dict[str, int], gpus: dict[int, int]) -> None:
    assert gpu_only_split("exllamav2", split) == gpus


def test_a_split_in_system_memory_is_refused_by_a_gpu_only_engine() -> None:
    with pytest.raises(EngineError, match=r"GPUs only.*1\.0 GiB"):
        gpu_only_split("exllamav2", {"cuda:0": 2 << 30, "cpu": 1 << 30})


# ---- the wire

FILES = [
    ModelFile(name="config.json", digest="sha256:" + "1" * 64, size=10),
    ModelFile(name="model-00001-of-00002.safetensors", digest="sha256:" + "2" * 64, size=1000),
]


def ref(**fields: Any) -> ModelRef:
    values = {
        "name": "m:exl2",
        "full_name": "registry.ollama.ai/library/m:exl2",
        "digest": "sha256:" + "f" * 64,
    }
    return ModelRef.model_validate({"size": 1010, **values, **fields})


def test_a_multi_file_model_ref_crosses_the_wire_whole() -> None:
    sent = ResolveResult(model=ref(format="exl2", files=FILES))
    received = ResolveResult.model_validate_json(sent.encode())
    assert received == sent
    assert received.model is not None and received.model.files == FILES


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        pytest.param({"format": "exl2"}, "lists its files", id="exl2-without-files"),
        pytest.param({"files": FILES}, "one file", id="gguf-with-files"),
        pytest.param({"format": "exl3", "files": [*FILES, FILES[0]]}, "unique", id="a-name-twice"),
        pytest.param({"format": "safetensors", "files": FILES}, "format", id="unknown-format"),
    ],
)
def test_a_model_ref_that_does_not_fit_its_format_is_refused(fields: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        ref(**fields)


@pytest.mark.parametrize("name", ["../config.json", "a/b", ".hidden", "..", "", "x" * 256])
def test_a_file_name_is_a_plain_name(name: str) -> None:
    with pytest.raises(ValidationError):
        ModelFile(name=name, digest="sha256:" + "1" * 64)


# ---- the registry and the worker


CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "hidden_size": 576,
    "max_position_embeddings": 8192,
    "quantization_config": {"quant_method": "exl2", "bits": 4.0},
}


def store_files_model(store: ModelStore, name: str, files: dict[str, bytes], config: dict[str, Any]) -> None:
    layers = []
    for file_name, data in files.items():
        layers.append(
            {
                "mediaType": FILE_MEDIA_TYPE,
                "digest": store.put_blob_bytes(data),
                "size": len(data),
                "name": file_name,
            }
        )
    store.write_model(parse_name(name), config, layers)


def files(config: dict[str, Any] = CONFIG) -> dict[str, bytes]:
    return {
        "config.json": json.dumps(config).encode(),
        "tokenizer.json": b"{}",
        "tokenizer_config.json": json.dumps(
            {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}
        ).encode(),
        "model.safetensors": b"weights",
    }


def test_the_registry_resolves_a_model_of_files(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store_files_model(store, "m:exl2", files(), {"model_format": "exl2"})
    model = resolve(store, "m:exl2").model
    assert model is not None
    assert model.format == "exl2" and model.details.format == "exl2"
    assert [(f.name, f.digest, f.size) for f in model.files] == [
        (name, digest(data), len(data)) for name, data in files().items()
    ]
    assert model.digest == file_set_digest(tuple(model.files)) and model.size == sum(
        len(d) for d in files().values()
    )
    assert model.context_length == 8192
    assert model.shape is not None and (
        model.shape.block_count,
        model.shape.head_count_kv,
        model.shape.key_length,
    ) == (30, 3, 64)
    assert "completion" in model.capabilities


def test_exl3_is_told_by_its_quantization_config(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store_files_model(store, "m:exl3", files({**CONFIG, "quantization_config": {"quant_method": "exl3"}}), {})
    model = resolve(store, "m:exl3").model
    assert model is not None and model.format == "exl3"


def test_a_manifest_whose_file_names_are_not_plain_is_no_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    store_files_model(store, "m:bad", {"../config.json": b"{}"}, {})
    assert resolve(store, "m:bad").code == "not_found"


def test_the_file_set_digest_ignores_the_order_of_the_layers() -> None:
    assert file_set_digest(tuple(FILES)) == file_set_digest(tuple(reversed(FILES)))
    assert file_set_digest(tuple(FILES)) != file_set_digest(tuple(FILES[:1]))


def test_the_worker_finds_every_file_in_the_store_and_nothing_outside(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store_files_model(store, "m:exl2", files(), {})
    model = resolve(store, "m:exl2").model
    assert model is not None
    found = model_paths(store.root, model)
    assert found is not None
    config, paths = found
    assert config == store.blob(digest(files()["config.json"])).resolve()
    assert {name: path.read_bytes() for name, path in paths.items()} == files()
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"weights")
    blob = store.blob(digest(b"weights"))
    blob.unlink()
    blob.symlink_to(outside)
    assert model_paths(store.root, model) is None
