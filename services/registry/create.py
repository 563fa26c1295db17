"""Creating a model in the store (Ollama's CreateHandler and createModel).

The layers come from a stored model (`from`; pulled first when not stored, as Ollama does)
or from uploaded files (`files`): GGUF blobs, or an EXL2/EXL3 model directory (config.json
naming the quantization, tokenizer files, safetensors shards), kept whole as one file layer
each, for the GPU engines; the
template, system prompt, licenses, parameters and messages of the request then replace or
add layers; a config layer describes the weights; the manifest is written last, in one
rename, and the layers the name's previous manifest alone used are pruned.

Quantizing (F16, BF16 or F32 weights to another type) runs llama.cpp's quantizer. Not done
here (each a clear error): converting other safetensors, split GGUF files, adapters and draft
models. corral renders a GGUF's own chat template when a model has no template layer, so
Ollama's template autodetection has no counterpart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.gotemplate import TemplateError
from services.gotemplate import parse as parse_template
from services.protocol import CreateModelRequest, Progress
from services.protocol.messages import ModelFile
from services.registry.errors import RegistryError
from services.registry.gguf_metadata import NotGguf, file_type, is_gguf, parameter_count, read_metadata
from services.registry.names import InvalidName, ModelName, parse_name
from services.registry.quantize import QUANTIZABLE, QUANTIZE_TYPES, QuantizeError
from services.registry.quantize import quantize as quantize_file
from services.registry.store import (
    ADAPTER_MEDIA_TYPE,
    FILE_MEDIA_TYPE,
    LICENSE_MEDIA_TYPE,
    MESSAGES_MEDIA_TYPE,
    MODEL_MEDIA_TYPE,
    PARAMS_MEDIA_TYPE,
    PROJECTOR_MEDIA_TYPE,
    SYSTEM_MEDIA_TYPE,
    TEMPLATE_MEDIA_TYPE,
    InvalidDigest,
    ModelStore,
    manifest_digests,
    sha256_file,
)

_WEIGHT_TYPES = (MODEL_MEDIA_TYPE, PROJECTOR_MEDIA_TYPE, ADAPTER_MEDIA_TYPE)


class CreateError(RegistryError):
    pass


@dataclass
class _Draft:
    """The manifest being built: its layers in order, the config, and where statuses go."""

    report: Callable[[Progress], None]
    layers: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def say(self, status: str) -> None:
        self.report(Progress(status=status))

    def replace(self, media_type: str, layer: dict[str, Any] | None) -> None:
        self.layers = [existing for existing in self.layers if existing["mediaType"] != media_type]
        if layer is not None:
            self.layers.append(layer)


def create(
    store: ModelStore, request: CreateModelRequest, prune: bool, report: Callable[[Progress], None]
) -> None:
    """Create (or replace) model `request.name`, reporting Ollama's statuses as it goes (the
    closing "success" is the job's last message); raise CreateError with Ollama's error. With
    `prune`, the blobs only the replaced manifest used are removed."""
    draft = _Draft(report)
    name = _target_name(store, request.name)
    _check_files(request.files or {})
    try:
        if request.from_model:
            _layers_from_model(store, request.from_model, draft)
        elif request.files is not None:
            _layers_from_files(store, request.files, draft)
        else:
            raise CreateError("neither 'from' or 'files' was specified")
        if request.adapters:
            raise CreateError("adapters are not supported by corral yet")
        if request.draft_files:
            raise CreateError("draft models are not supported by corral yet")
        _quantize(store, request.quantize, draft)
        _text_layers(store, request, draft)
        for layer in draft.layers:
            if "status" in layer:
                draft.say(layer.pop("status"))
        previous = store.manifest(name)
        draft.say("writing manifest")
        _write(store, name, request, draft)
    except OSError as exc:
        raise CreateError(f"creating model: {exc.strerror or exc}", "internal") from exc
    if previous is not None and prune:
        store.prune(manifest_digests(previous))


def missing_source(store: ModelStore, request: CreateModelRequest) -> str | None:
    """The model `from` names when it is a valid name not in the store: Ollama pulls it first
    (then creates from it); None when there is nothing to pull."""
    if not request.from_model:
        return None
    try:
        name = parse_name(request.from_model)
    except InvalidName:
        return None  # create itself answers "invalid model name"
    return request.from_model if store.manifest(name) is None else None


def _target_name(store: ModelStore, text: str) -> ModelName:
    """The name to create: an existing model's own spelling when only the case differs."""
    try:
        name = parse_name(text)
    except InvalidName as exc:
        raise CreateError("invalid model name") from exc
    existing = store.find(name)
    return existing.name if existing else name


