"""A parsed template: Go's text/template with Ollama's functions, as Ollama's template.Parse makes it."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from . import nodes as n
from .builtins import BUILTINS, LAZY, Func
from .executor import Executor
from .ollama_funcs import OLLAMA_FUNCS
from .parser import parse_tree
from .walks import identifiers, infer_thinking_tags, tool_call_tag, variables

FUNCS: dict[str, Func] = {**BUILTINS, **OLLAMA_FUNCS}
_RESPONSE = n.ActionNode(0, n.PipeNode(0, (), False, (n.CommandNode(0, (n.FieldNode(0, ("Response",)),)),)))


class Template:
    """Parse once, then `execute` (Go semantics on plain data) or hand to `render`/`render_chat`.

    Ollama's Parse appends `{{ .Response }}` to a template that mentions neither `.Messages` nor
    `.Response`, so that old prompt-only templates still place the model's reply; `variables()` and
    the Ollama renderers see that appended node, `execute` runs the text exactly as written.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.root = parse_tree(text, FUNCS.keys() | LAZY)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def execute(self, data: Any) -> str:
        """Run the template over `data` (see values.py for how Python data stands for Go's)."""
        return self.run(self.root, data)

    def run(self, root: n.ListNode, data: Any) -> str:
        """Run another tree over this template's text (Ollama runs trimmed copies of the tree)."""
        return Executor(self.text, FUNCS).run(root, data)

    @cached_property
    def ollama_root(self) -> n.ListNode:
        """The tree as Ollama keeps it: with `{{ .Response }}` appended when the text lacks both fields."""
        names = {name.lower() for name in identifiers(self.root)}
        if "messages" in names or "response" in names:
            return self.root
        return n.ListNode(self.root.pos, (*self.root.nodes, _RESPONSE))

    def variables(self) -> list[str]:
        """Ollama's Template.Vars(): the lowercased, sorted field and variable names it references.

        "tools" among them means the model can call tools; "suffix", that it can fill in the middle.
        """
        return variables(self.ollama_root)

    def thinking_tags(self) -> tuple[str, str]:
        """Ollama's thinking.InferTags: (opening, closing) tag around `.Thinking`, or ("", "")."""
        return infer_thinking_tags(self.ollama_root)

    def tool_call_tag(self) -> str:
        """Ollama's tools.parseTag: what the model writes before a tool call ("{" if nothing)."""
        return tool_call_tag(self.root)


def parse(text: str) -> Template:
    """Parse a template; raise TemplateError (a ValueError) with Go's message if it is malformed."""
    return Template(text)
