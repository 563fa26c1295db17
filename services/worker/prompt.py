"""The tokens a model sees for a request, by Ollama's rules.

- generate, raw: the prompt as written.
- generate: the system prompt (the request's, else the model's) and the prompt as a
  one-turn conversation through the model's template; with `suffix`, the template's
  fill-in-the-middle form; with `context`, those tokens first.
- chat: the messages (the model's system prompt first unless they start with one),
  with tools and the thinking switch, through the model's template.
- A prompt longer than the context is cut as Ollama cuts it (its beginning and its
  end are kept), or refused with Ollama's error when `truncate` is false.

The template is the model's Ollama template (or the request's own), else the chat
template inside the GGUF, else the bare text of the messages. The template also
says how the answer is to be read: its thinking tags, and the tag before a tool call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from services.gotemplate import Message as TemplateMessage
from services.gotemplate import Template, TemplateError, render_generate
from services.gotemplate import ToolCall as TemplateToolCall
from services.gotemplate import parse as parse_template
from services.gotemplate import render_chat as render_template_chat
from services.protocol import ChatMessage, GenerationRequest
from services.protocol.messages import ErrorCode
from services.worker.chat_template import TemplateRenderError, render_chat
from services.worker.engines.batching import truncated_prompt
from services.worker.output import ModelParser, OutputParser, PlainParser
from services.worker.thinking import ThinkingParser
from services.worker.tools import ToolCallParser

INPUT_TOO_LONG = "the input length exceeds the context length"
# Tags Hugging Face chat templates have models write before a tool call.
JINJA_TOOL_TAGS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "<function_call>", "<|tool_call|>")


class PromptError(ValueError):
    """The request cannot become a prompt for this model (`code`: whose fault it is)."""

    def __init__(self, message: str, code: ErrorCode = "invalid") -> None:
        super().__init__(message)
        self.code: ErrorCode = code


class Tokenizer(Protocol):
    metadata: dict[str, str]

    def tokenize(self, text: str, *, add_special: bool) -> list[int]: ...

    def special_text(self, token: int) -> str: ...


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    parser: OutputParser
    truncated: bool = False


@dataclass(frozen=True)
class Rendered:
    text: str
    thinking_tags: tuple[str, str] = ("", "")  # the template's (opening, closing) tags, if any
    tool_tag: str = "{"  # what the model writes before a tool call


def build_prompt(request: GenerationRequest, tokenizer: Tokenizer, num_ctx: int, num_keep: int) -> Prompt:
    rendered = render(request, tokenizer, num_ctx)
    if request.kind == "generate" and request.context:
        tokens = [*request.context, *tokenizer.tokenize(rendered.text, add_special=False)]
    else:
        tokens = tokenizer.tokenize(rendered.text, add_special=True)
    tokens, truncated = fit(tokens, num_ctx, num_keep, request.truncate)
    return Prompt(tokens, output_parser(request, rendered), truncated)


def fit(tokens: list[int], num_ctx: int, num_keep: int, truncate: bool) -> tuple[list[int], bool]:
    """`tokens`, cut to leave room in the context for an answer (or refused)."""
    if len(tokens) <= num_ctx - 1:
        return tokens, False
    if not truncate:
        raise PromptError(INPUT_TOO_LONG)
    return truncated_prompt(tokens, num_ctx, num_keep), True


def output_parser(request: GenerationRequest, rendered: Rendered) -> OutputParser:
    """Thinking split off when the request thinks and the template has tags; tool calls found
    when the request offers tools."""
    thinking = None
    opening, closing = rendered.thinking_tags
    if request.think not in (None, False) and opening and closing:
        thinking = ThinkingParser(opening, closing)
        if rendered.text.rstrip().endswith(opening):  # the template opened it: the answer thinks first
            thinking.add(opening)
    tools = ToolCallParser(rendered.tool_tag, request.tools) if request.tools else None
    if thinking is None and tools is None:
        return PlainParser()
    return ModelParser(thinking, tools)


def render(request: GenerationRequest, tokenizer: Tokenizer, num_ctx: int) -> Rendered:
    """The prompt text, before tokenization, and what the template says about the answer."""
    if request.kind == "generate" and request.raw:
        return Rendered(request.prompt)
    source = (request.template if request.kind == "generate" else None) or request.model.template
    if source is not None:
        return _render_go(request, tokenizer, num_ctx, source)
    return _render_jinja(request, tokenizer)


def _render_go(request: GenerationRequest, tokenizer: Tokenizer, num_ctx: int, source: str) -> Rendered:
    """Through an Ollama template, by Ollama's rules (history dropped from the front to fit)."""
    try:
        template = _parse(source)
        count = _token_counter(tokenizer)
        if request.kind == "generate":
            text = render_generate(
                template,
                prompt=request.prompt,
                system=request.system or request.model.system or "",
                suffix=request.suffix or "",
                history=[_template_message(m) for m in _model_messages(request)],
                think=request.think,
                num_ctx=num_ctx,
                count_tokens=count,
                truncate=request.truncate,
            ).text
        else:
            messages = [_template_message(m) for m in conversation(request)]
            text = render_template_chat(
                template,
                messages,
                tools=request.tools,
                think=request.think,
                num_ctx=num_ctx,
                count_tokens=count,
                truncate=request.truncate,
            ).text
    except TemplateError as exc:
        raise PromptError(str(exc), code="internal") from exc
    return Rendered(text, template.thinking_tags(), template.tool_call_tag())