def _check_files(files: dict[str, str]) -> None:
    for path, digest in files.items():
        if not _valid_relative(path):
            raise CreateError("file path must be relative")
        if not digest:
            raise CreateError("invalid digest format")


def _valid_relative(path: str) -> bool:
    """Go's fs.ValidPath: unrooted, slash-separated, no empty, `.` or `..` elements."""
    if path == ".":
        return True
    parts = path.split("/")
    return bool(path) and all(part not in ("", ".", "..") for part in parts) and "\\" not in path


def _layers_from_model(store: ModelStore, source: str, draft: _Draft) -> None:
    try:
        source_name = parse_name(source)
    except InvalidName as exc:
        raise CreateError("invalid model name") from exc
    manifest = store.manifest(source_name)
    found = store.find(source_name)
    if manifest is None or found is None:
        raise CreateError(f'model "{source}" not found', "not_found")
    for layer in manifest.get("layers", []):
        draft.layers.append({**layer, "status": f"using existing layer {layer['digest']}"})
    for key in ("renderer", "parser", "requires", "model_format", "capabilities"):
        if found.config.get(key):
            draft.config[key] = found.config[key]
    _describe_weights(store, draft)


DIRECTORY_FORMATS = ("exl2", "exl3")  # quantization_config.quant_method of a model kept as files


def _layers_from_files(store: ModelStore, files: dict[str, str], draft: _Draft) -> None:
    if not files:
        raise CreateError("no files provided to convert")
    if "config.json" in files and _quant_method(_blob(store, files["config.json"])) in DIRECTORY_FORMATS:
        _layers_from_directory(store, files, draft)
        return
    if any(path.endswith(".safetensors") for path in files):
        raise CreateError("converting safetensors models is not supported by corral: create from a GGUF file")
    blobs = {path: _blob(store, digest) for path, digest in files.items()}
    if not any(path.endswith(".gguf") for path in files) and not any(is_gguf(b) for b in blobs.values()):
        raise CreateError("unknown type")
    for path in sorted(files):
        draft.say("parsing GGUF")
        try:
            metadata = read_metadata(blobs[path])
        except NotGguf as exc:
            raise CreateError("supplied file was not in GGUF format") from exc
        if int(metadata.get("split.count", 1) or 1) > 1:
            raise CreateError(
                "split GGUF files are not supported by corral yet: merge them with llama-gguf-split"
            )
        digest = "sha256:" + blobs[path].name.removeprefix("sha256-")
        size = blobs[path].stat().st_size
        status = f"using existing layer {digest}"
        draft.layers.append(
            {"mediaType": _weights_kind(metadata), "digest": digest, "size": size, "status": status}
        )
    if sum(layer["mediaType"] == MODEL_MEDIA_TYPE for layer in draft.layers) != 1:
        raise CreateError("a model needs exactly one GGUF file of weights (and at most one projector)")
    _describe_weights(store, draft)


def _quant_method(config_json: Path) -> str:
    """An HF config.json's quantization_config.quant_method ("exl2", "exl3", "gptq", …; "")."""
    try:
        config = json.loads(config_json.read_bytes())
    except (OSError, ValueError):
        return ""
    quantization = config.get("quantization_config") if isinstance(config, dict) else None
    return str(quantization.get("quant_method", "")) if isinstance(quantization, dict) else ""


