"""What the registry says of a stored model: to workers (ModelRef), in /api/tags, in /api/show.

Pure functions of the store's files. GGUF metadata is read once per weights file
(blobs are content-addressed, so a path always names the same content). A model stored as
files (EXL2/EXL3, see store.py) is described from its config.json and tokenizer_config.json
instead, read once per blob likewise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.gotemplate.gofmt import format_value
from services.protocol import (
    CatalogEntry,
    ChatMessage,
    ModelDetails,
    ModelRef,
    ModelShape,
    Options,
    ResolveResult,
    ShowResult,
    TensorInfo,
)
from services.protocol.messages import ErrorCode, ModelFormat
from services.registry.capabilities import capabilities
from services.registry.gguf_metadata import NotGguf, SkippedArray, read_metadata, read_tensors
from services.registry.names import InvalidName, parse_name
from services.registry.store import (
    ADAPTER_MEDIA_TYPE,
    LICENSE_MEDIA_TYPE,
    MESSAGES_MEDIA_TYPE,
    PARAMS_MEDIA_TYPE,
    PROJECTOR_MEDIA_TYPE,
    SYSTEM_MEDIA_TYPE,
    TEMPLATE_MEDIA_TYPE,
    ModelStore,
    StoredModel,
)

SHORT_ARRAY = 5  # /api/show empties longer arrays unless verbose, as Ollama does
HIDDEN_KEYS = ("general.name", "tokenizer.chat_template")  # Ollama leaves these out of model_info
PARAMETER_WIDTH = 30  # Ollama's `%-30s %v` for the parameters text
_MESSAGES = TypeAdapter(list[ChatMessage])


def resolve(store: ModelStore, name: str) -> ResolveResult:
    """Map a client's model name to the weights it means (Ollama's 400 / 404 cases)."""
    found, error, code = _find(store, name)
    if found is None:
        return ResolveResult(error=error, code=code)
    return ResolveResult(model=model_ref(store, found))


def model_ref(store: ModelStore, found: StoredModel) -> ModelRef:
    """Everything a worker and the gateway need to know of a stored model."""
    template = found.text_layer(store, TEMPLATE_MEDIA_TYPE)
    params = found.text_layer(store, PARAMS_MEDIA_TYPE)
    format: ModelFormat = "gguf"
    if found.files:
        files = files_model(store, found)
        format, metadata, trained, shape = files.format, files.metadata, files.context_length, files.shape
    else:
        metadata = gguf_metadata(store.blob(found.weights_digest))
        trained = metadata.get(f"{metadata.get('general.architecture')}.context_length")
        shape = model_shape(metadata)
    return ModelRef(
        name=found.name.display_shortest,
        full_name=found.name.full,
        digest=found.weights_digest,
        size=found.weights_size,
        format=format,
        files=list(found.files),
        manifest_digest=found.manifest_digest,
        details=details(store, found),
        template=template,
        system=found.text_layer(store, SYSTEM_MEDIA_TYPE),
        parameters=Options.model_validate_json(params) if params else None,
        capabilities=capabilities(metadata, template, PROJECTOR_MEDIA_TYPE in found.layers),
        context_length=trained if isinstance(trained, int) and trained > 0 else None,
        messages=_messages(found.text_layer(store, MESSAGES_MEDIA_TYPE)),
        shape=shape,
    )


@dataclass(frozen=True)
class FilesModel:
    """What a model stored as files says of itself, in the terms of a GGUF's description."""

    format: ModelFormat
    metadata: dict[str, Any]  # GGUF-named keys: general.architecture, tokenizer.chat_template
    context_length: int | None
    shape: ModelShape | None


def files_model(store: ModelStore, found: StoredModel) -> FilesModel:
    """A Hugging Face model directory's config.json (quantization_config.quant_method names EXL3;
    anything else loads in exllamav2, which also takes EXL2, GPTQ and FP16 checkpoints) and chat
    template (chat_template.jinja, else tokenizer_config.json's, a list's "default" or first)."""
    blobs = {file.name: store.blob(file.digest) for file in found.files}
    config = _json_blob(blobs["config.json"]) if "config.json" in blobs else {}
    inner = config.get("text_config")
    text: dict[str, Any] = inner if isinstance(inner, dict) else config
    quantization = config.get("quantization_config")
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    format: ModelFormat = "exl3" if "exl3" in (method, found.config.get("model_format")) else "exl2"
    template: Any = _text_blob(blobs["chat_template.jinja"]) if "chat_template.jinja" in blobs else None
    if template is None and "tokenizer_config.json" in blobs:
        template = _json_blob(blobs["tokenizer_config.json"]).get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default", next(iter(named.values()), None))
    metadata = {"general.architecture": str(text.get("model_type") or config.get("model_type") or "")}
    if isinstance(template, str):
        metadata["tokenizer.chat_template"] = template
    trained = text.get("max_position_embeddings")
    return FilesModel(
        format=format,
        metadata=metadata,
        context_length=trained if isinstance(trained, int) and trained > 0 else None,
        shape=hf_shape(text),
    )


