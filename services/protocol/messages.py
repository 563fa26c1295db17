"""The wire contract: every message that crosses NATS between corral's services.

Times are float seconds since the epoch (`time.time()`) when they name a moment,
and integer nanoseconds when they are Ollama statistics. `keep_alive` is float
seconds, negative meaning forever (see `durations`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

Role = Literal["system", "user", "assistant", "tool"]
# The error vocabulary on the wire: what went wrong, not an HTTP status. The gateway maps
# each code to a status once per API flavour (services/gateway/errors.py).
ErrorCode = Literal["invalid", "not_found", "too_large", "unavailable", "internal"]


class Message(BaseModel):
    """A model's wire message: ignores fields it does not know, so newer peers can add some."""

    model_config = ConfigDict(extra="ignore")

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class Options(Message):
    """The options a request (or a model's params layer) sets, as Ollama's api.Options names them.

    Every field is None unless set, so layers can be merged: Ollama's defaults, then the
    model's parameters, then the request's (`merged`). Defaults live in `DEFAULT_OPTIONS`.
    """

    num_keep: int | None = None
    seed: int | None = None
    num_predict: int | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_last_n: int | None = None
    temperature: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: list[str] | None = None
    num_ctx: int | None = None  # filled in by the scheduler when unset (OLLAMA_CONTEXT_LENGTH)

    def merged(self, *overrides: Options | None) -> Options:
        """These options with each later layer's set fields on top."""
        values = self.model_dump(exclude_none=True)
        for layer in overrides:
            if layer is not None:
                values.update(layer.model_dump(exclude_none=True))
        return Options.model_validate(values)


# Ollama's load-time runner options that decide placement and threads. Requests and params
# layers may carry them (typed as below); corral's scheduler and worker decide those things
# themselves (OLLAMA_* settings, CORRAL_ENGINE_THREADS).
RUNNER_OPTIONS: dict[str, type] = {
    "num_batch": int,
    "num_gpu": int,
    "main_gpu": int,
    "use_mmap": bool,
    "num_thread": int,
}


def option_type(name: str) -> type | None:
    """The value type of Ollama option `name` (int, float, bool or list of str), or None
    when Ollama has no such option."""
    if name in RUNNER_OPTIONS:
        return RUNNER_OPTIONS[name]
    field = Options.model_fields.get(name)
    if field is None:
        return None
    text = str(field.annotation)
    return list if "list" in text else int if "int" in text else float


# Ollama's DefaultOptions(), the one place they are written.
DEFAULT_OPTIONS = Options(
    num_keep=4,
    seed=-1,
    num_predict=-1,
    top_k=40,
    top_p=0.9,
    min_p=0.0,
    typical_p=1.0,
    repeat_last_n=64,
    temperature=0.8,
    repeat_penalty=1.0,
    presence_penalty=0.0,
    frequency_penalty=0.0,
    stop=[],
)


class ToolCallFunction(Message):
    index: int | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(Message):
    id: str | None = None
    function: ToolCallFunction


class ChatMessage(Message):
    role: Role
    content: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


Capability = Literal["completion", "tools", "insert", "vision", "embedding", "thinking"]


class ModelDetails(Message):
    """api.ModelDetails: the same for a model in /api/tags, /api/show and /api/ps."""

    parent_model: str = ""
    format: str = "gguf"
    family: str = ""
    families: list[str] | None = None
    parameter_size: str = ""
    quantization_level: str = ""


# A blob's content address. Anything else is refused where a message is read, so no message
# can name a path: a worker builds the weights' path from this and nothing else.
Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class ModelShape(Message):
    """What a memory estimate needs from a model's own metadata (GGUF): layers and attention.
    Head counts are the largest over the layers where they vary; lengths are per head."""

    block_count: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    embedding_length: int


# How a model's weights are stored: one GGUF file (llama.cpp), or a directory of files in the
# Hugging Face layout (config.json, tokenizer files, *.safetensors shards) quantized for
# exllamav2 (EXL2; it also loads GPTQ and FP16 checkpoints) or exllamav3 (EXL3).
ModelFormat = Literal["gguf", "exl2", "exl3"]
MODEL_FORMATS: tuple[ModelFormat, ...] = ("gguf", "exl2", "exl3")
OLDER_WORKER_FORMATS: tuple[ModelFormat, ...] = ("gguf",)  # a heartbeat that names none: llama.cpp's
# A file's name in a multi-file model's directory: no path, nothing hidden, no "." or "..", so a
# worker can lay the files out under these names and nowhere else.
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}$")]


class ModelFile(Message):
    """One file of a multi-file model: its name in the model's directory and the blob holding it."""

    name: FileName
    digest: Digest
    size: int = 0


