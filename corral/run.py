"""`corral run`, as cmd.go's RunHandler does it: the model shown (pulled first when it is not
here), then one answer through /api/generate, an embedding, or the conversation (corral.repl)
whose turns go through /api/chat.

The request bodies are pure functions of `RunOptions` (cmd.go's runOptions); the rest talks
to the server and prints through a `Screen`: the answer on stdout, progress, statistics and
warnings on stderr.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from corral import transfer
from corral.bars import Progress, terminal_size
from corral.client import Client, ClientError
from corral.display import Answer, WrapState, display_response, summary
from corral.flags import Think
from services.gotemplate.gojson import json_float
from services.gotemplate.gostr import quote
from services.registry.names import InvalidName, parse_name

NOT_FOUND = 404


@dataclass
class RunOptions:
    model: str
    parent_model: str = ""
    loaded_messages: list[dict[str, Any]] = field(default_factory=list)  # the model's MESSAGEs
    prompt: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)  # this session's, system ones too
    word_wrap: bool = False
    format: str = ""
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    keep_alive: str | None = None
    think: Think | None = None
    hide_thinking: bool = False
    verbose: bool = False  # Ollama keeps this in its --verbose flag, which /set verbose sets

    def copy(self) -> RunOptions:
        return copy.deepcopy(self)


@dataclass
class Screen:
    """Where `run` writes: the answer to `out`, the rest to `err`."""

    out: TextIO
    err: TextIO

    @property
    def tty(self) -> bool:
        return self.out.isatty()

    def width(self) -> int:
        return terminal_size(self.out)[0]

    def write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()

    def warn(self, text: str) -> None:
        self.err.write(text)
        self.err.flush()

    @contextmanager
    def waiting(self) -> Iterator[Progress | None]:
        """cmd.go's spinner on stderr until the first words come (on a terminal only); the
        caller clears it earlier with stop_and_clear."""
        progress = Progress(self.err) if self.err.isatty() else None
        if progress is not None:
            progress.spinner("")
        try:
            yield progress
        finally:
            if progress is not None:
                progress.stop_and_clear()


def prompt_of(args: list[str], piped: str | None) -> list[str]:
    """RunHandler's prompts: what came on stdin (when anything did) first, then the arguments;
    they are joined with a space."""
    return [piped, *args] if piped else list(args)


def _format(text: str) -> Any:
    """--format / `/set format`: `json`, or a JSON schema sent as it is (json.RawMessage)."""
    if text == "json":
        return "json"
    try:
        return json.loads(text)
    except ValueError:
        return text


def _common(opts: RunOptions, body: dict[str, Any]) -> dict[str, Any]:
    """The fields Ollama's client leaves out when empty (omitempty)."""
    if opts.format:
        body["format"] = _format(opts.format)
    if opts.options:
        body["options"] = opts.options
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    if opts.think is not None:
        body["think"] = opts.think
    return body


def generate_body(opts: RunOptions) -> dict[str, Any]:
    body: dict[str, Any] = {"model": opts.model, "prompt": opts.prompt}
    if opts.system:
        body["system"] = opts.system
    return _common(opts, body)


def chat_body(opts: RunOptions) -> dict[str, Any]:
    return _common(opts, {"model": opts.model, "messages": list(opts.messages)})


def load_body(opts: RunOptions) -> dict[str, Any]:
    """loadOrUnloadModel: no prompt, and `think` so a model that cannot think fails here."""
    body: dict[str, Any] = {"model": opts.model}
    if opts.keep_alive is not None:
        body["keep_alive"] = opts.keep_alive
    if opts.think is not None:
        body["think"] = opts.think
    return body


