"""Runs a parse tree over Python data with Go's text/template semantics (text/template/exec.go).

Variables live on one stack: a control structure marks it on entry and drops what was pushed on exit,
`$x = v` overwrites the nearest `$x`, and a range sets its `$i, $v` afresh on each turn. A nil reached
through a field (`.Missing.X`) is an error, as Go's "nil pointer evaluating"; a nil dot or variable
yields nil fields, as Go's invalid values do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from . import nodes as n
from .builtins import LAZY, Func, FuncError, ParamKind
from .errors import ExecError
from .gofmt import format_value
from .gostr import to_bytes
from .values import GoStruct, go_type, truth, unwrap

_MISSING: Any = object()  # "no value piped in", distinct from nil


class _Break(Exception):
    """{{break}}: leave the innermost range."""


class _Continue(Exception):
    """{{continue}}: go on with the innermost range's next element."""


class Executor:
    """One run of a tree: the variable stack and the output so far."""

    def __init__(self, text: str, funcs: Mapping[str, Func]) -> None:
        self.text = text
        self.funcs = funcs
        self.vars: list[tuple[str, Any]] = []
        self.out: list[str] = []

    def run(self, root: n.ListNode, data: Any) -> str:
        self.vars = [("$", data)]
        self.out = []
        self.walk(data, root)
        return "".join(self.out)

    def error(self, node: n.Node, message: str) -> NoReturn:
        before = self.text[: node.pos]
        line = before.count("\n") + 1
        column = len(to_bytes(before[before.rfind("\n") + 1 :]))
        raise ExecError(f'template: :{line}:{column}: executing "" at <{node}>: {message}')

    # -- walking --------------------------------------------------------------------------------

    def walk(self, dot: Any, node: n.Node) -> None:
        if isinstance(node, n.TextNode):
            self.out.append(node.text)
        elif isinstance(node, n.ActionNode):
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.out.append("<no value>" if value is None else format_value(value))
        elif isinstance(node, n.ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, n.BranchNode) and node.kind == "range":
            self.walk_range(dot, node)
        elif isinstance(node, n.BranchNode):
            self.walk_if_or_with(dot, node)
        elif isinstance(node, n.BreakNode):
            raise _Break
        elif isinstance(node, n.ContinueNode):
            raise _Continue
        else:
            self.error(node, f"unknown node: {node}")

    def walk_if_or_with(self, dot: Any, node: n.BranchNode) -> None:
        mark = len(self.vars)
        try:
            value = self.eval_pipeline(dot, node.pipe)
            if truth(value):
                self.walk(value if node.kind == "with" else dot, node.list)
            elif node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            del self.vars[mark:]

    def walk_range(self, dot: Any, node: n.BranchNode) -> None:
        mark = len(self.vars)
        try:
            items = self.range_items(node, unwrap(self.eval_pipeline(dot, node.pipe)))
            body_mark = len(self.vars)
            for key, element in items:
                self.set_range_vars(node.pipe, key, element)
                try:
                    self.walk(element, node.list)
                except _Continue:
                    pass
                except _Break:
                    break
                finally:
                    del self.vars[body_mark:]
            if not items and node.else_list is not None:
                self.walk(dot, node.else_list)
        finally:
            del self.vars[mark:]

    def range_items(self, node: n.BranchNode, value: Any) -> list[tuple[Any, Any]]:
        """(index or key, element) pairs: slices in order, maps by sorted key, an int n as 0..n-1."""
        if value is None:
            return []
        if isinstance(value, list | tuple | bytes):
            return list(enumerate(value))
        if isinstance(value, dict):
            return sorted(value.items(), key=lambda item: (isinstance(item[0], str), item[0]))
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                self.error(node.pipe, f"can't use {value} to iterate over more than one variable")
            return [(i, i) for i in range(value)]
        self.error(node.pipe, f"range can't iterate over {format_value(value)}")

    def set_range_vars(self, pipe: n.PipeNode, key: Any, element: Any) -> None:
        """One variable gets the element; two get the index (or key), then the element."""
        if not pipe.decl:
            return
        values = (element,) if len(pipe.decl) == 1 else (key, element)
        if pipe.is_assign:
            for variable, value in zip(pipe.decl, values, strict=True):
                self.set_var(variable, value)
        else:  # overwrite the variables the range's pipeline pushed
            self.vars[-len(values) :] = [
                (v.ident[0], value) for v, value in zip(pipe.decl, values, strict=True)
            ]

    # -- variables ------------------------------------------------------------------------------

    def set_var(self, variable: n.VariableNode, value: Any) -> None:
        name = variable.ident[0]
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        self.error(variable, f"undefined variable: {name}")

    def lookup(self, variable: n.VariableNode) -> Any:
        name = variable.ident[0]
        for var_name, value in reversed(self.vars):
            if var_name == name:
                return value
        self.error(variable, f"undefined variable: {name}")

    # -- evaluation -----------------------------------------------------------------------------

    def eval_pipeline(self, dot: Any, pipe: n.PipeNode) -> Any:
        value = _MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
        for variable in pipe.decl:
            if pipe.is_assign:
                self.set_var(variable, value)
            else:
                self.vars.append((variable.ident[0], value))
        return value

    def eval_command(self, dot: Any, cmd: n.CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, n.FieldNode):
            return self.eval_fields(dot, first, first.ident, cmd.args, final)
        if isinstance(first, n.ChainNode):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, n.IdentifierNode):
            return self.eval_function(dot, first, cmd, cmd.args, final)
        if isinstance(first, n.VariableNode):
            return self.eval_variable(dot, first, cmd.args, final)
        if len(cmd.args) > 1 or final is not _MISSING:
            self.error(first, f"can't give argument to non-function {first}")
        if isinstance(first, n.PipeNode):
            return self.eval_pipeline(dot, first)
        if isinstance(first, n.NilNode):
            self.error(first, "nil is not a command")
        return self.constant(dot, first)

    def constant(self, dot: Any, node: n.Node) -> Any:
        if isinstance(node, n.DotNode):
            return dot
        if isinstance(node, n.BoolNode):
            return node.value
        if isinstance(node, n.NumberNode):
            return node.value
        if isinstance(node, n.StringNode):
            return node.text
        self.error(node, f"can't evaluate command {node}")

    def eval_variable(self, dot: Any, node: n.VariableNode, args: Sequence[n.Node], final: Any) -> Any:
        value = self.lookup(node)
        if len(node.ident) == 1:
            if len(args) > 1 or final is not _MISSING:
                self.error(node, f"can't give argument to non-function {node}")
            return value
        return self.eval_fields(value, node, node.ident[1:], args, final)

    def eval_chain(self, dot: Any, node: n.ChainNode, args: Sequence[n.Node], final: Any) -> Any:
        if isinstance(node.node, n.NilNode):
            self.error(node, f"indirection through explicit nil in {node}")
        return self.eval_fields(self.eval_arg(dot, node.node, "any"), node, node.fields, args, final)

    def eval_fields(
        self, receiver: Any, node: n.Node, names: Sequence[str], args: Sequence[n.Node], final: Any
    ) -> Any:
        """receiver.A.B...; the last field gets the arguments, which only methods could take.

        What a map lookup yields has Go's static type `interface {}`, which error messages name.
        """
        static_type = None
        for i, name in enumerate(names):
            has_args = i == len(names) - 1 and (len(args) > 1 or final is not _MISSING)
            if receiver is None:
                if i == 0:
                    return None
                self.error(node, f"nil pointer evaluating {static_type}.{name}")
            value = unwrap(receiver)
            if isinstance(value, GoStruct) and name in value.fields:
                if has_args:
                    self.error(node, f"{name} has arguments but cannot be invoked as function")
                receiver, static_type = value.fields[name], None
            elif isinstance(value, dict):
                if has_args:
                    self.error(node, f"{name} is not a method but has arguments")
                receiver, static_type = value.get(name), "interface {}"
            else:
                self.error(node, f"can't evaluate field {name} in type {static_type or go_type(value)}")
        return receiver

    def eval_function(
        self, dot: Any, node: n.IdentifierNode, cmd: n.Node, args: Sequence[n.Node], final: Any
    ) -> Any:
        name, given = node.name, len(args) - 1 + (final is not _MISSING)
        if name in LAZY:
            if not given:
                self.error(cmd, f"wrong number of args for {name}: want at least 1 got 0")
            value = None
            for arg in args[1:]:
                value = self.eval_arg(dot, arg, "any")
                if truth(value) == (name == "or"):
                    return value
            return final if final is not _MISSING else value
        func = self.funcs.get(name)
        if func is None:
            self.error(node, f'"{name}" is not a defined function')
        if func.variadic is None and given != len(func.params):
            self.error(cmd, f"wrong number of args for {name}: want {len(func.params)} got {given}")
        if given < len(func.params):
            self.error(cmd, f"wrong number of args for {name}: want at least {len(func.params)} got {given}")
        kinds = [*func.params, *[func.variadic or "any"] * given]
        values = [self.eval_arg(dot, arg, kind) for arg, kind in zip(args[1:], kinds, strict=False)]
        if final is not _MISSING:
            values.append(final)
        for value, kind in zip(values, kinds, strict=False):
            if kind == "string" and not isinstance(value, str):
                self.error(cmd, f"wrong type for value; expected string; got {go_type(value)}")
        try:
            return func.fn(*values)
        except FuncError as error:
            self.error(cmd, f"error calling {name}: {error}")

    def eval_arg(self, dot: Any, node: n.Node, kind: ParamKind) -> Any:
        if isinstance(node, n.NilNode):
            if kind == "string":
                self.error(node, "cannot assign nil to string")
            return None
        if kind == "string" and isinstance(node, n.BoolNode | n.NumberNode):
            self.error(node, f"expected string; found {node}")
        if isinstance(node, n.FieldNode):
            return self.eval_fields(dot, node, node.ident, (node,), _MISSING)
        if isinstance(node, n.VariableNode):
            return self.eval_variable(dot, node, (node,), _MISSING)
        if isinstance(node, n.PipeNode):
            return self.eval_pipeline(dot, node)
        if isinstance(node, n.IdentifierNode):
            return self.eval_function(dot, node, node, (node,), _MISSING)
        if isinstance(node, n.ChainNode):
            return self.eval_chain(dot, node, (node,), _MISSING)
        return self.constant(dot, node)