class ModelRef(Message):
    """A model as resolved by the registry: the name the client used, the weights it means,
    and what its manifest says about rendering prompts for it."""

    name: str  # as /api/tags shows it: "smollm2:135m"
    full_name: str  # "registry.ollama.ai/library/smollm2:135m", as Ollama's capability errors say
    # GGUF: the weights layer's, content-addressing the file in blobs/. A multi-file model: the
    # digest of its file set (names and digests, see the registry's store), naming no blob: what
    # placement and residency key on.
    digest: Digest
    size: int
    format: ModelFormat = "gguf"
    files: list[ModelFile] = Field(default_factory=list)  # exl2/exl3: every file of the directory
    manifest_digest: str = ""  # sha256 hex of the manifest: the model's id in /api/tags, /api/ps
    details: ModelDetails = Field(default_factory=ModelDetails)
    template: str | None = None  # Ollama (Go) template layer; None: the GGUF's own chat template
    system: str | None = None  # system layer: the default system prompt
    parameters: Options | None = None  # params layer: the model's default options
    capabilities: list[Capability] = Field(default_factory=list)
    context_length: int | None = None  # tokens it was trained on; num_ctx never exceeds it
    messages: list[ChatMessage] = Field(default_factory=list)  # messages layer: put before a chat's
    shape: ModelShape | None = None  # from the GGUF, for the memory estimate; None: not known

    @model_validator(mode="after")
    def _files_fit_the_format(self) -> ModelRef:
        names = [file.name for file in self.files]
        if len(set(names)) != len(names):
            raise ValueError("a model's file names must be unique")
        if self.format == "gguf" and self.files:
            raise ValueError("a gguf model is one file: it lists no files")
        if self.format != "gguf" and not self.files:
            raise ValueError(f"an {self.format} model lists its files")
        return self


Think = bool | Literal["low", "medium", "high", "max"]