def _render_jinja(request: GenerationRequest, tokenizer: Tokenizer) -> Rendered:
    """Through the GGUF's own chat template (Hugging Face's conventions), or the bare messages."""
    messages = conversation(request)
    template = tokenizer.metadata.get("tokenizer.chat_template")
    if not template:
        return Rendered("\n".join(m.content for m in messages))
    try:
        text = render_chat(
            template,
            messages,
            tools=request.tools,
            think=request.think,
            # The tokenizer adds the start token itself where the model wants one (as
            # llama-server does for Ollama), so templates that write it get it empty.
            bos_token="",
            eos_token=_special_text(tokenizer, "tokenizer.ggml.eos_token_id"),
        )
    except TemplateRenderError as exc:
        raise PromptError(str(exc)) from exc
    thinking = ("<think>", "</think>") if "<think>" in template else ("", "")
    tool_tag = next((tag for tag in JINJA_TOOL_TAGS if tag in template), "{")
    return Rendered(text, thinking, tool_tag)


def conversation(request: GenerationRequest) -> list[ChatMessage]:
    """The messages a template renders, with the system prompt Ollama puts first."""
    system = request.system or request.model.system
    if request.kind == "generate":
        head = [ChatMessage(role="system", content=system)] if system else []
        return [*head, *_model_messages(request), ChatMessage(role="user", content=request.prompt)]
    messages = [*request.model.messages, *request.messages]
    if request.model.system and not (request.messages and request.messages[0].role == "system"):
        messages.insert(0, ChatMessage(role="system", content=request.model.system))
    return messages


def _model_messages(request: GenerationRequest) -> list[ChatMessage]:
    """The model's MESSAGE lines a generate renders: none when it continues a `context`."""
    return list(request.model.messages) if request.context is None else []


@lru_cache(maxsize=32)
def _parse(source: str) -> Template:
    return parse_template(source)


def _token_counter(tokenizer: Tokenizer) -> Callable[[str], int]:
    return lambda text: len(tokenizer.tokenize(text, add_special=True))


def _template_message(message: ChatMessage) -> TemplateMessage:
    calls = tuple(
        TemplateToolCall(c.function.name, c.function.arguments, c.function.index or 0, c.id or "")
        for c in message.tool_calls or []
    )
    return TemplateMessage(
        message.role,
        message.content,
        thinking=message.thinking or "",
        tool_calls=calls,
        tool_name=message.tool_name or "",
        tool_call_id=message.tool_call_id or "",
    )


def _special_text(tokenizer: Tokenizer, key: str) -> str:
    """The written form of a special token named in the model's metadata (bos, eos)."""
    token = tokenizer.metadata.get(key, "")
    if not token.isdigit():
        return ""
    return tokenizer.special_text(int(token))
