"""Rendering a model's own chat template (GGUF `tokenizer.chat_template`), sandboxed.

Templates come with model files, i.e. from the internet, so they run in Jinja's
immutable sandbox: no attribute access to Python internals, no mutation.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.protocol import ChatMessage


class TemplateRenderError(ValueError):
    """The model's template failed on these messages (it may reject a role order, say)."""


def _raise(message: str) -> None:
    raise TemplateRenderError(message)


@lru_cache(maxsize=16)
def _compile(source: str):  # type: ignore[no-untyped-def]
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, undefined=Undefined, keep_trailing_newline=True
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def render_chat(
    template: str,
    messages: list[ChatMessage],
    *,
    tools: list[dict[str, Any]] | None = None,
    think: bool | str | None = None,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    """Render as Hugging Face's apply_chat_template does: `enable_thinking` carries `think`, and a
    level ("low", "medium", "high"; "max" as "high") is also `reasoning_effort`, the variable
    templates with effort levels read (gpt-oss's)."""
    extra: dict[str, Any] = {} if think is None else {"enable_thinking": bool(think)}
    if isinstance(think, str):
        extra["reasoning_effort"] = "high" if think == "max" else think
    try:
        return str(
            _compile(template).render(
                messages=[m.model_dump(exclude_none=True) for m in messages],
                tools=tools or None,
                bos_token=bos_token,
                eos_token=eos_token,
                add_generation_prompt=add_generation_prompt,
                **extra,
            )
        )
    except TemplateRenderError:
        raise
    except TemplateError as exc:
        raise TemplateRenderError(f"chat template failed: {exc}") from exc


__all__ = ["TemplateRenderError", "render_chat"]
