"""What Ollama reads off a template's tree: its identifiers (capabilities), its thinking tags, and the
tree cut after `.Response` that renders the last turn of a legacy template.

Each function ports one Go walk from Ollama (template/template.go, thinking/template.go) and keeps its
quirks, since capabilities and prompts must come out as Ollama's do.
"""

from __future__ import annotations

from dataclasses import replace

from . import nodes as n


def identifiers(node: n.Node) -> list[str]:
    """Ollama's template.Identifiers: every field and variable name in actions and control pipelines.

    `.Function.Name` gives "Function" and "Name"; `$.Messages` gives "$" and "Messages"; variable
    declarations (`$i :=`) and chained fields of parenthesised pipelines are not looked at.
    """
    if isinstance(node, n.ListNode):
        return [name for child in node.nodes for name in identifiers(child)]
    if isinstance(node, n.ActionNode):
        return identifiers(node.pipe)
    if isinstance(node, n.BranchNode):
        names = identifiers(node.pipe) + identifiers(node.list)
        return names + (identifiers(node.else_list) if node.else_list is not None else [])
    if isinstance(node, n.PipeNode):
        return [name for cmd in node.cmds for arg in cmd.args for name in identifiers(arg)]
    if isinstance(node, n.FieldNode | n.VariableNode):
        return list(node.ident)
    return []


def variables(root: n.ListNode) -> list[str]:
    """Ollama's Template.Vars: the identifiers, lowercased, deduplicated and sorted."""
    return sorted({name.lower() for name in identifiers(root)})


def infer_thinking_tags(root: n.ListNode) -> tuple[str, str]:
    """Ollama's thinking.InferTags: the text around `.Thinking` inside a `range` over `.Messages`.

    For each `.Thinking` field whose nearest enclosing range iterates a pipeline naming the field
    `Messages`, the nearest enclosing list's first and last nodes, if they are text, give the
    opening and closing tags (whitespace trimmed). A later match overwrites an earlier one, and a
    list that does not start (end) with text leaves the opening (closing) tag as it was.
    """
    tags = ["", ""]
    ancestors: list[n.Node] = []

    def visit(node: n.Node | None) -> None:
        if node is None:
            return
        ancestors.append(node)
        if isinstance(node, n.FieldNode) and node.ident[0] == "Thinking":
            _match_thinking(ancestors, tags)
        for child in _children(node):
            visit(child)
        ancestors.pop()

    visit(root)
    return tags[0], tags[1]


def _children(node: n.Node) -> list[n.Node | None]:
    """The walk order of Ollama's templateVisit."""
    if isinstance(node, n.ListNode):
        return list(node.nodes)
    if isinstance(node, n.BranchNode):
        return [node.pipe, node.list, node.else_list]
    if isinstance(node, n.ActionNode):
        return [node.pipe]
    if isinstance(node, n.PipeNode):
        return list(node.cmds)
    if isinstance(node, n.CommandNode):
        return list(node.args)
    return []


def _match_thinking(ancestors: list[n.Node], tags: list[str]) -> None:
    ranges = [a for a in ancestors if isinstance(a, n.BranchNode) and a.kind == "range"]
    if not ranges or not _uses_field(ranges[-1].pipe, "Messages"):
        return
    lists = [a for a in ancestors if isinstance(a, n.ListNode)]
    if not lists or not lists[-1].nodes:
        return
    first, last = lists[-1].nodes[0], lists[-1].nodes[-1]
    if isinstance(first, n.TextNode):
        tags[0] = first.text.strip()
    if isinstance(last, n.TextNode):
        tags[1] = last.text.strip()


def _uses_field(node: n.Node, name: str) -> bool:
    if isinstance(node, n.FieldNode) and node.ident[0] == name:
        return True
    return any(child is not None and _uses_field(child, name) for child in _children(node))


def cut_after_response(root: n.ListNode) -> n.ListNode:
    """Ollama's deleteNode pass for the last turn of a legacy template: keep everything up to and
    including the first `.Response` field in tree order, drop all that follows.

    Like Ollama it does not look inside if/range/with conditions, and an action whose pipeline
    loses every argument of one command is dropped whole. Where Ollama panics (the cut falls inside
    an if/with/range that has an else branch), the else branch is dropped instead.
    """
    cut = False

    def deleted(node: n.Node) -> bool:
        nonlocal cut
        if isinstance(node, n.FieldNode) and "Response" in node.ident:
            cut = True
            return False
        return cut

    def walk_list(node: n.ListNode) -> n.ListNode | None:
        if deleted(node):
            return None
        return replace(node, nodes=tuple(c for c in map(walk, node.nodes) if c is not None))

    def walk_pipe(node: n.PipeNode) -> n.PipeNode | None:
        if deleted(node):
            return None
        cmds = []
        for cmd in node.cmds:
            args = tuple(a for a in map(walk, cmd.args) if a is not None)
            if not args:
                return None
            cmds.append(replace(cmd, args=args))
        return replace(node, cmds=tuple(cmds))

    def walk(node: n.Node) -> n.Node | None:
        if isinstance(node, n.ListNode):
            return walk_list(node)
        if isinstance(node, n.PipeNode):
            return walk_pipe(node)
        if deleted(node):
            return None
        if isinstance(node, n.BranchNode):
            body = walk_list(node.list) or replace(node.list, nodes=())
            else_list = walk_list(node.else_list) if node.else_list is not None else None
            return replace(node, list=body, else_list=else_list)
        if isinstance(node, n.ActionNode):
            pipe = walk_pipe(node.pipe)
            return None if pipe is None else replace(node, pipe=pipe)
        return node

    return walk_list(root) or replace(root, nodes=())


def tool_call_tag(root: n.ListNode) -> str:
    """Ollama's tools.parseTag: the text a model writes before a tool call's JSON.

    The first non-blank text inside the first `if` on `.ToolCalls`, up to its first `{`, trimmed
    (`<tool_call>`, `[TOOL_CALLS]`, …); "{" when there is none, meaning that an answer starting
    with a JSON object is read as tool calls.
    """
    block = _tool_calls_if(root.nodes)
    text = _first_text(block.list.nodes) if block is not None else None
    if text is None:
        return "{"
    tag = text.replace("\r\n", "\n").split("{", 1)[0].strip()
    return tag or "{"


def _tool_calls_if(nodes: tuple[n.Node, ...]) -> n.BranchNode | None:
    for node in nodes:
        if isinstance(node, n.BranchNode):
            names = [
                name
                for cmd in node.pipe.cmds
                for arg in cmd.args
                if isinstance(arg, n.FieldNode)
                for name in arg.ident
            ]
            if node.kind == "if" and "ToolCalls" in names:
                return node
            found = _tool_calls_if(node.list.nodes)
            if found is None and node.else_list is not None:
                found = _tool_calls_if(node.else_list.nodes)
            if found is not None:
                return found
        elif isinstance(node, n.ListNode) and (found := _tool_calls_if(node.nodes)) is not None:
            return found
    return None


def _first_text(nodes: tuple[n.Node, ...]) -> str | None:
    """Depth first, stopping at the first action: the text a branch writes before any value."""
    for node in nodes:
        if isinstance(node, n.TextNode):
            if node.text.strip():
                return node.text
        elif isinstance(node, n.BranchNode):
            found = _first_text(node.list.nodes)
            if found is None and node.else_list is not None:
                found = _first_text(node.else_list.nodes)
            return found
        elif isinstance(node, n.ListNode):
            if (found := _first_text(node.nodes)) is not None:
                return found
        elif isinstance(node, n.ActionNode):
            return None
    return None