class GenerationRequest(Message):
    """One /api/generate, /api/chat or /api/embed call, as it waits in the CORRAL_REQ stream."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: Literal["generate", "chat", "embed"]
    # load/unload: the model only (empty input); render: the prompt only (_debug_render_only)
    action: Literal["generate", "load", "unload", "render"] = "generate"
    model: ModelRef
    # generate
    prompt: str = ""
    system: str | None = None
    template: str | None = None  # the request's own (Go) template, replacing the model's
    suffix: str | None = None
    context: list[int] | None = None  # tokens a previous generate returned, to continue from
    raw: bool = False
    # chat
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    # embed
    input: list[str] = Field(default_factory=list)
    dimensions: int | None = None
    # every kind
    format: str | dict[str, Any] | None = None  # "json" or a JSON Schema
    think: Think | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    truncate: bool = True  # cut a prompt longer than num_ctx (False: refuse it)
    shift: bool = True  # make room when generation fills the context (False: stop, "length")
    options: Options = Field(default_factory=Options)
    keep_alive: float | None = None
    reply_subject: str
    client_id: str = ""  # the client's X-Request-Id: how it finds its place in the queue

    def options_for(self, model_parameters: Options | None) -> Options:
        """The options this request runs with: Ollama's defaults, the model's, then its own."""
        return DEFAULT_OPTIONS.merged(model_parameters, self.options)


class Started(Message):
    """The worker has taken the request: queue wait and model load are over."""

    kind: Literal["started"] = "started"
    worker_id: str = ""  # who runs it: the gateway asks that worker when the stream falls silent


class TokenLogprob(Message):
    token: str
    logprob: float
    bytes: list[int] | None = None


class Logprob(TokenLogprob):
    top_logprobs: list[TokenLogprob] | None = None


class Chunk(Message):
    """Generated output since the previous chunk (several tokens when the reader lagged).

    `seq` numbers a request's chunks 1, 2, 3, … as the worker sent them: a reader that sees
    a number skipped knows the stream was cut (a broker restart drops core messages)."""

    kind: Literal["chunk"] = "chunk"
    seq: int = 0
    text: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] | None = None
    logprobs: list[Logprob] | None = None


class Done(Message):
    """The end of an answer; `chunks` is how many chunks the worker sent before it, so `done`
    means the whole answer arrived."""

    kind: Literal["done"] = "done"
    done_reason: Literal["stop", "length", "load", "unload", "cancel", "render"]
    chunks: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    context: list[int] | None = None  # generate (not raw): prompt and answer tokens, to continue
    rendered: str | None = None  # "render": the prompt the model's template made, nothing generated


class Embeddings(Message):
    kind: Literal["embeddings"] = "embeddings"
    embeddings: list[list[float]]
    prompt_eval_count: int = 0


class Failed(Message):
    kind: Literal["failed"] = "failed"
    error: str
    code: ErrorCode = "internal"


Reply = Annotated[Started | Chunk | Done | Embeddings | Failed, Field(discriminator="kind")]
REPLY = TypeAdapter(Reply)


class Device(Message):
    id: str  # "cpu", "cuda:0", …
    kind: Literal["cpu", "cuda"]
    name: str = ""  # as the driver names it ("NVIDIA GeForce RTX 4090"); "" for the CPU
    free_memory: int  # bytes
    total_memory: int = 0  # bytes; 0 when unknown


def instance_id(digest: str, num_ctx: int, replica: int = 1) -> str:
    """The name of an instance on its worker: its weights, its context and, for a second or later
    instance of those on the same worker, which one. A scheduler picks the names (`LoadCommand.
    instance`); a peer that names none (an older one) means the first: `instance_id(digest, num_ctx)`."""
    name = f"{digest.removeprefix('sha256:')[:12]}-{num_ctx}"
    return name if replica == 1 else f"{name}-{replica}"


class ResidentModel(Message):
    """A model instance held by a worker: weights plus `slots` contexts of `num_ctx` tokens."""

    name: str
    instance: str = ""  # its name on the worker; "" (an older worker): instance_id(digest, num_ctx)
    digest: str  # the weights' (what placement keys on)
    model_digest: str = ""  # the manifest's, as /api/ps shows it
    details: ModelDetails = Field(default_factory=ModelDetails)
    num_ctx: int
    size: int
    size_vram: int = 0
    slots: int
    busy: int = 0
    loading: bool = False
    keep_alive: float
    expires_at: float | None = None  # None while busy or loading, or when kept forever
    placement: dict[str, int] = Field(default_factory=dict)  # bytes held on each device ("cuda:0": …)

    @property
    def id(self) -> str:
        """Its name on the worker, also when an older worker names none."""
        return self.instance or instance_id(self.digest, self.num_ctx)


class WorkerState(Message):
    """A worker's heartbeat: everything the scheduler needs to place work on it.

    `seq` grows with every state change, so a receiver can drop a stale snapshot
    that arrives after a newer one.
    """

    worker_id: str
    seq: int
    engine: str
    devices: list[Device]
    resident: list[ResidentModel] = Field(default_factory=list)
    # The model formats its engines run; an older worker, which does not say, runs GGUF only.
    formats: list[ModelFormat] = Field(default_factory=lambda: list(OLDER_WORKER_FORMATS))


class LoadCommand(Message):
    """Load `model` as an instance of `slots` sequences of `num_ctx` tokens each.

    `keep_alive` is the request's own (None: the worker's OLLAMA_KEEP_ALIVE applies)."""

    model: ModelRef
    num_ctx: int
    slots: int
    keep_alive: float | None = None
    request_id: str = ""  # the request it is loaded for: its keep_alive waits for that request
    # Bytes planned on each of the worker's devices ("cpu", "cuda:0", …), as placement split the
    # estimate; empty: the worker decides alone.
    split: dict[str, int] = Field(default_factory=dict)
    # Its name on the worker (`instance_id`), chosen by the scheduler so that a worker can hold
    # several instances of one model (a replica on another GPU); "": instance_id(digest, num_ctx).
    instance: str = ""

    @property
    def id(self) -> str:
        return self.instance or instance_id(self.model.digest, self.num_ctx)


class UnloadCommand(Message):
    """Unload instance `instance` of `digest` when it is idle; every instance of `digest` when
    `instance` is "" (an unload request, or an older scheduler)."""

    digest: str
    instance: str = ""


class CancelCommand(Message):
    """Stop `request_id`: its client has gone (no answer is sent)."""

    request_id: str


class RunCommand(Message):
    """Run `request` on the worker's instance `instance` (its model with `num_ctx` tokens); an
    older scheduler names none: then any instance of its model with `num_ctx` that has a free slot."""

    request: GenerationRequest
    num_ctx: int
    instance: str = ""


class PingRequest(Message):
    """A gateway whose stream fell silent asks the worker: are you still running `request_id`?
    The answer is a CommandResult, `ok` when it is."""

    request_id: str = ""


class TakenRequest(Message):
    """A scheduler taking over the queue asks a worker which of `request_ids` it has taken."""

    request_ids: list[str] = Field(default_factory=list)


class TakenResult(Message):
    request_ids: list[str] = Field(default_factory=list)  # those it has run or is running


class CommandResult(Message):
    """A worker's answer to run / load / unload: whether it did it, and its state afterwards."""

    ok: bool
    error: str | None = None
    state: WorkerState | None = None