def hf_shape(config: dict[str, Any]) -> ModelShape | None:
    """ModelShape from a Hugging Face config: the same numbers under their config.json names."""

    def number(key: str) -> int:
        value = config.get(key)
        return value if isinstance(value, int) and value > 0 else 0

    layers, heads, hidden = number("num_hidden_layers"), number("num_attention_heads"), number("hidden_size")
    if not (layers and heads and hidden):
        return None
    per_head = number("head_dim") or hidden // heads
    return ModelShape(
        block_count=layers,
        head_count=heads,
        head_count_kv=number("num_key_value_heads") or heads,
        key_length=per_head,
        value_length=per_head,
        embedding_length=hidden,
    )


SMALL_FILE = 16 << 20  # a config or tokenizer_config larger than this is not read


@lru_cache(maxsize=64)
def _json_blob(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_text_blob(path) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@lru_cache(maxsize=64)
def _text_blob(path: Path) -> str | None:
    try:
        if path.stat().st_size > SMALL_FILE:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def model_shape(metadata: dict[str, Any]) -> ModelShape | None:
    """The layers and attention of a GGUF model, as Ollama's estimator reads them: head counts
    may be one number or one per layer (the largest counts); key and value lengths default to
    embedding_length / head_count. None when the metadata lacks them (not a transformer GGUF)."""
    arch = metadata.get("general.architecture")

    def number(key: str) -> int:
        value = metadata.get(f"{arch}.{key}")
        if isinstance(value, list):
            value = max((v for v in value if isinstance(v, int)), default=0)
        return value if isinstance(value, int) and not isinstance(value, SkippedArray) else 0

    layers, heads = number("block_count"), number("attention.head_count")
    embedding = number("embedding_length")
    if not (layers and heads and embedding):
        return None
    per_head = embedding // heads
    return ModelShape(
        block_count=layers,
        head_count=heads,
        head_count_kv=number("attention.head_count_kv") or heads,
        key_length=number("attention.key_length") or per_head,
        value_length=number("attention.value_length") or per_head,
        embedding_length=embedding,
    )


def _messages(layer: str | None) -> list[ChatMessage]:
    """The messages layer: a JSON list of messages; one that does not parse counts as none."""
    try:
        return _MESSAGES.validate_json(layer) if layer else []
    except ValidationError:
        return []


def catalog_entry(store: ModelStore, found: StoredModel) -> CatalogEntry:
    ref = model_ref(store, found)
    metadata = gguf_metadata(store.blob(found.weights_digest))
    embedding = metadata.get(f"{metadata.get('general.architecture')}.embedding_length")
    return CatalogEntry(
        name=ref.name,
        namespace=found.name.namespace,
        digest=found.manifest_digest,
        size=found.total_size,
        modified_at=found.modified_at,
        details=ref.details,
        context_length=ref.context_length or 0,
        embedding_length=embedding if isinstance(embedding, int) else 0,
        capabilities=ref.capabilities,
    )


def details(store: ModelStore, found: StoredModel) -> ModelDetails:
    """From the manifest's config (as Ollama writes it), else from the GGUF's own metadata."""
    config = found.config
    files = files_model(store, found) if found.files else None
    metadata = files.metadata if files else gguf_metadata(store.blob(found.weights_digest))
    family = str(config.get("model_family") or metadata.get("general.architecture", ""))
    families = config.get("model_families")
    return ModelDetails(
        format=files.format if files else str(config.get("model_format", "gguf")),
        family=family,
        families=[str(f) for f in families] if isinstance(families, list) else ([family] if family else None),
        parameter_size=str(config.get("model_type") or metadata.get("general.size_label", "")),
        quantization_level=str(config.get("file_type", "")),
    )


def show(store: ModelStore, name: str, verbose: bool) -> ShowResult:
    found, error, code = _find(store, name)
    if found is None:
        return ShowResult(error=error, code=code)
    ref = model_ref(store, found)
    licenses = found.text_layers(store, LICENSE_MEDIA_TYPE)
    parameters = _parameters(found.text_layer(store, PARAMS_MEDIA_TYPE))
    weights = store.blob(found.weights_digest)
    return ShowResult(
        model=ref,
        details=details(store, found),
        model_info=model_info(whole_gguf_metadata(weights) if verbose else gguf_metadata(weights), verbose),
        parameters=parameters_text(parameters),
        license="\n".join(licenses),
        modelfile=modelfile(ref, found, store, parameters, licenses),
        modified_at=found.modified_at,
        tensors=gguf_tensors(weights),
    )


def sendable(result: ShowResult, max_payload: int) -> ShowResult:
    """`result`, or a clear refusal when it does not fit in one message: a verbose answer has
    every array whole, and a large vocabulary can pass the broker's max_payload."""
    size = len(result.model_dump_json())
    if size <= max_payload:
        return result
    return ShowResult(
        error=f"model metadata too large to send: {size} bytes, at most {max_payload}; ask without verbose",
        code="too_large",
    )


def model_info(metadata: dict[str, Any], verbose: bool) -> dict[str, Any]:
    """The GGUF key/values as /api/show gives them: long arrays empty unless verbose (metadata
    read with its arrays cut short has them empty even then)."""
    info: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in HIDDEN_KEYS:
            continue
        if isinstance(value, SkippedArray) or (
            isinstance(value, list) and len(value) > SHORT_ARRAY and not verbose
        ):
            value = []
        info[key] = value
    return info


def _parameters(layer: str | None) -> dict[str, Any]:
    try:
        value = json.loads(layer) if layer else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def parameters_text(parameters: dict[str, Any]) -> str:
    """The params layer as Ollama prints it: a name padded to 30, then the value as Go's %#v."""
    lines = []
    for key, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            shown = json.dumps(item) if isinstance(item, str) else format_value(item)
            lines.append(f"{key:<{PARAMETER_WIDTH}} {shown}")
    return "\n".join(lines)


def modelfile(
    ref: ModelRef, found: StoredModel, store: ModelStore, parameters: dict[str, Any], licenses: list[str]
) -> str:
    """Ollama's generated Modelfile (Model.String() under ShowHandler's header)."""
    # A model kept as files has no one weights file: its FROM is the model itself, which a
    # Modelfile built on it can use as is.
    commands = [f"FROM {ref.name}" if found.files else f"FROM {store.blob(found.weights_digest)}"]
    commands += [f"ADAPTER {_quoted(str(p))}" for p in found.paths(store, ADAPTER_MEDIA_TYPE)]
    commands += [f"FROM {p}" for p in found.paths(store, PROJECTOR_MEDIA_TYPE)]
    if ref.template is not None:
        commands.append(f"TEMPLATE {_quoted(ref.template)}")
    if ref.system:
        commands.append(f"SYSTEM {_quoted(ref.system)}")
    for key, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            commands.append(f"PARAMETER {key} {_quoted(format_value(item))}")
    commands += [f"LICENSE {_quoted(text)}" for text in licenses]
    commands += [f"MESSAGE {m.role} {_quoted(m.content)}" for m in ref.messages]
    header = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {ref.name}",
        "",
    ]
    return "\n".join(header + commands) + "\n"