def _layers_from_directory(store: ModelStore, files: dict[str, str], draft: _Draft) -> None:
    """An EXL2/EXL3 model directory: each file one layer, named, its bytes as uploaded."""
    if not any(path.endswith(".safetensors") for path in files):
        raise CreateError("the model directory has no .safetensors weights")
    for path in sorted(files):
        try:
            file = ModelFile(name=path, digest=files[path], size=_blob(store, files[path]).stat().st_size)
        except ValidationError as exc:
            raise CreateError(
                f"invalid file name {path!r}: a model directory's files are plain names"
            ) from exc
        layer = {"mediaType": FILE_MEDIA_TYPE, "digest": file.digest, "size": file.size, "name": file.name}
        draft.layers.append({**layer, "status": f"using existing layer {file.digest}"})
    _describe_weights(store, draft)


def _describe_directory(store: ModelStore, draft: _Draft) -> None:
    """The config's description of a model kept as files, from its config.json."""
    config_layer = next(
        (
            layer
            for layer in draft.layers
            if layer["mediaType"] == FILE_MEDIA_TYPE and layer["name"] == "config.json"
        ),
        None,
    )
    if config_layer is None:
        raise CreateError("the model directory has no config.json")
    config = json.loads(_blob(store, str(config_layer["digest"])).read_bytes())
    quantization = config.get("quantization_config") or {}
    family = str(config.get("model_type", ""))
    bits = quantization.get("bits")
    draft.config.update(
        model_format=str(quantization.get("quant_method", "exl2")),
        model_family=family,
        model_families=[family] if family else [],
        file_type=f"{bits}bpw" if isinstance(bits, (int, float)) else "",
    )


def _blob(store: ModelStore, digest: str) -> Path:
    try:
        path = store.blob(digest)
    except InvalidDigest as exc:
        raise CreateError("invalid digest format") from exc
    if not path.is_file():
        raise CreateError(f'blob "{digest}" not found', "not_found")
    return path


def _weights_kind(metadata: dict[str, Any]) -> str:
    """Ollama's media type for a GGUF: an adapter, a projector (isProjectorGGUF), or a model."""
    kind = metadata.get("general.type")
    if kind == "adapter":
        return ADAPTER_MEDIA_TYPE
    architecture = metadata.get("general.architecture", "")
    blocks = metadata.get(f"{architecture}.block_count", 0)
    if (
        kind in ("projector", "mmproj")
        or (not blocks and metadata.get(f"{architecture}.vision.block_count"))
        or (architecture == "clip" and not blocks)
    ):
        return PROJECTOR_MEDIA_TYPE
    return MODEL_MEDIA_TYPE


def _describe_weights(store: ModelStore, draft: _Draft) -> None:
    """The config's description of the weights layer, from its GGUF (createModel)."""
    weights = next((layer for layer in draft.layers if layer["mediaType"] == MODEL_MEDIA_TYPE), None)
    if weights is None and any(layer["mediaType"] == FILE_MEDIA_TYPE for layer in draft.layers):
        _describe_directory(store, draft)
        return
    if weights is None:
        raise CreateError("the model has no weights layer")
    path = _blob(store, str(weights["digest"]))
    metadata = read_metadata(path)
    architecture = str(metadata.get("general.architecture", ""))
    draft.config.setdefault("model_format", "gguf")
    draft.config.update(
        model_family=architecture,
        model_families=[architecture],
        model_type=human_number(parameter_count(path)),
        file_type=file_type(metadata),
    )


def human_number(count: int) -> str:
    """Ollama's format.HumanNumber: 134515008 -> "134.52M", 8000000000 -> "8B"."""
    for size, suffix, decimals in ((10**9, "B", 1), (10**6, "M", 2)):
        if count >= size:
            number = count / size
            return f"{number:.0f}{suffix}" if number == int(number) else f"{number:.{decimals}f}{suffix}"
    return f"{count / 1000:.0f}K" if count >= 1000 else str(count)


