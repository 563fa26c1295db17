"""The `corral` command against a real stack, as a user types it (the REPL through a pty)."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from corral.modelfile import INVALID_COMMAND
from tests.stack import MODEL, Stack
from tests.watch import DEADLINE

CORRAL = str(Path(sys.executable).with_name("corral"))


def corral(
    stack: Stack, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {}), "OLLAMA_HOST": f"127.0.0.1:{stack.port}"}
    return subprocess.run(
        [CORRAL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=DEADLINE
    )


# The bundled model with a bounded, greedy answer: at its default temperature it sometimes
# rambles for thousands of tokens (seen: 6,136 in two minutes), and these tests are about the
# command, not the model.
BRIEF = "brief:cli"


@pytest.fixture(scope="module")
def brief(stack: Stack) -> str:
    body = {
        "model": BRIEF,
        "from": MODEL,
        "parameters": {"num_predict": 24, "temperature": 0},
        "stream": False,
    }
    assert httpx.post(f"{stack.url}/api/create", json=body, timeout=DEADLINE).status_code == 200
    return BRIEF


def test_list_and_ps(stack: Stack, brief: str) -> None:
    listed = corral(stack, "list")
    assert listed.returncode == 0 and listed.stdout.splitlines()[0].split() == [
        "NAME",
        "ID",
        "SIZE",
        "MODIFIED",
    ]
    assert any(line.startswith(MODEL) for line in listed.stdout.splitlines())
    assert corral(stack, "run", brief, "Hi").returncode == 0
    running = corral(stack, "ps").stdout.splitlines()
    assert running[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    row = next(line for line in running if line.startswith(MODEL))
    assert "100% CPU" in row and "from now" in row


def test_ls_is_list(stack: Stack) -> None:
    listed, aliased = corral(stack, "list"), corral(stack, "ls")
    assert aliased.returncode == 0 and aliased.stdout.splitlines()[0] == listed.stdout.splitlines()[0]
    assert [line.split()[:2] for line in aliased.stdout.splitlines()] == [
        line.split()[:2] for line in listed.stdout.splitlines()
    ]  # NAME and ID: MODIFIED may have moved on between the two


def test_ps_context_is_the_loaded_context_and_its_filter_keeps_case(stack: Stack) -> None:
    """The CONTEXT column: the context the model was loaded with, OLLAMA_CONTEXT_LENGTH's 2048
    by default. `ps` filters by a case-sensitive prefix, as ListRunningHandler does."""
    assert corral(stack, "run", MODEL, "").returncode == 0  # loaded with its default options
    loaded = {m["name"]: m for m in httpx.get(f"{stack.url}/api/ps").json()["models"]}
    assert loaded[MODEL]["context_length"] == 2048
    running = corral(stack, "ps", "smollm2").stdout.splitlines()
    assert running[0].split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    row = rf"{re.escape(MODEL)} +\S{{12}} +[\d.]+ [KMG]B +100% CPU +2048 +.+ from now {{4}}"
    assert re.fullmatch(row, running[1]), running
    assert corral(stack, "ps", "SMOLLM2").stdout.splitlines()[1:] == []


def test_stop_all_unloads_every_model(stack: Stack, brief: str) -> None:
    assert corral(stack, "run", brief, "").returncode == 0  # loaded
    assert httpx.get(f"{stack.url}/api/ps").json()["models"] != []
    done = corral(stack, "stop", "--all")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert httpx.get(f"{stack.url}/api/ps").json()["models"] == []


def test_local_traffic_never_goes_through_a_proxy(stack: Stack) -> None:
    """Every proxy variable names a dead port and nothing is exempt: `corral list` still answers."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    proxies = {name: dead for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")}
    env = {**proxies, **{k.lower(): v for k, v in proxies.items()}, "NO_PROXY": "", "no_proxy": ""}
    listed = corral(stack, "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith(MODEL) for line in listed.stdout.splitlines())


def test_run_answers_a_prompt_and_stdin(stack: Stack, brief: str) -> None:
    one_shot = corral(stack, "run", brief, "Say", "hi")
    assert one_shot.returncode == 0 and one_shot.stdout.strip() and one_shot.stdout.endswith("\n\n")
    piped = corral(stack, "run", brief, stdin="What is 2+2?")
    assert piped.returncode == 0 and piped.stdout.strip()
    both = corral(stack, "run", brief, "Answer in one word.", stdin="What is 2+2?")  # stdin first
    assert both.returncode == 0 and both.stdout.strip()


def test_run_verbose_prints_the_statistics_on_stderr(stack: Stack, brief: str) -> None:
    done = corral(stack, "run", "--verbose", brief, "Hi")
    assert done.returncode == 0 and done.stdout.strip()
    labels = [line.split(":")[0] for line in done.stderr.splitlines()]
    assert labels[0] == "total duration" and labels[-3:] == ["eval count", "eval duration", "eval rate"]
    assert re.fullmatch(r"eval rate: {12}\d+\.\d\d tokens/s", done.stderr.splitlines()[-1])


def test_run_with_an_empty_prompt_loads_the_model_and_exits(stack: Stack, brief: str) -> None:
    """The FAQ's preload, as `ollama run MODEL ""`."""
    assert corral(stack, "stop", brief).returncode == 0
    done = corral(stack, "run", brief, "")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert any(line.startswith(brief) for line in corral(stack, "ps").stdout.splitlines())


def test_show_cp_rm_stop(stack: Stack) -> None:
    shown = corral(stack, "show", MODEL)
    assert "Capabilities" in shown.stdout and "tools" in shown.stdout and "context length" in shown.stdout
    assert "<tool_call>" in corral(stack, "show", MODEL, "--template").stdout
    assert corral(stack, "cp", MODEL, "mine:cli").stdout.strip() == f"copied '{MODEL}' to 'mine:cli'"
    assert corral(stack, "rm", "mine:cli").stdout.strip() == "deleted 'mine:cli'"
    assert corral(stack, "stop", MODEL).returncode == 0
    assert not any(line.startswith(MODEL) for line in corral(stack, "ps").stdout.splitlines())


def test_show_verbose_adds_the_metadata_and_the_tensors(stack: Stack) -> None:
    """`ollama show -v`: every GGUF key (arrays cut to their first items) and every tensor."""
    plain = corral(stack, "show", MODEL).stdout
    shown = corral(stack, "show", "-v", MODEL)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "  Metadata" not in plain and "  Metadata" in lines and "  Tensors" in lines
    assert any(re.fullmatch(r" {4}token_embd\.weight +Q8_0 +\[576 49152\] {4}", line) for line in lines)
    # the whole vocabulary came (verbose), and shows as its first token and a count
    tokens = r" {4}tokenizer\.ggml\.tokens +\[<\|endoftext\|> \.\.\.\+49151 more\] {4}"
    assert any(re.fullmatch(tokens, line) for line in lines)


def test_create_from_a_modelfile(stack: Stack, tmp_path: Path) -> None:
    """FROM a local GGUF (uploaded as a blob first) and FROM a model, with the other commands."""
    shown = corral(stack, "show", MODEL, "--modelfile").stdout
    gguf = next(line[5:] for line in shown.splitlines() if line.startswith("FROM /"))
    (tmp_path / "weights.gguf").symlink_to(gguf)
    (tmp_path / "Modelfile").write_text(
        'FROM ./weights.gguf\nSYSTEM """You are terse."""\nPARAMETER temperature 0.2\n'
        "PARAMETER stop <end>\nMESSAGE user Hi\nMESSAGE assistant Hello.\n"
    )
    made = corral(stack, "create", "terse", "-f", str(tmp_path / "Modelfile"))
    assert made.returncode == 0, made.stderr
    lines = made.stderr.splitlines()
    assert lines[0].startswith("copying file sha256:") and lines[0].endswith(" 100%")
    assert lines[1] == "parsing GGUF" and lines[-2:] == ["writing manifest", "success"]
    modelfile = corral(stack, "show", "terse", "--modelfile").stdout
    assert "SYSTEM You are terse.\n" in modelfile and "PARAMETER temperature 0.2\n" in modelfile
    assert modelfile.rstrip().endswith("PARAMETER stop <end>\nMESSAGE user Hi\nMESSAGE assistant Hello.")
    assert corral(stack, "run", "terse", "Hi").returncode == 0

    (tmp_path / "Modelfile").write_text("FROM terse\nSYSTEM Be brief.\n")  # run from its directory
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{stack.port}"}
    again = subprocess.run(
        [CORRAL, "create", "brief"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE
    )
    assert again.returncode == 0 and again.stderr.splitlines()[-1] == "success"
    assert "PARAMETER temperature 0.2" in corral(stack, "show", "brief", "--modelfile").stdout  # inherited
    assert corral(stack, "rm", "brief", "terse").returncode == 0


@pytest.mark.parametrize(
    ("modelfile", "error"),
    [("FORM x\n", f"Error: (line 1): {INVALID_COMMAND}"),
     ("FROM x\nPARAMETER heat 3\n", "Error: unknown parameter 'heat'"),
     ("SYSTEM hi\n", "Error: no FROM line")],
    ids=["bad-command", "bad-parameter", "no-from"],
)  # fmt: skip
def test_create_errors(stack: Stack, tmp_path: Path, modelfile: str, error: str) -> None:
    (tmp_path / "Modelfile").write_text(modelfile)
    done = corral(stack, "create", "x", "-f", str(tmp_path / "Modelfile"))
    assert done.returncode == 1 and done.stderr.strip() == error


def test_create_from_an_unknown_model_pulls_it_and_says_why_that_failed(stack: Stack, tmp_path: Path) -> None:
    """As `ollama create`: FROM a model that is not here is pulled first (registry.ollama.ai,
    which this machine cannot reach: the pull's own error ends it)."""
    (tmp_path / "Modelfile").write_text("FROM nope\n")
    done = corral(stack, "create", "x", "-f", str(tmp_path / "Modelfile"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[0] == "pulling manifest"
    assert lines[-1].startswith("Error: pull model manifest: ")


@pytest.mark.parametrize(
    ("args", "error"),
    [(("show", "nope"), "Error: model 'nope' not found"),
     (("stop", "nope"), 'Error: couldn\'t find model "nope" to stop'),
     (("run", MODEL, "--think=maybe", "hi"),
      'Error: invalid value for --think: "maybe" (must be true, false, high, medium, low, or max)'),
     (("run", MODEL, "--think", "hi"), f'Error: "{MODEL}" does not support thinking')],
    ids=["show", "stop", "run-think-value", "run-think-unsupported"],
)  # fmt: skip
def test_errors_are_one_line_and_exit_non_zero(stack: Stack, args: tuple[str, ...], error: str) -> None:
    done = corral(stack, *args)
    assert done.returncode == 1 and done.stderr.strip() == error


def test_run_pulls_a_model_that_is_not_here(stack: Stack) -> None:
    """As `ollama run` (showOrPullModel): the pull fails offline, with the registry's error."""
    done = corral(stack, "run", "nope", "hi")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and lines[0] == "pulling manifest"
    assert lines[-1].startswith("Error: pull model manifest: ")
    assert [line for line in lines if line.startswith("Error:")] == [lines[-1]]


class Terminal:
    """A program on a pseudo-terminal: type lines, wait for text on the screen."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.screen = ""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait_for(self, text: str) -> str:
        """Everything shown up to `text` (which is then consumed)."""
        deadline = time.monotonic() + DEADLINE
        while text not in self.screen:
            assert time.monotonic() < deadline, f"never saw {text!r} in {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], 1.0)
            if ready:
                self.screen += os.read(self.master, 4096).decode(errors="replace")
        shown, _, self.screen = self.screen.partition(text)
        return shown


def test_the_conversation_at_the_prompt(stack: Stack) -> None:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{stack.port}"}
    term = Terminal([CORRAL, "run", MODEL], env)
    try:
        term.wait_for(">>> ")
        term.type("/set parameter num_predict 6\r")
        assert "Set parameter 'num_predict' to '6'" in term.wait_for(">>> ")
        term.type("Hello\r")
        assert term.wait_for(">>> ").strip()
        term.type('"""\rline one\rline two\r"""\r')
        assert term.wait_for(">>> ").strip()
        term.type("/show info\r")
        assert "Capabilities" in term.wait_for(">>> ")
        term.type("/clear\r")
        assert "Cleared session context" in term.wait_for(">>> ")
        term.type("/bye\r")
        assert term.process.wait(DEADLINE) == 0
    finally:
        term.process.kill()
        os.close(term.master)


def test_the_conversations_commands(stack: Stack, brief: str, tmp_path: Path) -> None:
    """/set think on a model that cannot think, /load of a missing model keeps the old one,
    /show parameters, /save then run the saved model; lines go to the history file."""
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{stack.port}", "CORRAL_DATA_DIR": str(tmp_path)}
    term = Terminal([CORRAL, "run", brief], env)
    try:
        term.wait_for(">>> ")
        term.type("/set think\r")
        shown = term.wait_for(">>> ")
        assert f'warning: model "{brief}" does not support thinking output' in shown
        assert "Set 'think' mode." in shown
        term.type("Hello\r")
        assert f'error: "{brief}" does not support thinking' in term.wait_for(">>> ")
        term.type("/set nothink\r")
        assert "Set 'nothink' mode." in term.wait_for(">>> ")
        term.type("/load nope\r")
        shown = term.wait_for(">>> ")
        assert "Loading model 'nope'\r\nCouldn't find model 'nope'" in shown
        term.type("/set parameter num_predict 8\r")
        assert "Set parameter 'num_predict' to '8'" in term.wait_for(">>> ")
        term.type("/set parameter num_predict eight\r")
        assert 'Couldn\'t set parameter: "invalid int value [eight]"' in term.wait_for(">>> ")
        term.type("Hi\r")  # still the old model
        assert "does not support" not in term.wait_for(">>> ")
        term.type("/show parameters\r")
        shown = term.wait_for(">>> ")
        assert "Model defined parameters:" in shown and "User defined parameters:" in shown
        term.type("/save saved:cli\r")
        assert "Created new model 'saved:cli'" in term.wait_for(">>> ")
        term.type("/bye\r")
        assert term.process.wait(DEADLINE) == 0
    finally:
        term.process.kill()
        os.close(term.master)
    assert "/save saved:cli" in (tmp_path / "history").read_text()
    modelfile = corral(stack, "show", "saved:cli", "--modelfile").stdout
    assert "PARAMETER num_predict 8" in modelfile and "MESSAGE user Hi" in modelfile
    assert corral(stack, "run", "saved:cli", "Hi").returncode == 0
    assert corral(stack, "rm", "saved:cli").returncode == 0


def test_nohistory_saves_no_history(stack: Stack, brief: str, tmp_path: Path) -> None:
    """OLLAMA_NOHISTORY=1: the conversation writes no history file (one is written without it,
    test_the_conversations_commands)."""
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{stack.port}", "CORRAL_DATA_DIR": str(tmp_path),
           "OLLAMA_NOHISTORY": "1"}  # fmt: skip
    term = Terminal([CORRAL, "run", brief], env)
    try:
        term.wait_for(">>> ")
        term.type("/set parameter num_predict 8\r")
        assert "Set parameter 'num_predict' to '8'" in term.wait_for(">>> ")
        term.type("/bye\r")
        assert term.process.wait(DEADLINE) == 0
    finally:
        term.process.kill()
        os.close(term.master)
    assert not (tmp_path / "history").exists()
