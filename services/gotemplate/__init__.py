"""Ollama's prompt templates, rendered as Ollama renders them: Go's text/template in pure Python.

A leaf library (standard library only). Two layers:

- Go's text/template: `parse(text)` gives a `Template` (or raises `TemplateError`, a ValueError,
  with Go's message); `Template.execute(data)` runs it over Python data with Go's semantics
  (see `values` for how dicts, lists and the `GoStruct` / `GoValue` wrappers stand for Go values;
  `marshal` is Go's json.Marshal). Supported: text, `{{- -}}` trimming, comments, pipelines,
  parenthesised pipelines, variables (`:=`, `=`, `$`), field chains, if/else if/else, range (with
  else, break, continue, over slices, maps and ints), with/else with, all literals, and the
  builtins and, or, not, eq, ne, lt, le, gt, ge, len, index, slice, print, printf, println, html,
  js and urlquery, plus Ollama's json, currentDate, yesterdayDate and toTypeScriptType. Not
  supported: define, template, block, call, methods, complex numbers.
- Ollama's rules on top: `render(template, Values(...))` is Template.Execute (including the legacy
  System/Prompt/Response replay), `render_chat` is chatPrompt (truncation to num_ctx, image tags)
  and `render_generate` builds /api/generate's prompt. `Template.variables()` is Template.Vars()
  (capabilities: "tools", "suffix") and `Template.thinking_tags()` is thinking.InferTags.
"""

from .errors import ExecError, TemplateError
from .gojson import marshal
from .ollama import IMAGE_TOKENS, Prompt, Think, Values, collate, render, render_chat, render_generate
from .ollama_types import Message, ToolCall
from .template import Template, parse
from .values import GoStruct, GoValue

__all__ = [
    "IMAGE_TOKENS",
    "ExecError",
    "GoStruct",
    "GoValue",
    "Message",
    "Prompt",
    "Template",
    "TemplateError",
    "Think",
    "ToolCall",
    "Values",
    "collate",
    "marshal",
    "parse",
    "render",
    "render_chat",
    "render_generate",
]
