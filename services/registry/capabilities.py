"""What a model can do, derived once from its files (Ollama's Model.Capabilities()).

- completion, or embedding when the GGUF declares a pooling type;
- vision when the GGUF has a vision tower or the manifest a projector;
- tools, insert and thinking from the template that renders its prompts: the
  Ollama (Go) template when the manifest has one, else the GGUF's chat template.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from services.gotemplate import TemplateError
from services.gotemplate import parse as parse_template
from services.protocol.messages import Capability

# For a GGUF's Jinja chat template (Hugging Face's conventions).
_JINJA_TOOLS = re.compile(r"\btools\b")
_JINJA_THINKING = re.compile(r"<think>|enable_thinking|reasoning_content")


def capabilities(
    metadata: Mapping[str, Any],
    go_template: str | None,
    has_projector: bool,
) -> list[Capability]:
    found: list[Capability] = []
    architecture = str(metadata.get("general.architecture", ""))
    if any(key.endswith(".pooling_type") for key in metadata):
        found.append("embedding")
    else:
        found.append("completion")
    if has_projector or f"{architecture}.vision.block_count" in metadata or "vision.block_count" in metadata:
        found.append("vision")
    if go_template is not None:
        from_template = go_template_capabilities(go_template)
    else:
        from_template = jinja_capabilities(str(metadata.get("tokenizer.chat_template", "")))
    found += [c for c in ("tools", "insert", "thinking") if c in from_template]
    return found


def jinja_capabilities(template: str) -> frozenset[Capability]:
    found: set[Capability] = set()
    if _JINJA_TOOLS.search(template):
        found.add("tools")
    if _JINJA_THINKING.search(template):
        found.add("thinking")
    return frozenset(found)


@lru_cache(maxsize=64)
def go_template_capabilities(text: str) -> frozenset[Capability]:
    """tools and insert from the variables an Ollama template uses; thinking from its think tags.

    Cached: every resolve asks, and parsing a template takes about 2 ms."""
    try:
        template = parse_template(text)
    except TemplateError:
        return frozenset()  # a template that does not parse renders nothing; the worker reports it
    variables = set(template.variables())
    found: set[Capability] = set()
    if "tools" in variables:
        found.add("tools")
    if "suffix" in variables:
        found.add("insert")
    if all(template.thinking_tags()):
        found.add("thinking")
    return frozenset(found)
