"""The bodies of the OpenAI and Anthropic routes, for the OpenAPI document only.

Those routes read their bodies as dicts and translate them by hand, with Ollama's checks and error
texts (`openai_format`, `responses_format`, `anthropic_format`); nothing parses with these models.
They describe what a route accepts (the fields it reads, with the types Ollama's Go structs give
them), so the document shows a body and a fuzzer generates ones the route takes. Fields a route
ignores may be sent too (`extra="allow"`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.gateway.bodies import GO_DURATION

# A Go duration ("5m") or seconds; negative: forever.
KeepAlive = Annotated[str, Field(pattern=GO_DURATION)] | float | None
ToolChoice = Literal["auto", "none"] | None  # other choices are refused


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


# ---- OpenAI: /v1/chat/completions, /v1/completions, /v1/embeddings


class ImageUrl(_Doc):
    url: str


class ContentPart(_Doc):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: str | ImageUrl | None = None


class FunctionCall(_Doc):
    name: str = ""
    arguments: str = "{}"  # a JSON object, as a string


class OpenAIToolCall(_Doc):
    id: str | None = None
    type: str = "function"
    function: FunctionCall


class OpenAIMessage(_Doc):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart]  # may be null only beside tool_calls
    name: str | None = None
    reasoning: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Doc):
    include_usage: bool = False


class JsonSchemaFormat(_Doc):
    name: str = ""
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Doc):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class Reasoning(_Doc):
    effort: str | None = None
    summary: str | None = None


class _Sampling(_Doc):
    model: str
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    keep_alive: KeepAlive = None


class ChatCompletionBody(_Sampling):
    messages: list[OpenAIMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    n: Literal[1] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice = None
    response_format: ResponseFormat | None = None
    reasoning_effort: str | None = None
    reasoning: Reasoning | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class CompletionBody(_Sampling):
    prompt: str = ""
    suffix: str | None = None
    logprobs: int | None = None


class OpenAIEmbeddingBody(_Doc):
    model: str
    input: str | list[str]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] | None = None
    keep_alive: KeepAlive = None


# ---- OpenAI: /v1/responses


class TextFormat(_Doc):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextOptions(_Doc):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesItem(_Doc):
    """An input item: a message (with input_text / output_text / input_image parts), a
    function_call, its function_call_output, or a reasoning item."""

    type: Literal["message", "function_call", "function_call_output", "reasoning"]
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[dict[str, Any]] | None = None


class ResponsesBody(_Doc):
    model: str
    input: str | list[ResponsesItem]
    instructions: str | None = None
    stream: bool | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice = None
    text: TextOptions | None = None
    reasoning: Reasoning | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    keep_alive: KeepAlive = None


# ---- Anthropic: /v1/messages


class AnthropicMessage(_Doc):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]  # text, image, tool_use, tool_result, thinking blocks


class AnthropicTool(_Doc):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ThinkingConfig(_Doc):
    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = None


class OutputConfig(_Doc):
    effort: str | None = None


class Metadata(_Doc):
    user_id: str | None = None


class MessagesBody(_Doc):
    model: str
    max_tokens: int
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: ThinkingConfig | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    keep_alive: KeepAlive = None
