"""The parse tree, shaped like Go's text/template/parse so that Ollama's tree walks port one to one.

Ollama inspects templates by walking this tree (Vars, thinking.InferTags, the legacy `{{ .Response }}`
cut), so the node kinds and their nesting mirror Go's. Go's IfNode, RangeNode and WithNode all embed a
BranchNode; here they are one BranchNode with a `kind`. `str()` of a node prints it back the way Go's
String methods do, which is what error messages quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BranchKind = Literal["if", "range", "with"]


@dataclass(frozen=True)
class Node:
    """`pos` is the offset of the node in the template text, for error messages."""

    pos: int


@dataclass(frozen=True)
class TextNode(Node):
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class DotNode(Node):
    def __str__(self) -> str:
        return "."


@dataclass(frozen=True)
class NilNode(Node):
    def __str__(self) -> str:
        return "nil"


@dataclass(frozen=True)
class BoolNode(Node):
    value: bool

    def __str__(self) -> str:
        return "true" if self.value else "false"


@dataclass(frozen=True)
class NumberNode(Node):
    """A numeric literal: an int unless its spelling is a float's (Go's idealConstant rule)."""

    text: str
    value: int | float

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class StringNode(Node):
    quoted: str
    text: str

    def __str__(self) -> str:
        return self.quoted


@dataclass(frozen=True)
class FieldNode(Node):
    """`.A.B`: ident is ("A", "B")."""

    ident: tuple[str, ...]

    def __str__(self) -> str:
        return "".join("." + name for name in self.ident)


@dataclass(frozen=True)
class VariableNode(Node):
    """`$x.A`: ident is ("$x", "A"); `$` alone is the data passed to execute."""

    ident: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.ident)


@dataclass(frozen=True)
class IdentifierNode(Node):
    """A function name."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ChainNode(Node):
    """Fields taken from something that is neither dot nor a variable: `(index .M 0).Role`."""

    node: Node
    fields: tuple[str, ...]

    def __str__(self) -> str:
        head = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return head + "".join("." + name for name in self.fields)


@dataclass(frozen=True)
class CommandNode(Node):
    args: tuple[Node, ...]

    def __str__(self) -> str:
        return " ".join(f"({arg})" if isinstance(arg, PipeNode) else str(arg) for arg in self.args)


@dataclass(frozen=True)
class PipeNode(Node):
    """`$x := a | b`: declarations (or, with is_assign, assignments) and the commands."""

    decl: tuple[VariableNode, ...]
    is_assign: bool
    cmds: tuple[CommandNode, ...]

    def __str__(self) -> str:
        head = ""
        if self.decl:
            head = ", ".join(map(str, self.decl)) + (" = " if self.is_assign else " := ")
        return head + " | ".join(map(str, self.cmds))


@dataclass(frozen=True)
class ActionNode(Node):
    pipe: PipeNode

    def __str__(self) -> str:
        return f"{{{{{self.pipe}}}}}"


@dataclass(frozen=True)
class ListNode(Node):
    nodes: tuple[Node, ...]

    def __str__(self) -> str:
        return "".join(map(str, self.nodes))


@dataclass(frozen=True)
class BranchNode(Node):
    """if, range and with. `{{else if}}` is an else_list holding one nested if, as in Go."""

    kind: BranchKind
    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None

    def __str__(self) -> str:
        text = f"{{{{{self.kind} {self.pipe}}}}}{self.list}"
        if self.else_list is not None:
            text += f"{{{{else}}}}{self.else_list}"
        return text + "{{end}}"


@dataclass(frozen=True)
class BreakNode(Node):
    def __str__(self) -> str:
        return "{{break}}"


@dataclass(frozen=True)
class ContinueNode(Node):
    def __str__(self) -> str:
        return "{{continue}}"
