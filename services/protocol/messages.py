"""The wire contract: every message that crosses NATS between corral's services.

Times are float seconds since the epoch (`time.time()`) when they name a moment,
and integer nanoseconds when they are Ollama statistics. `keep_alive` is float
seconds, negative meaning forever (see `durations`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

Role = Literal["system", "user", "assistant", "tool"]


class Message(BaseModel):
    """A model's wire message: ignores fields it does not know, so newer peers can add some."""

    model_config = ConfigDict(extra="ignore")

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class Options(Message):
    """The Modelfile options corral honours (api.Options); defaults are Ollama's DefaultOptions()."""

    num_predict: int = -1
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    stop: list[str] = Field(default_factory=list)
    num_ctx: int | None = None


class ChatMessage(Message):
    role: Role
    content: str = ""


class ModelRef(Message):
    """A model as resolved by the registry: the name the client used and the weights it means."""

    name: str
    digest: str  # sha256:<hex> of the weights layer; content-addresses the file in blobs/
    size: int


class GenerationRequest(Message):
    """One /api/generate or /api/chat call, as it waits in the CORRAL_REQ stream."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: Literal["generate", "chat"]
    action: Literal["generate", "load", "unload"] = "generate"
    model: ModelRef
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    messages: list[ChatMessage] = Field(default_factory=list)
    options: Options = Field(default_factory=Options)
    keep_alive: float | None = None
    reply_subject: str


class Started(Message):
    """The worker has taken the request: queue wait and model load are over."""

    kind: Literal["started"] = "started"


class Chunk(Message):
    kind: Literal["chunk"] = "chunk"
    text: str


class Done(Message):
    kind: Literal["done"] = "done"
    done_reason: Literal["stop", "length", "load", "unload", "cancel"]
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0


class Failed(Message):
    kind: Literal["failed"] = "failed"
    error: str
    status: int = 500


Reply = Annotated[Started | Chunk | Done | Failed, Field(discriminator="kind")]
REPLY = TypeAdapter(Reply)


class Device(Message):
    id: str  # "cpu", "cuda:0", …
    kind: Literal["cpu", "cuda"]
    free_memory: int  # bytes


class ResidentModel(Message):
    """A model instance held by a worker: weights plus `slots` contexts of `num_ctx` tokens."""

    name: str
    digest: str
    num_ctx: int
    size: int
    size_vram: int = 0
    slots: int
    busy: int = 0
    loading: bool = False
    keep_alive: float
    expires_at: float | None = None  # None while busy or loading, or when kept forever


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


class LoadCommand(Message):
    """Load `model` as an instance of `slots` sequences of `num_ctx` tokens each.

    `keep_alive` is the request's own (None: the worker's OLLAMA_KEEP_ALIVE applies)."""

    model: ModelRef
    num_ctx: int
    slots: int
    keep_alive: float | None = None


class UnloadCommand(Message):
    digest: str


class RunCommand(Message):
    """Run `request` on the worker's resident instance of its model with `num_ctx` tokens."""

    request: GenerationRequest
    num_ctx: int


class CommandResult(Message):
    """A worker's answer to run / load / unload: whether it did it, and its state afterwards."""

    ok: bool
    error: str | None = None
    state: WorkerState | None = None


class ResolveRequest(Message):
    name: str


class ResolveResult(Message):
    """`model` is None when the name is unknown; `error` is set when the name is invalid."""

    model: ModelRef | None = None
    error: str | None = None
    status: int = 200


class CatalogEntry(Message):
    name: str
    digest: str  # manifest sha256 hex, as /api/tags shows it
    size: int
    modified_at: float
    format: str = "gguf"
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""


class CatalogList(Message):
    models: list[CatalogEntry] = Field(default_factory=list)