class ResolveRequest(Message):
    name: str


class ResolveResult(Message):
    """`model` is None when the name is unknown or invalid; then `error` and `code` say which."""

    model: ModelRef | None = None
    error: str | None = None
    code: ErrorCode = "internal"


class CopyRequest(Message):
    source: str
    destination: str


class DeleteRequest(Message):
    name: str


class RegistryResult(Message):
    """The registry's answer to a change of the store: done, or Ollama's error and its code."""

    error: str | None = None
    code: ErrorCode = "internal"


class BlobRequest(Message):
    """Ask whether blob `digest` ("sha256:<hex>") is stored, or open an upload of it."""

    digest: str


class BlobUpload(Message):
    """An opened upload: send the bytes in order to `subject`, each message at most
    `chunk_size` bytes with its offset in the UPLOAD_OFFSET header, then an empty one with
    UPLOAD_END set. `exists` means the blob is stored already and nothing need be sent."""

    exists: bool = False
    subject: str = ""
    error: str | None = None
    code: ErrorCode = "internal"


class Tracked(Message):
    """A registry job whose Progress goes to `reply_subject`, one message at a time, the last
    with `done`; the registry's answer to the request itself only says it took the job."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    reply_subject: str = ""


class CreateModelRequest(Tracked):
    """/api/create as the registry takes it: the layers come from `from_model` (a stored model)
    or `files` (uploaded blobs: relative file name -> "sha256:<hex>"); the rest replaces or adds
    the text layers. `license` is every license text, in order."""

    name: str
    from_model: str = ""
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    draft_files: dict[str, str] | None = None
    template: str = ""
    system: str = ""
    license: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)  # typed as the gateway checked them
    messages: list[ChatMessage] = Field(default_factory=list)
    quantize: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""


class TransferRequest(Tracked):
    """Pull `name` from its registry into the store, or push it there (`insecure`: plain http)."""

    name: str
    insecure: bool = False


class Progress(Message):
    """One step of a pull or push, as Ollama's ProgressResponse: a status, and for a layer its
    digest and bytes (`total`, `completed`). The last message has `done`, and an error if it
    failed."""

    status: str = ""
    digest: str | None = None
    total: int | None = None
    completed: int | None = None
    done: bool = False
    error: str | None = None
    code: ErrorCode = "internal"


class CatalogRequest(Message):
    """Ask the registry for every model it holds."""


class CatalogEntry(Message):
    name: str
    namespace: str = ""  # "library" for Ollama's own models: OpenAI's `owned_by`
    digest: str  # manifest sha256 hex, as /api/tags shows it
    size: int
    modified_at: float
    details: ModelDetails = Field(default_factory=ModelDetails)
    # Only /api/tags gives these (Ollama's model list reads them from the GGUF).
    context_length: int = 0  # trained
    embedding_length: int = 0
    capabilities: list[Capability] = Field(default_factory=list)


class ShowRequest(Message):
    name: str
    verbose: bool = False


class TensorInfo(Message):
    """One tensor of a model file, as /api/show lists it."""

    name: str
    type: str  # GGML's name: "Q4_K", "F32", …
    shape: list[int]


class ShowResult(Message):
    """What /api/show tells of a model; `model` is None when the name is unknown or invalid."""

    model: ModelRef | None = None
    error: str | None = None
    code: ErrorCode = "internal"
    details: ModelDetails = Field(default_factory=ModelDetails)
    model_info: dict[str, Any] = Field(default_factory=dict)
    parameters: str = ""
    license: str = ""
    modelfile: str = ""
    modified_at: float = 0.0
    tensors: list[TensorInfo] = Field(default_factory=list)


class CatalogList(Message):
    models: list[CatalogEntry] = Field(default_factory=list)


class MetricsSnapshot(Message):
    """One process's metrics at a scrape, in Prometheus's text format (answer to METRICS_SCRAPE)."""

    service: str  # its service.name: "corral-worker"
    instance: str  # its service.instance.id: "<host>-<pid>"
    text: str


class QueueRequest(Message):
    """A question to the scheduler: the queue, and where the request `client_id` waits in it."""

    client_id: str = ""


class WaitingModel(Message):
    name: str
    waiting: int
    reasons: dict[str, int]  # why they wait ("model loading", "all slots busy", …): how many


class QueueState(Message):
    """Requests waiting for a worker (those being handed to one are not counted), by model."""

    waiting: int
    models: list[WaitingModel] = Field(default_factory=list)
    # the asked request: its place among those waiting for the same model (1: next), or None
    position: int | None = None
    model: str = ""
    reason: str = ""
