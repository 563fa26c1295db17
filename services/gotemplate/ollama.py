"""Ollama's prompt building on top of templates: Template.Execute (template/template.go), chatPrompt
(server/prompt.go) and the /api/generate values (server/routes.go, GenerateHandler).

Three ways to run a template, chosen as Ollama chooses:

1. prompt and suffix both set (fill in the middle): the template sees Prompt, Suffix, Response "".
2. the template uses `.Messages`: it sees System (every system message, joined by a blank line),
   Messages (consecutive messages of one role merged, tool results excepted) and Tools.
3. otherwise (a legacy template): the messages are replayed as System/Prompt/Response turns, the
   template run once per completed turn, and the last turn run on the tree cut after `.Response`,
   so that a trailing assistant message is continued rather than closed.

All three also see Think, ThinkLevel and IsThinkSet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .ollama_types import Message, template_messages, template_tools
from .template import Template, parse
from .walks import cut_after_response

Think = bool | str | None
_THINK_LEVELS = frozenset({"high", "medium", "low", "max"})
# Ollama counts each image as this many tokens when the model has a vision projector.
IMAGE_TOKENS = 768


@dataclass(frozen=True)
class Values:
    """Ollama's template.Values. `tools` are in the API's JSON form; None and [] print differently."""

    messages: Sequence[Message] = ()
    tools: Sequence[Mapping[str, Any]] | None = None
    prompt: str = ""
    suffix: str = ""
    think: Think = None


@dataclass(frozen=True)
class Prompt:
    """A rendered prompt, and the images it refers to: images[i] is the one tagged `[img-i]`."""

    text: str
    images: tuple[bytes, ...] = field(default=())


def think_fields(think: Think) -> dict[str, Any]:
    """Think, ThinkLevel and IsThinkSet from a request's `think` (true, false, "low", ... or absent)."""
    if think is None:
        return {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
    if isinstance(think, bool):
        return {"Think": think, "ThinkLevel": "medium" if think else "", "IsThinkSet": True}
    return {"Think": think in _THINK_LEVELS, "ThinkLevel": think, "IsThinkSet": True}


def collate(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    """All system contents joined by a blank line, and the messages with consecutive same-role ones
    merged (content joined by a blank line, the first one's other fields kept), tool results apart."""
    system = [m.content for m in messages if m.role == "system"]
    collated: list[Message] = []
    for message in messages:
        if collated and collated[-1].role == message.role and message.role != "tool":
            collated[-1] = replace(collated[-1], content=collated[-1].content + "\n\n" + message.content)
        else:
            collated.append(message)
    return "\n\n".join(system), collated


def render(template: Template | str, values: Values) -> str:
    """Ollama's Template.Execute."""
    tmpl = parse(template) if isinstance(template, str) else template
    system, messages = collate(values.messages)
    think = think_fields(values.think)
    if values.prompt and values.suffix:
        data = {"Prompt": values.prompt, "Suffix": values.suffix, "Response": "", **think}
        return tmpl.run(tmpl.ollama_root, data)
    if "messages" in tmpl.variables():
        data = {
            "System": system,
            "Messages": template_messages(messages),
            "Tools": template_tools(values.tools),
            "Response": "",
            **think,
        }
        return tmpl.run(tmpl.ollama_root, data)
    return _render_legacy(tmpl, messages, think)


def _render_legacy(tmpl: Template, messages: Sequence[Message], think: Mapping[str, Any]) -> str:
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(tmpl.run(tmpl.ollama_root, {**turn, **think}))
        turn.update(System="", Prompt="", Response="")

    for message in messages:
        if message.role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = message.content
        elif message.role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = message.content
        elif message.role == "assistant":
            turn["Response"] = message.content
    out.append(tmpl.run(cut_after_response(tmpl.ollama_root), {**turn, **think}))
    return "".join(out)


def render_chat(
    template: Template | str,
    messages: Sequence[Message],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    think: Think = None,
    num_ctx: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    truncate: bool = True,
    tokens_per_image: int = 0,
) -> Prompt:
    """Ollama's chatPrompt: the prompt for the next chat turn, oldest messages dropped to fit.

    `messages` as Ollama's ChatHandler assembles them: the model's SYSTEM first unless the request
    starts with a system message, then the model's MESSAGE history, then the request's messages.
    With `truncate`, `num_ctx` and `count_tokens`, messages are dropped from the front, one at a
    time, until the rendered prompt (plus `tokens_per_image` per remaining image; Ollama uses
    IMAGE_TOKENS when the model has a vision projector) fits in num_ctx tokens. System messages
    among the dropped ones are kept, and the last message always stays. Then each remaining
    message's images are numbered and tagged in its content: `[img]` placeholders are replaced in
    order, and tags for the others are put in front.
    """
    tmpl = parse(template) if isinstance(template, str) else template
    msgs = list(messages)
    start, system = 0, []
    if truncate and num_ctx is not None and count_tokens is not None:
        for i in range(len(msgs)):
            system = [m for m in msgs[:i] if m.role == "system"]
            text = render(tmpl, Values(system + msgs[i:], tools, think=think))
            used = count_tokens(text) + tokens_per_image * sum(len(m.images) for m in msgs[i:])
            if used <= num_ctx or i == len(msgs) - 1:
                start = i
                break
    tagged, images = _tag_images(msgs[start:])
    return Prompt(render(tmpl, Values(system + tagged, tools, think=think)), images)


def _tag_images(messages: Sequence[Message]) -> tuple[list[Message], tuple[bytes, ...]]:
    images: list[bytes] = []
    tagged = []
    for message in messages:
        prefix, content = "", message.content
        for image in message.images:
            tag = f"[img-{len(images)}]"
            images.append(image)
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
        tagged.append(replace(message, content=prefix + content))
    return tagged, tuple(images)


def render_generate(
    template: Template | str,
    *,
    prompt: str,
    system: str = "",
    suffix: str = "",
    images: Sequence[bytes] = (),
    history: Sequence[Message] = (),
    think: Think = None,
    request_template: Template | str | None = None,
    num_ctx: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    truncate: bool = True,
    tokens_per_image: int = 0,
) -> Prompt:
    """The prompt /api/generate sends (non-raw), as Ollama's GenerateHandler builds it.

    `system` is the request's system prompt, or else the model's SYSTEM; `history` the model's
    MESSAGE lines. With a suffix, the template runs on Prompt and Suffix alone (no system, no
    history). Otherwise the system, history and user prompt (with its images) become messages: with
    the model's template they go through render_chat's truncation and image tagging, with no tools
    (an empty list); with a `request_template` they are rendered directly, untagged.
    """
    if suffix:
        tmpl = request_template if request_template is not None else template
        return Prompt(render(tmpl, Values(prompt=prompt, suffix=suffix, think=think)), tuple(images))
    messages = [Message("system", system)] if system else []
    messages += [*history, Message("user", prompt, images=tuple(images))]
    if request_template is not None:
        return Prompt(render(request_template, Values(messages, think=think)), tuple(images))
    return render_chat(
        template,
        messages,
        tools=[],
        think=think,
        num_ctx=num_ctx,
        count_tokens=count_tokens,
        truncate=truncate,
        tokens_per_image=tokens_per_image,
    )
