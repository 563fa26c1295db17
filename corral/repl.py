"""The conversation at `>>> `, as cmd/interactive.go's generateInteractive runs it.

`/set` (parameter, system, history, wordwrap, format, verbose, think and their opposites),
`/show` (info, license, modelfile, parameters, system, template), `/load`, `/save`, `/clear`,
`/bye`, `/?`, and `\"\"\"` around several lines. Texts are Ollama's; help goes to stderr as
there. Ctrl-C stops a generation (the server cancels it) or, at the prompt, reminds how to
leave; Ctrl-D leaves. An error Ollama ends the session on raises ClientError.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from corral.client import Client, ClientError
from corral.history import History
from corral.modelfile import ModelfileError, format_parameters
from corral.run import (
    RunOptions,
    Screen,
    apply_show,
    chat,
    create_body,
    ensure_thinking_support,
    infer_think,
    load_model,
    show,
)
from corral.showinfo import model_summary
from services.gotemplate.gofmt import format_value
from services.gotemplate.gostr import quote

Read = Callable[[str], str]  # input(): raises EOFError on Ctrl-D, KeyboardInterrupt on Ctrl-C

USAGE = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.

"""

USAGE_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking

"""

# Ollama's list, less Ctrl + g (its own editor hand-off, which readline has not).
USAGE_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit corral (/bye)

"""

USAGE_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template

"""

USAGE_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters

"""

HELP_TOPICS = {None: USAGE, "set": USAGE_SET, "/set": USAGE_SET, "show": USAGE_SHOW, "/show": USAGE_SHOW,
               "shortcut": USAGE_SHORTCUTS, "shortcuts": USAGE_SHORTCUTS}  # fmt: skip
INVALID_MODEL_NAME = "invalid model name"  # errtypes.InvalidModelNameErrMsg
QUOTES = '"""'


class Multiline(enum.Enum):
    NONE = enum.auto()
    PROMPT = enum.auto()
    SYSTEM = enum.auto()


