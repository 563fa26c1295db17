"""A port of Go's text/template/parse recursive descent, with its error messages.

Variables must be declared before use and go out of scope at the `{{end}}` of the control structure
that declared them; functions must be known when parsing, as in Go. `{{define}}`, `{{template}}` and
`{{block}}` are refused: no Ollama template uses them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import NoReturn

from . import nodes as n
from .errors import TemplateError
from .gostr import quote, unquote
from .lexer import Kind, Token, lex

_OPERAND_START = frozenset(
    {
        Kind.BOOL,
        Kind.CHAR_CONSTANT,
        Kind.DOT,
        Kind.FIELD,
        Kind.IDENTIFIER,
        Kind.NUMBER,
        Kind.NIL,
        Kind.RAW_STRING,
        Kind.STRING,
        Kind.VARIABLE,
        Kind.LEFT_PAREN,
    }
)
_CONSTANTS = (n.BoolNode, n.DotNode, n.NilNode, n.NumberNode, n.StringNode)
_OCTAL = re.compile(r"[+-]?0[0-7_]+")
_BRANCHES: dict[str, n.BranchKind] = {"if": "if", "range": "range", "with": "with"}


@dataclass(frozen=True)
class _End(n.Node):
    def __str__(self) -> str:
        return "{{end}}"


@dataclass(frozen=True)
class _Else(n.Node):
    def __str__(self) -> str:
        return "{{else}}"


class Parser:
    """One parse of one text: a cursor over its tokens, the variables in scope and the range depth."""

    def __init__(self, text: str, funcs: Collection[str]) -> None:
        self.tokens = lex(text)
        self.funcs = funcs
        self.i = 0
        self.seen = 0  # the furthest token read: Go reports errors at its line
        self.vars = ["$"]
        self.range_depth = 0
        self.action_line = 0  # line of the `{{` being parsed, for errors in multi-line actions

    # -- token stream ---------------------------------------------------------------------------

    def next(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def peek(self) -> Token:
        """The token at the cursor; past the end, the last one (EOF or the lexer's error) again."""
        index = min(self.i, len(self.tokens) - 1)
        self.seen = max(self.seen, index)
        return self.tokens[index]

    def skip_space(self) -> None:
        while self.peek().kind is Kind.SPACE:
            self.i += 1

    def next_non_space(self) -> Token:
        self.skip_space()
        return self.next()

    def peek_non_space(self) -> Token:
        self.skip_space()
        return self.peek()

    def error(self, message: str) -> NoReturn:
        raise TemplateError(f"template: :{self.tokens[self.seen].line}: {message}")

    def unexpected(self, token: Token, context: str) -> NoReturn:
        if token.kind is Kind.ERROR:  # the lexer's complaint, reported where the parser meets it
            extra = ""
            if self.action_line and self.action_line != token.line:
                extra = f" in action started at :{self.action_line}"
                if token.val.endswith(" action"):
                    extra = extra.removeprefix(" in action")
            raise TemplateError(f"template: :{token.line}: {token.val}{extra}")
        self.error(f"unexpected {token} in {context}")

    def expect(self, kind: Kind, context: str) -> Token:
        token = self.next_non_space()
        if token.kind is not kind:
            self.unexpected(token, context)
        return token

    # -- structure ------------------------------------------------------------------------------

    def parse(self) -> n.ListNode:
        start = self.peek().pos
        items: list[n.Node] = []
        while self.peek().kind is not Kind.EOF:
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                self.error(f"unexpected {node}")
            items.append(node)
        return n.ListNode(start, tuple(items))

    def item_list(self) -> tuple[n.ListNode, n.Node]:
        """Nodes up to an {{end}} or {{else}}, which is returned separately."""
        start = self.peek_non_space().pos
        items: list[n.Node] = []
        while self.peek_non_space().kind is not Kind.EOF:
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                return n.ListNode(start, tuple(items)), node
            items.append(node)
        self.error("unexpected EOF")

    def text_or_action(self) -> n.Node:
        token = self.next_non_space()
        if token.kind is Kind.TEXT:
            return n.TextNode(token.pos, token.val)
        if token.kind is Kind.LEFT_DELIM:
            self.action_line = token.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        self.unexpected(token, "input")

    def action(self) -> n.Node:
        token = self.next_non_space()
        if token.kind is Kind.KEYWORD:
            word = token.val
            if word in _BRANCHES:
                return self.control(_BRANCHES[word])
            if word == "else":
                return self.else_control()
            if word == "end":
                return _End(self.expect(Kind.RIGHT_DELIM, "end").pos)
            if word in ("break", "continue"):
                return self.loop_control(token)
            self.error(f"{{{{{word}}}}} is not supported")
        self.i -= 1
        return n.ActionNode(token.pos, self.pipeline("command", Kind.RIGHT_DELIM))

    def loop_control(self, token: Token) -> n.Node:
        closing = self.next_non_space()
        if closing.kind is not Kind.RIGHT_DELIM:
            self.unexpected(closing, f"{{{{{token.val}}}}}")
        if not self.range_depth:
            self.error(f"{{{{{token.val}}}}} outside {{{{range}}}}")
        return n.BreakNode(token.pos) if token.val == "break" else n.ContinueNode(token.pos)

    def else_control(self) -> n.Node:
        peek = self.peek_non_space()
        if peek.kind is Kind.KEYWORD and peek.val in ("if", "with"):
            return _Else(peek.pos)  # `else if` / `else with`: the keyword stays pending
        return _Else(self.expect(Kind.RIGHT_DELIM, "else").pos)

    def control(self, kind: n.BranchKind) -> n.BranchNode:
        """if / range / with, up to and including the matching {{end}}."""
        saved_vars = len(self.vars)
        pipe = self.pipeline(kind, Kind.RIGHT_DELIM)
        self.range_depth += kind == "range"
        body, end = self.item_list()
        self.range_depth -= kind == "range"
        else_list = None
        if isinstance(end, _Else):
            chained = self.peek_non_space()
            if kind != "range" and chained.kind is Kind.KEYWORD and chained.val == kind:
                self.next_non_space()
                # {{if a}}x{{else if b}}y{{end}} is {{if a}}x{{else}}{{if b}}y{{end}}{{end}}: one {{end}}
                else_list = n.ListNode(end.pos, (self.control(kind),))
            else:
                else_list, end = self.item_list()
                if not isinstance(end, _End):
                    self.error(f"expected end; found {end}")
        del self.vars[saved_vars:]
        return n.BranchNode(pipe.pos, kind, pipe, body, else_list)

    # -- pipelines ------------------------------------------------------------------------------

    def pipeline(self, context: str, end: Kind) -> n.PipeNode:
        start = self.peek_non_space().pos
        decl: list[n.VariableNode] = []
        is_assign = False
        while self.peek_non_space().kind is Kind.VARIABLE:
            rewind = self.i
            variable = self.next()
            following = self.peek_non_space()
            if following.kind in (Kind.ASSIGN, Kind.DECLARE):
                is_assign = following.kind is Kind.ASSIGN
                self.next()
                decl.append(self.declare(variable))
                break
            if following.kind is Kind.CHAR and following.val == ",":
                self.next()
                decl.append(self.declare(variable))
                if context == "range" and len(decl) < 2:
                    if self.peek_non_space().kind in (Kind.VARIABLE, Kind.RIGHT_DELIM, Kind.RIGHT_PAREN):
                        continue
                    self.error("range can only initialize variables")
                self.error(f"too many declarations in {context}")
            self.i = rewind  # `$x` is an operand, not a declaration
            break
        cmds: list[n.CommandNode] = []
        while True:
            token = self.next_non_space()
            if token.kind is end:
                self.check_pipeline(cmds, context)
                return n.PipeNode(start, tuple(decl), is_assign, tuple(cmds))
            if token.kind not in _OPERAND_START:
                self.unexpected(token, context)
            self.i -= 1
            cmds.append(self.command())

    def declare(self, token: Token) -> n.VariableNode:
        self.vars.append(token.val)
        return n.VariableNode(token.pos, (token.val,))

    def check_pipeline(self, cmds: list[n.CommandNode], context: str) -> None:
        if not cmds:
            self.error(f"missing value for {context}")
        for stage, cmd in enumerate(cmds[1:], start=2):
            if isinstance(cmd.args[0], _CONSTANTS):
                self.error(f"non executable command in pipeline stage {stage}")

    def command(self) -> n.CommandNode:
        start = self.peek_non_space().pos
        args: list[n.Node] = []
        while True:
            self.skip_space()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            token = self.next()
            if token.kind is Kind.SPACE:
                continue
            if token.kind in (Kind.RIGHT_DELIM, Kind.RIGHT_PAREN):
                self.i -= 1
            elif token.kind is not Kind.PIPE:
                self.unexpected(token, "operand")
            break
        if not args:
            self.error("empty command")
        return n.CommandNode(start, tuple(args))

    def operand(self) -> n.Node | None:
        node = self.term()
        if node is None or self.peek().kind is not Kind.FIELD:
            return node
        chain_pos = self.peek().pos  # Go places a chain at its first chained field
        fields: list[str] = []
        while self.peek().kind is Kind.FIELD:
            fields.append(self.next().val[1:])
        if isinstance(node, n.FieldNode):
            return n.FieldNode(chain_pos, node.ident + tuple(fields))
        if isinstance(node, n.VariableNode):
            return n.VariableNode(chain_pos, node.ident + tuple(fields))
        if isinstance(node, _CONSTANTS):
            self.error(f"unexpected . after term {quote(str(node))}")
        return n.ChainNode(chain_pos, node, tuple(fields))

    def term(self) -> n.Node | None:
        token = self.next_non_space()
        kind, pos, val = token.kind, token.pos, token.val
        if kind is Kind.IDENTIFIER:
            if val not in self.funcs:
                self.error(f"function {quote(val)} not defined")
            return n.IdentifierNode(pos, val)
        if kind is Kind.DOT:
            return n.DotNode(pos)
        if kind is Kind.NIL:
            return n.NilNode(pos)
        if kind is Kind.VARIABLE:
            if val not in self.vars:
                self.error(f"undefined variable {quote(val)}")
            return n.VariableNode(pos, (val,))
        if kind is Kind.FIELD:
            return n.FieldNode(pos, (val[1:],))
        if kind is Kind.BOOL:
            return n.BoolNode(pos, val == "true")
        if kind in (Kind.NUMBER, Kind.CHAR_CONSTANT):
            return n.NumberNode(pos, val, self.number(token))
        if kind is Kind.LEFT_PAREN:
            return self.pipeline("parenthesized pipeline", Kind.RIGHT_PAREN)
        if kind in (Kind.STRING, Kind.RAW_STRING):
            try:
                return n.StringNode(pos, val, unquote(val))
            except ValueError:
                self.error("invalid syntax")
        self.i -= 1
        return None

    def number(self, token: Token) -> int | float:
        """Go's rules: 'a' is a rune (an int); 1.0, 1e3 and 0x1p-2 are floats; 010 is octal."""
        text = token.val
        try:
            if token.kind is Kind.CHAR_CONSTANT:
                return ord(unquote(text))
            lower = text.lower()
            if "x" in lower and "p" in lower:
                return float.fromhex(text.replace("_", ""))
            if "x" not in lower and any(c in lower for c in ".e"):
                return float(text.replace("_", ""))
            if _OCTAL.fullmatch(text):
                return int(text.replace("_", ""), 8)
            return int(text, 0)
        except ValueError:
            self.error(f"illegal number syntax: {quote(text)}")


def parse_tree(text: str, funcs: Collection[str]) -> n.ListNode:
    """Parse text into its root list, knowing which function names exist."""
    return Parser(text, funcs).parse()
