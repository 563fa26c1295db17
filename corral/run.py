"""`corral run`: one prompt and out, or a conversation at `>>> `, as `ollama run` does.

In the conversation: `/set parameter NAME VALUE`, `/set system TEXT`, `/show info`,
`/show parameters`, `/load MODEL`, `/save MODEL`, `/clear`, `/bye`, and `\"\"\"` to write
over several lines. Ctrl-C stops a generation (the server cancels it); at the prompt
it reminds how to leave; Ctrl-D leaves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corral.client import Client, ClientError
from corral.tables import model_summary

HELP = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set the system message
  /show info             Show details for this model
  /show parameters       Show the parameters set in this session
  /load <model>          Load a session or model
  /save <model>          Save your current session
  /clear                 Clear session context
  /bye                   Exit
  /?, /help              Help for a command

Use \"\"\" to begin a multi-line message."""


@dataclass
class Session:
    model: str
    keep_alive: str | None = None
    system: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        body: dict[str, Any] = {"model": self.model, "messages": system + messages, "options": self.options}
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        return body


def answer(client: Client, session: Session, prompt: str, write: Callable[[str], None]) -> str:
    """Send `prompt` (with the history), writing the answer as it comes; returns it whole."""
    messages = [*session.messages, {"role": "user", "content": prompt}]
    parts: list[str] = []
    stream = client.stream("/api/chat", session.body(messages))
    try:
        for chunk in stream:
            text = (chunk.get("message") or {}).get("content", "")
            if text:
                parts.append(text)
                write(text)
    finally:
        stream.close()  # a Ctrl-C closes the connection: the server cancels the generation
    reply = "".join(parts)
    session.messages = [*messages, {"role": "assistant", "content": reply}]
    return reply


def load(client: Client, session: Session) -> None:
    """An empty chat loads the model, as `ollama run` does before its prompt."""
    for _ in client.stream("/api/chat", session.body([])):
        pass


def command(client: Client, session: Session, line: str, write: Callable[[str], None]) -> bool:
    """Run one /command; False when it asks to leave."""
    words = line.split()
    name, args = words[0], words[1:]
    if name in ("/bye", "/exit"):
        return False
    if name in ("/?", "/help"):
        write(HELP + "\n")
    elif name == "/clear":
        session.messages = []
        write("Cleared session context\n")
    elif name == "/set" and len(args) >= 3 and args[0] == "parameter":
        session.options[args[1]] = _value(" ".join(args[2:]))
        write(f"Set parameter '{args[1]}' to '{' '.join(args[2:])}'\n")
    elif name == "/set" and len(args) >= 2 and args[0] == "system":
        session.system = line.split(None, 2)[2]
        write("Set system message.\n")
    elif name == "/show" and args == ["info"]:
        _show_info(client, session, write)
    elif name == "/show" and args == ["parameters"]:
        shown = "\n".join(f"{k:<30} {json.dumps(v)}" for k, v in session.options.items())
        write((shown or "No parameters set for this session.") + "\n")
    elif name == "/load" and len(args) == 1:
        session.model, session.messages = args[0], []
        write(f"Loading model '{args[0]}'\n")
        load(client, session)
    elif name == "/save" and len(args) == 1:
        client.post("/api/copy", {"source": session.model, "destination": args[0]})
        write(f"Created new model '{args[0]}'\n")
    else:
        write(f"Unknown command '{line}'. Type /? for help\n")
    return True


def _show_info(client: Client, session: Session, write: Callable[[str], None]) -> None:
    write(model_summary(client.post("/api/show", {"model": session.model})) + "\n")


def _value(text: str) -> Any:
    """A parameter's value as JSON when it is one (numbers, true), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def read_message(read: Callable[[str], str]) -> str:
    """One message from the prompt; `\"\"\"` opens (and closes) several lines."""
    line = read(">>> ")
    if not line.startswith('"""'):
        return line
    lines = [line[3:]]
    while not lines[-1].endswith('"""'):
        lines.append(read("... "))
    lines[-1] = lines[-1][:-3]
    return "\n".join(lines).strip("\n")


def conversation(
    client: Client, session: Session, read: Callable[[str], str], write: Callable[[str], None]
) -> None:
    while True:
        try:
            message = read_message(read)
        except KeyboardInterrupt:
            write("\nUse Ctrl + d or /bye to exit.\n")
            continue
        except EOFError:
            write("\n")
            return
        if not message.strip():
            continue
        if message.startswith("/"):
            try:
                if not command(client, session, message, write):
                    return
            except ClientError as exc:
                write(f"Error: {exc}\n")
            continue
        try:
            answer(client, session, message, write)
        except KeyboardInterrupt:
            pass
        except ClientError as exc:
            write(f"Error: {exc}")
        write("\n\n")


__all__ = ["ClientError", "Session", "answer", "conversation", "load"]
