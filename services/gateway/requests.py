"""Native request bodies → GenerationRequest: Ollama's checks, one place for every API flavour.

The OpenAI and Anthropic routes translate their bodies into the native ones and
come through here too, so a rule (what a model can do, what empty input means)
is written once.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from services.gateway.bodies import (
    ChatBody,
    EmbedBody,
    EmbeddingsBody,
    GenerateBody,
    check_top_logprobs,
    has_images,
    parse_format,
    parse_keep_alive_field,
    parse_messages,
    parse_options,
    parse_think,
)
from services.gateway.errors import BadRequest, NotFound
from services.gateway.state import GatewayState
from services.protocol import GenerationRequest, ModelRef
from services.protocol.messages import Capability, Think

Action = Literal["generate", "load", "unload", "render"]


async def generate_request(state: GatewayState, body: GenerateBody) -> GenerationRequest:
    check_top_logprobs(body.top_logprobs)
    if not body.model.strip():
        raise NotFound("model '' not found")
    keep_alive = parse_keep_alive_field(body.keep_alive)
    model = await state.resolve(body.model)
    if body.raw and (body.template or body.system or body.context):
        raise BadRequest("raw mode does not support template, system, or context")
    think = _think(model, body.model, parse_think(body.think))
    wanted: list[Capability] = ["completion"]
    if body.suffix:
        wanted.append("insert")
    if body.images:
        wanted.append("vision")
    _require(model, body.model, "generate", wanted)
    return GenerationRequest(
        kind="generate",
        action=_action(bool(body.prompt), keep_alive, body.debug_render_only),
        model=model,
        prompt=body.prompt,
        system=body.system,
        template=body.template,
        suffix=body.suffix,
        context=body.context,
        raw=body.raw,
        **_generation_fields(body, think, keep_alive),
    )


async def chat_request(
    state: GatewayState, body: ChatBody, relax_thinking: bool = False
) -> GenerationRequest:
    """`relax_thinking`: a model that cannot think ignores `think` (Ollama's rule for Anthropic's
    API) rather than refusing it."""
    check_top_logprobs(body.top_logprobs)
    if not body.model.strip():
        raise BadRequest("model is required")
    keep_alive = parse_keep_alive_field(body.keep_alive)
    messages = parse_messages(body.messages or [])
    model = await state.resolve(body.model)
    think = parse_think(body.think)
    if relax_thinking and "thinking" not in model.capabilities:
        think = None
    think = _think(model, body.model, think)
    wanted: list[Capability] = ["completion"]
    if body.tools:
        wanted.append("tools")
    if has_images(body):
        wanted.append("vision")
    _require(model, body.model, "chat", wanted)
    return GenerationRequest(
        kind="chat",
        action=_action(bool(messages), keep_alive, body.debug_render_only),
        model=model,
        messages=messages,
        tools=body.tools or None,
        **_generation_fields(body, think, keep_alive),
    )


async def embed_request(
    state: GatewayState, inputs: list[str], body: EmbedBody | EmbeddingsBody, truncate: bool
) -> GenerationRequest:
    """Embed `inputs`; with none, the model is only loaded (or unloaded, with keep_alive 0)."""
    if not body.model.strip():
        raise BadRequest("model is required")
    keep_alive = parse_keep_alive_field(body.keep_alive)
    return GenerationRequest(
        kind="embed",
        action=_action(bool(inputs), keep_alive),
        model=await state.resolve(body.model),
        input=inputs,
        truncate=truncate,
        options=parse_options(body.options),
        keep_alive=keep_alive,
        reply_subject="",
    )


def _generation_fields(
    body: GenerateBody | ChatBody, think: Think | None, keep_alive: float | None
) -> dict[str, Any]:
    """What generate and chat requests share, parsed."""
    return {
        "format": parse_format(body.format),
        "think": think,
        "logprobs": body.logprobs,
        "top_logprobs": body.top_logprobs,
        "truncate": body.truncate is not False,
        "shift": body.shift is not False,
        "options": parse_options(body.options),
        "keep_alive": keep_alive,
        "reply_subject": "",
    }


def _think(model: ModelRef, name: str, think: Think | None) -> Think | None:
    """Ollama's rule: a thinking model thinks unless told not to; any other refuses `think`."""
    if "thinking" in model.capabilities:
        return True if think is None else think
    if think not in (None, False):
        raise BadRequest(f"{json.dumps(name)} does not support thinking")
    return None


def _require(model: ModelRef, name: str, route: str, wanted: list[Capability]) -> None:
    """400 with Ollama's texts for what the model cannot do."""
    if "completion" not in model.capabilities:
        raise BadRequest(f"{json.dumps(name)} does not support {route}")
    missing = [c for c in wanted if c not in model.capabilities]
    if missing:
        raise BadRequest(f"{model.full_name} does not support {', '.join(missing)}")


def _action(has_input: bool, keep_alive: float | None, render_only: bool = False) -> Action:
    """Empty input loads the model (done_reason "load"); with keep_alive 0 it unloads it.
    `_debug_render_only` asks for the prompt the template makes, without generating."""
    if has_input:
        return "render" if render_only else "generate"
    return "unload" if keep_alive == 0 else "load"