class Repl:
    def __init__(
        self, client: Client, opts: RunOptions, screen: Screen, read: Read, history: History | None = None
    ) -> None:
        self.client, self.opts, self.screen, self.read = client, opts, screen, read
        self.history = history
        self.text = ""  # interactive.go's sb: the message (or system message) being written
        self.multiline = Multiline.NONE
        self.think_explicit = opts.think is not None

    def run(self) -> None:
        while True:
            try:
                line = self.read("... " if self.text or self.multiline is not Multiline.NONE else ">>> ")
            except EOFError:
                self.screen.write("\n")
                return
            except KeyboardInterrupt:
                self.screen.write("\nUse Ctrl + d or /bye to exit.\n")
                self.text, self.multiline = "", Multiline.NONE
                continue
            if self.history is not None:
                self.history.save()
            if not self.line(line):
                return

    def line(self, line: str) -> bool:
        """One line typed; False when it asks to leave."""
        if self.multiline is not Multiline.NONE:
            before, closed = _cut_suffix(line, QUOTES)
            self.text += before
            if not closed:
                self.text += "\n"
                return True
            if self.multiline is Multiline.SYSTEM:
                self._set_system(self.text)
            self.multiline = Multiline.NONE
        elif line.startswith(QUOTES):
            before, closed = _cut_suffix(line[len(QUOTES) :], QUOTES)
            self.text += before
            if not closed:
                self.text += "\n"
                self.multiline = Multiline.PROMPT
        elif line.startswith("/"):
            return self._command(line)
        else:
            self.text += line
        if self.text and self.multiline is Multiline.NONE:
            self._send()
        return True

    def _command(self, line: str) -> bool:
        args = line.split()
        if line.startswith("/load"):
            self._load(args)
        elif line.startswith("/save"):
            self._save(args)
        elif line.startswith("/clear"):
            self.opts.messages = []
            if self.opts.system:
                self.opts.messages.append({"role": "system", "content": self.opts.system})
            self.screen.write("Cleared session context\n")
        elif line.startswith("/set"):
            self._set(line, args)
        elif line.startswith("/show"):
            self._show(args)
        elif line.startswith(("/help", "/?")):
            self.screen.warn(HELP_TOPICS.get(args[1] if len(args) > 1 else None, ""))
        elif line.startswith(("/exit", "/bye")):
            return False
        else:
            self.screen.write(f"Unknown command '{args[0]}'. Type /? for help\n")
        return True

    def _send(self) -> None:
        self.opts.messages.append({"role": "user", "content": self.text})
        try:
            self.opts.messages.append(chat(self.client, self.opts, self.screen))
        except KeyboardInterrupt:
            self.screen.write("\n\n")
        except ClientError as exc:
            if "does not support thinking" not in str(exc) and "invalid think value" not in str(exc):
                raise
            self.screen.write(f"error: {exc}\n")
        finally:
            self.text = ""

    def _load(self, args: list[str]) -> None:
        if len(args) != 2:
            self.screen.write("Usage:\n  /load <modelname>\n")
            return
        previous = self.opts.copy()
        opts = self.opts
        opts.model, opts.messages, opts.loaded_messages = args[1], [], []
        self.screen.write(f"Loading model '{opts.model}'\n")
        try:
            shown = show(self.client, opts.model)
            apply_show(opts, shown)
            opts.think = infer_think(shown.get("capabilities") or [], opts.think, self.think_explicit)
            load_model(self.client, opts, self.screen)
        except ClientError as exc:
            if "not found" in str(exc):
                self.screen.write(f"Couldn't find model '{opts.model}'\n")
                self.opts = previous
                return
            if "does not support thinking" in str(exc):
                self.screen.write(f"error: {exc}\n")
                return
            raise

    def _save(self, args: list[str]) -> None:
        if len(args) != 2:
            self.screen.write("Usage:\n  /save <modelname>\n")
            return
        try:
            for _ in self.client.stream("/api/create", create_body(args[1], self.opts)):
                pass
        except ClientError as exc:
            if INVALID_MODEL_NAME not in str(exc):
                raise
            self.screen.write(f"error: The model name '{args[1]}' is invalid\n")
            return
        self.screen.write(f"Created new model '{args[1]}'\n")

    def _set(self, line: str, args: list[str]) -> None:
        if len(args) < 2:
            self.screen.warn(USAGE_SET)
            return
        opts, say = self.opts, self.screen.write
        match args[1]:
            case "history" | "nohistory":
                if self.history is not None:
                    self.history.enable(args[1] == "history")
            case "wordwrap" | "nowordwrap":
                opts.word_wrap = args[1] == "wordwrap"
                say(f"Set '{args[1]}' mode.\n")
            case "verbose" | "quiet":
                opts.verbose = args[1] == "verbose"
                say(f"Set '{args[1]}' mode.\n")
            case "think":
                level = args[2] if len(args) > 2 else ""
                opts.think, self.think_explicit = level or True, True
                ensure_thinking_support(self.client, opts.model, self.screen)
                say(f"Set 'think' mode to '{level}'.\n" if level else "Set 'think' mode.\n")
            case "nothink":
                opts.think, self.think_explicit = False, True
                ensure_thinking_support(self.client, opts.model, self.screen)
                say("Set 'nothink' mode.\n")
            case "format":
                if len(args) < 3 or args[2] != "json":
                    say("Invalid or missing format. For 'json' mode use '/set format json'\n")
                else:
                    opts.format = args[2]
                    say(f"Set format to '{args[2]}' mode.\n")
            case "noformat":
                opts.format = ""
                say("Disabled format.\n")
            case "parameter":
                self._set_parameter(args)
            case "system":
                self._start_system(args)
            case other:
                say(f"Unknown command '/set {other}'. Type /? for help\n")

    def _set_parameter(self, args: list[str]) -> None:
        if len(args) < 4:
            self.screen.warn(USAGE_PARAMETERS)
            return
        name, values = args[2], args[3:]
        try:
            typed = format_parameters({name: values})
        except ModelfileError as exc:
            self.screen.write(f"Couldn't set parameter: {quote(str(exc))}\n")
            return
        self.screen.write(f"Set parameter '{name}' to '{', '.join(values)}'\n")
        self.opts.options[name] = typed[name]

    def _start_system(self, args: list[str]) -> None:
        """`/set system TEXT`, or `/set system \"\"\"` and the lines up to the closing quotes."""
        if len(args) < 3:
            self.screen.warn(USAGE_SET)
            return
        text = " ".join(args[2:])
        if text.startswith(QUOTES):
            text, closed = _cut_suffix(text[len(QUOTES) :], QUOTES)
            if not closed:
                # Ollama runs this first line into the next one; a newline keeps them apart.
                self.text, self.multiline = text + "\n", Multiline.SYSTEM
                return
        self._set_system(text)

    def _set_system(self, text: str) -> None:
        """The system message, replacing one just before it (a /set system after /set system)."""
        self.opts.system = text
        message = {"role": "system", "content": text}
        if self.opts.messages and self.opts.messages[-1]["role"] == "system":
            self.opts.messages[-1] = message
        else:
            self.opts.messages.append(message)
        self.screen.write("Set system message.\n")
        self.text = ""

    def _show(self, args: list[str]) -> None:
        if len(args) < 2:
            self.screen.warn(USAGE_SHOW)
            return
        try:
            shown = show(self.client, self.opts.model, self.opts)
        except ClientError:
            self.screen.write("error: couldn't get model\n")
            raise
        say = self.screen.write
        match args[1]:
            case "info":
                self.screen.warn(model_summary(shown))
            case "license":
                say(f"{_text(shown.get('license')) or 'No license was specified for this model.'}\n")
            case "modelfile":
                say(f"{shown.get('modelfile', '')}\n")
            case "parameters":
                say(parameters_text(shown.get("parameters") or "", self.opts.options))
            case "system":
                system = self.opts.system or shown.get("system") or ""
                say(f"{system}\n\n" if system else "No system message was specified for this model.\n")
            case "template":
                say(f"{shown.get('template') or 'No prompt template was specified for this model.'}\n")
            case other:
                say(f"Unknown command '/show {other}'. Type /? for help\n")


def parameters_text(model_parameters: str, session: dict[str, Any]) -> str:
    """`/show parameters`: the model's (as /api/show lists them), then this session's."""
    lines = ["Model defined parameters:"]
    if model_parameters:
        lines += [f"  {line}" for line in model_parameters.split("\n")]
    else:
        lines.append("  No additional parameters were specified for this model.")
    lines.append("")
    if session:
        lines.append("User defined parameters:")
        lines += [f"  {name:<30} {format_value(value)}" for name, value in session.items()]
        lines.append("")
    return "".join(line + "\n" for line in lines)


def _text(value: Any) -> str:
    """A license may come as one text or several."""
    return "\n".join(value) if isinstance(value, list) else str(value or "")


def _cut_suffix(text: str, suffix: str) -> tuple[str, bool]:
    return (text[: -len(suffix)], True) if text.endswith(suffix) else (text, False)