def embed_body(
    model: str, text: str, keep_alive: str | None, truncate: bool | None, dimensions: int
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": text}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if truncate is not None:
        body["truncate"] = truncate
    if dimensions > 0:
        body["dimensions"] = dimensions
    return body


def _valid_name(name: str) -> bool:
    try:
        parse_name(name)
    except InvalidName:
        return False
    return bool(name)


def create_body(name: str, opts: RunOptions) -> dict[str, Any]:
    """interactive.go's NewCreateRequest for `/save`: FROM the parent model (or this one), with
    the session's system message, parameters, and messages after the model's own."""
    parent = opts.parent_model if _valid_name(opts.parent_model) else ""
    body: dict[str, Any] = {"model": name, "from": parent or opts.model}
    if opts.system:
        body["system"] = opts.system
    if opts.options:
        body["parameters"] = opts.options
    messages = [*opts.loaded_messages, *opts.messages]
    if messages:
        body["messages"] = messages
    return body


def infer_think(capabilities: list[str], think: Think | None, explicit: bool) -> Think | None:
    """inferThinkingOption: what the user said, else on for a model that thinks, else unset."""
    if explicit:
        return think
    return True if "thinking" in capabilities else None


def apply_show(opts: RunOptions, shown: dict[str, Any]) -> None:
    """applyShowResponseToRunOptions."""
    opts.parent_model = str((shown.get("details") or {}).get("parent_model") or "")
    opts.loaded_messages = list(shown.get("messages") or [])


def show(client: Client, name: str, opts: RunOptions | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": name}
    if opts is not None:
        body |= {"system": opts.system, "options": opts.options}
    shown: dict[str, Any] = client.post("/api/show", body)
    return shown


def show_or_pull(client: Client, name: str, insecure: bool, screen: Screen) -> dict[str, Any]:
    """showOrPullModel: a model that is not here is pulled (with its progress), then shown."""
    try:
        return show(client, name)
    except ClientError as exc:
        if exc.status != NOT_FOUND:
            raise
    transfer.show(client.stream("/api/pull", {"model": name, "insecure": insecure}), "pull", screen.err)
    return show(client, name)


def ensure_thinking_support(client: Client, name: str, screen: Screen) -> None:
    try:
        shown = show(client, name)
    except ClientError:
        return
    if "thinking" not in (shown.get("capabilities") or []):
        screen.warn(f"warning: model {quote(name)} does not support thinking output\n")


def load_model(client: Client, opts: RunOptions, screen: Screen) -> None:
    with screen.waiting():
        for _ in client.stream("/api/generate", load_body(opts)):
            pass


def print_loaded_messages(opts: RunOptions, screen: Screen) -> None:
    """The model's own MESSAGEs, shown before the prompt as RunHandler shows them."""
    for message in opts.loaded_messages:
        if message.get("role") == "user":
            screen.write(f">>> {message.get('content', '')}\n")
        elif message.get("role") == "assistant":
            content = str(message.get("content", ""))
            screen.write(display_response(content, opts.word_wrap, WrapState(), screen.width()) + "\n\n")


def _stream_answer(
    client: Client, path: str, body: dict[str, Any], opts: RunOptions, screen: Screen
) -> tuple[Answer, dict[str, Any]]:
    """Print a streamed answer; returns it, and the last chunk (done, with the statistics)."""
    answer = Answer(opts.word_wrap, screen.width(), plain=not screen.tty, hide_thinking=opts.hide_thinking)
    chatting = path == "/api/chat"  # a chat's words are in `message`, a generation's in `response`
    latest: dict[str, Any] = {}
    with screen.waiting() as waiting:
        stream = client.stream(path, body)
        try:
            for chunk in stream:
                part = (chunk.get("message") or {}) if chatting else chunk
                content = str(part.get("content" if chatting else "response") or "")
                thinking = str(part.get("thinking") or "")
                if waiting is not None and (content or not opts.hide_thinking):
                    waiting.stop_and_clear()
                    waiting = None
                latest = chunk
                screen.write(answer.feed(thinking, content))
        finally:
            stream.close()  # a Ctrl-C closes the connection: the server cancels the generation
    return answer, latest


def generate(client: Client, opts: RunOptions, screen: Screen) -> None:
    """cmd.go's generate: one answer, a blank line after it, and the statistics if asked."""
    _, latest = _stream_answer(client, "/api/generate", generate_body(opts), opts, screen)
    if opts.prompt:
        screen.write("\n\n")
    if latest.get("done") and opts.verbose:
        screen.warn(summary(latest))


def chat(client: Client, opts: RunOptions, screen: Screen) -> dict[str, Any]:
    """cmd.go's chat: one turn of the conversation; returns the assistant's message."""
    answer, latest = _stream_answer(client, "/api/chat", chat_body(opts), opts, screen)
    if opts.messages:
        screen.write("\n\n")
    if opts.verbose:
        screen.warn(summary(latest))
    message: dict[str, Any] = {"role": (latest.get("message") or {}).get("role") or "assistant"}
    if answer.thinking:
        message["thinking"] = answer.thinking
    message["content"] = answer.content
    return message


def embed(client: Client, opts: RunOptions, truncate: bool | None, dimensions: int, screen: Screen) -> None:
    """generateEmbedding: the first embedding of the prompt, as Go's json.Marshal writes it."""
    name = opts.model
    if not opts.prompt:
        raise ClientError(f'embedding models require input text. Usage: corral run {name} "your text here"')
    answer = client.post("/api/embed", embed_body(name, opts.prompt, opts.keep_alive, truncate, dimensions))
    embeddings = answer.get("embeddings") or []
    if not embeddings:
        raise ClientError("no embeddings returned")
    screen.write("[" + ",".join(json_float(float(v)) for v in embeddings[0]) + "]\n")