def _quantize(store: ModelStore, quantize: str, draft: _Draft) -> None:
    """Quantize the weights when `quantize` asks for a type they are not (Ollama's rules: only
    from F16, BF16 or F32); the new weights replace the layer."""
    wanted = quantize.upper()
    if not wanted:
        return
    if wanted not in QUANTIZE_TYPES:
        raise CreateError(
            f"unsupported quantization type {wanted} - supported types are F32, F16, Q4_K_S, Q4_K_M, Q8_0"
        )
    have, target = draft.config.get("file_type", ""), QUANTIZE_TYPES[wanted]
    if have not in QUANTIZABLE:
        raise CreateError("quantization is only supported for F16, BF16 and F32 models")
    if have == target:
        return
    index = next(i for i, layer in enumerate(draft.layers) if layer["mediaType"] == MODEL_MEDIA_TYPE)
    weights = draft.layers[index]
    draft.say(f"quantizing {have} model to {target}")
    try:
        output = quantize_file(_blob(store, str(weights["digest"])), target)
    except QuantizeError as exc:
        raise CreateError(str(exc), "internal") from exc
    try:
        draft.say("verifying conversion")
        if file_type(read_metadata(output)) != target:
            raise CreateError(f"the quantized model is not {target}", "internal")
        digest = sha256_file(output)
        status = f"{'using existing' if store.blob(digest).exists() else 'creating new'} layer {digest}"
        store.put_blob_file(output, digest)
        size = store.blob(digest).stat().st_size
    finally:
        output.unlink(missing_ok=True)
    draft.layers[index] = {"mediaType": MODEL_MEDIA_TYPE, "digest": digest, "size": size, "status": status}
    _describe_weights(store, draft)


def _text_layers(store: ModelStore, request: CreateModelRequest, draft: _Draft) -> None:
    """Template, system, licenses, parameters and messages, as createModel sets them."""
    if request.template:
        try:
            parse_template(request.template)
        except TemplateError as exc:
            raise CreateError(f"template error: {exc}") from exc
        draft.replace(TEMPLATE_MEDIA_TYPE, _put(store, TEMPLATE_MEDIA_TYPE, request.template.encode()))
    if request.system:
        draft.replace(SYSTEM_MEDIA_TYPE, _put(store, SYSTEM_MEDIA_TYPE, request.system.encode()))
    for text in request.license:
        if text:
            draft.layers.append(_put(store, LICENSE_MEDIA_TYPE, text.encode()))
    parameters = {**_existing_parameters(store, draft), **request.parameters}
    if parameters:
        data = (json.dumps(parameters) + "\n").encode()
        draft.replace(PARAMS_MEDIA_TYPE, _put(store, PARAMS_MEDIA_TYPE, data))
    if request.messages:
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        data = (json.dumps(messages) + "\n").encode()
        draft.replace(MESSAGES_MEDIA_TYPE, _put(store, MESSAGES_MEDIA_TYPE, data))


def _put(store: ModelStore, media_type: str, data: bytes) -> dict[str, Any]:
    layer, status = store.put_layer(media_type, data)
    return {**layer, "status": status}


def _existing_parameters(store: ModelStore, draft: _Draft) -> dict[str, Any]:
    layer = next((layer for layer in draft.layers if layer["mediaType"] == PARAMS_MEDIA_TYPE), None)
    if layer is None:
        return {}
    try:
        value = json.loads(store.blob(str(layer["digest"])).read_bytes())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write(store: ModelStore, name: ModelName, request: CreateModelRequest, draft: _Draft) -> None:
    config = {
        **draft.config,
        **{key: value for key in ("renderer", "parser", "requires") if (value := getattr(request, key))},
        "architecture": "amd64",
        "os": "linux",
    }
    store.write_model(name, config, draft.layers)