def _quoted(text: str) -> str:
    """A Modelfile value as Ollama's parser.quote writes it."""
    if "\n" in text or text.startswith(" ") or text.endswith(" "):
        return f'"""{text}"""' if '"' in text else f'"{text}"'
    return text


@lru_cache(maxsize=64)
def gguf_metadata(path: Path) -> dict[str, Any]:
    try:
        return read_metadata(path)
    except (OSError, NotGguf):
        return {}


def whole_gguf_metadata(path: Path) -> dict[str, Any]:
    """Every array whole (the vocabulary too), for a verbose /api/show: read each time, not kept."""
    try:
        return read_metadata(path, arrays_kept=None)
    except (OSError, NotGguf):
        return {}


@lru_cache(maxsize=64)
def gguf_tensors(path: Path) -> list[TensorInfo]:
    """The tensor table, as Ollama lists it in every /api/show of a GGUF model."""
    try:
        return [TensorInfo(name=t.name, type=t.type, shape=list(t.shape)) for t in read_tensors(path)]
    except (OSError, NotGguf):
        return []


def _find(store: ModelStore, name: str) -> tuple[StoredModel | None, str, ErrorCode]:
    try:
        parsed = parse_name(name)
    except InvalidName as exc:
        return None, str(exc), "invalid"
    found = store.find(parsed)
    if found is None:
        return None, f"model '{name}' not found", "not_found"
    return found, "", "internal"
