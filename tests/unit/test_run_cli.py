"""`corral run` as `ollama run` behaves: its flags (cmd.go), how an answer prints (word wrap,
thinking, --verbose's statistics), the request bodies, and the `>>>` commands
(interactive.go) against a fake server."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.client import ClientError
from corral.display import Answer, WrapState, display_response, go_duration, summary
from corral.flags import parse_bool_flag, parse_think, with_defaults
from corral.history import History
from corral.repl import USAGE, USAGE_PARAMETERS, USAGE_SET, Repl, parameters_text
from corral.run import (
    RunOptions,
    Screen,
    chat_body,
    create_body,
    embed_body,
    generate_body,
    infer_think,
    prompt_of,
)

GREY_BOLD = "\x1b[38;5;245m\x1b[1m"

# --- flags ---


@pytest.mark.parametrize(
    ("args", "parsed"),
    [(["m", "--think"], ["m", "--think=true"]),
     (["m", "--think", "high"], ["m", "--think=true", "high"]),
     (["m", "--think=low"], ["m", "--think=low"]),
     (["m", "--truncate", "hi"], ["m", "--truncate=true", "hi"]),
     (["m", "--", "--think"], ["m", "--", "--think"])],
    ids=["bare", "a-value-needs-equals", "joined", "truncate", "after-double-dash"],
)  # fmt: skip
def test_flags_with_an_optional_value(args: list[str], parsed: list[str]) -> None:
    assert with_defaults(args) == parsed


@pytest.mark.parametrize(
    ("text", "think"),
    [("", True), ("true", True), ("false", False), ("high", "high"), ("medium", "medium"), ("low", "low"),
     ("max", "max")],
)  # fmt: skip
def test_parse_think(text: str, think: bool | str) -> None:
    assert parse_think(text) == think


def test_parse_think_refuses_as_ollama_does() -> None:
    with pytest.raises(ValueError, match=r"^invalid value for --think") as caught:
        parse_think("TRUE")
    assert str(caught.value) == (
        'invalid value for --think: "TRUE" (must be true, false, high, medium, low, or max)'
    )


def test_parse_bool_flag() -> None:
    assert parse_bool_flag("truncate", "false") is False and parse_bool_flag("truncate", "T") is True
    with pytest.raises(ValueError) as caught:
        parse_bool_flag("truncate", "no")
    assert str(caught.value) == (
        'invalid argument "no" for "--truncate" flag: strconv.ParseBool: parsing "no": invalid syntax'
    )


@pytest.mark.parametrize(
    ("args", "piped", "prompt"),
    [(["Why", "blue?"], None, "Why blue?"), (["Summarise:"], "text\n", "text\n Summarise:"),
     ([], "text", "text"), (["Hi"], "", "Hi"), ([""], None, ""), ([], "", "")],
    ids=["arguments", "stdin-first", "stdin-only", "empty-stdin-ignored", "empty-prompt", "nothing"],
)  # fmt: skip
def test_prompt_puts_stdin_first(args: list[str], piped: str | None, prompt: str) -> None:
    assert " ".join(prompt_of(args, piped)) == prompt


# --- display ---


@pytest.mark.parametrize(
    ("content", "wrap", "width", "shown"),
    [("aaaa bbbb cccc dddd", True, 20, "aaaa bbbb cccc \x1b[K\ndddd"),
     ("aaaa bbbb ccccccc", True, 20, "aaaa bbbb ccccc\x1b[5D\x1b[K\nccccccc"),
     ("x" * 20, True, 20, "x" * 20),
     ("aaaaaaaaaa\nbbbbbbbbbb", True, 20, "aaaaaaaaaa\nbbbbbbbbbb"),
     ("日本語日本語日本語", True, 20, "日本語日本語日本語"[:8] + "\x1b[K\n語"),
     ("aaaa bbbb cccc dddd", False, 20, "aaaa bbbb cccc dddd"),
     ("aaaa bbbb cccc dddd", True, 9, "aaaa bbbb cccc dddd")],
    ids=["at-a-space", "moves-the-word", "too-long-to-move", "newline-restarts", "wide-characters",
         "off", "too-narrow"],
)  # fmt: skip
def test_word_wrap(content: str, wrap: bool, width: int, shown: str) -> None:
    assert display_response(content, wrap, WrapState(), width) == shown


def test_word_wrap_carries_its_state_across_chunks() -> None:
    state = WrapState()
    shown = [display_response(part, True, state, 20) for part in ("aaaa bbbb ", "ccccc", "cc")]
    assert shown == ["aaaa bbbb ", "ccccc", "\x1b[5D\x1b[K\nccccccc"]


def test_thinking_then_the_answer() -> None:
    answer = Answer(word_wrap=False, width=80, plain=True)
    parts = [("Let me", ""), (" think.", ""), ("", "Hi"), ("", "!")]
    shown = [answer.feed(thinking, content) for thinking, content in parts]
    assert shown == ["Thinking...\nLet me", " think.", "\n...done thinking.\n\nHi", "!"]
    assert (answer.thinking, answer.content) == ("Let me think.", "Hi!")


def test_thinking_on_a_terminal_is_grey_and_hidden_thinking_is_not_shown() -> None:
    styled = Answer(word_wrap=False, width=80, plain=False)
    assert styled.feed("Hmm\n", "") == f"{GREY_BOLD}Thinking...\n\x1b[0m\x1b[38;5;245mHmm\n"
    assert styled.feed("", "Yes") == f"{GREY_BOLD}...done thinking.\n\n\x1b[0mYes"
    hidden = Answer(word_wrap=False, width=80, plain=True, hide_thinking=True)
    assert hidden.feed("Hmm", "") + hidden.feed("", "Yes") == "Yes"


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [(0, "0s"), (800, "800ns"), (1_500, "1.5µs"), (45_000, "45µs"), (2_000_000, "2ms"),
     (523_400_000, "523.4ms"), (1_500_000_000, "1.5s"), (1_234_567_891, "1.234567891s"),
     (123_250_000_000, "2m3.25s"), (3_600_000_000_000, "1h0m0s"), (-1_500_000_000, "-1.5s")],
)  # fmt: skip
def test_go_duration(nanoseconds: int, text: str) -> None:
    assert go_duration(nanoseconds) == text


def test_summary_is_metrics_summary() -> None:
    metrics = {
        "total_duration": 1_234_567_891,
        "load_duration": 12_345_678,
        "prompt_eval_count": 10,
        "prompt_eval_duration": 250_000_000,
        "eval_count": 24,
        "eval_duration": 1_200_000_000,
    }
    assert summary(metrics) == (
        "total duration:       1.234567891s\n"
        "load duration:        12.345678ms\n"
        "prompt eval count:    10 token(s)\n"
        "prompt eval duration: 250ms\n"
        "prompt eval rate:     40.00 tokens/s\n"
        "eval count:           24 token(s)\n"
        "eval duration:        1.2s\n"
        "eval rate:            20.00 tokens/s\n"
    )
    assert summary({"eval_count": 3}) == "eval count:           3 token(s)\n"
    assert summary({}) == ""


# --- request bodies ---


def test_request_bodies_leave_out_what_is_not_set() -> None:
    opts = RunOptions("m", prompt="Hi")
    assert generate_body(opts) == {"model": "m", "prompt": "Hi"}
    assert chat_body(opts) == {"model": "m", "messages": []}
    opts = RunOptions("m", prompt="Hi", format="json", system="Be brief.", options={"seed": 1},
                      keep_alive="5m", think="high")  # fmt: skip
    assert generate_body(opts) == {"model": "m", "prompt": "Hi", "system": "Be brief.", "format": "json",
                                   "options": {"seed": 1}, "keep_alive": "5m", "think": "high"}  # fmt: skip
    assert generate_body(RunOptions("m", format='{"type": "object"}'))["format"] == {"type": "object"}
    assert embed_body("e", "text", None, False, 0) == {"model": "e", "input": "text", "truncate": False}
    assert embed_body("e", "text", "1m", None, 8) == {"model": "e", "input": "text", "keep_alive": "1m",
                                                      "dimensions": 8}  # fmt: skip


@pytest.mark.parametrize(
    ("parent", "source"),
    [("", "mine:latest"), ("smollm2:135m", "smollm2:135m"), ("/tmp/x.gguf", "mine:latest")],
    ids=["no-parent", "parent", "parent-not-a-name"],
)
def test_save_creates_from_the_parent_with_the_session(parent: str, source: str) -> None:
    opts = RunOptions("mine:latest", parent_model=parent, system="Be brief.", options={"num_predict": 8},
                      loaded_messages=[{"role": "user", "content": "Hi"}],
                      messages=[{"role": "system", "content": "Be brief."}])  # fmt: skip
    assert create_body("saved", opts) == {
        "model": "saved",
        "from": source,
        "system": "Be brief.",
        "parameters": {"num_predict": 8},
        "messages": [{"role": "user", "content": "Hi"}, {"role": "system", "content": "Be brief."}],
    }
    assert create_body("saved", RunOptions("m")) == {"model": "saved", "from": "m"}


@pytest.mark.parametrize(
    ("capabilities", "think", "explicit", "inferred"),
    [(["completion"], None, False, None), (["completion", "thinking"], None, False, True),
     (["completion", "thinking"], False, True, False), (["completion"], "high", True, "high")],
    ids=["cannot-think", "thinks-by-default", "told-not-to", "told-to"],
)  # fmt: skip
def test_infer_think(
    capabilities: list[str], think: bool | str | None, explicit: bool, inferred: Any
) -> None:
    assert infer_think(capabilities, think, explicit) == inferred


def test_show_parameters_text() -> None:
    assert parameters_text("", {}) == (
        "Model defined parameters:\n  No additional parameters were specified for this model.\n\n"
    )
    model = 'num_predict                    24\nstop                           "<a>"'
    session = {"temperature": 0.7, "stop": ["<a>", "<b>"], "num_predict": 6}
    assert parameters_text(model, session) == (
        "Model defined parameters:\n"
        "  num_predict                    24\n"
        '  stop                           "<a>"\n'
        "\n"
        "User defined parameters:\n"
        "  temperature                    0.7\n"
        "  stop                           [<a> <b>]\n"
        "  num_predict                    6\n"
        "\n"
    )


# --- the conversation, against a fake server ---

MODELS = {
    "m": {"capabilities": ["completion"], "parameters": "num_predict                    24",
          "template": "{{ .Prompt }}", "details": {}},
    "t": {"capabilities": ["completion", "thinking"], "details": {}},
}  # fmt: skip


class FakeClient:
    """/api/show from MODELS, a two-part answer to every chat, and what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def post(self, path: str, body: dict[str, Any]) -> Any:
        self.sent.append((path, body))
        if body["model"] not in MODELS:
            raise ClientError(f"model '{body['model']}' not found", 404)
        return MODELS[body["model"]]

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self.sent.append((path, body))
        return self._answer(path, body)

    def _answer(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if body.get("think") not in (None, False) and "thinking" not in MODELS[body["model"]]["capabilities"]:
            raise ClientError(f'"{body["model"]}" does not support thinking', 400)
        if path == "/api/chat":
            yield {"message": {"role": "assistant", "content": "Hello"}}
            yield {"message": {"role": "assistant", "content": "."}, "done": True, "eval_count": 2,
                   "eval_duration": 500_000_000}  # fmt: skip
        else:
            yield {"status": "success", "done": True}


def converse(*lines: str, opts: RunOptions | None = None) -> tuple[str, str, RunOptions, FakeClient]:
    """Type `lines`, then Ctrl-D; returns stdout, stderr, the options after, and the client."""
    client, out, err = FakeClient(), io.StringIO(), io.StringIO()
    typed = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None

    repl = Repl(client, opts or RunOptions("m"), Screen(out, err), read)  # type: ignore[arg-type]
    repl.run()
    return out.getvalue().removesuffix("\n"), err.getvalue(), repl.opts, client


@pytest.mark.parametrize(
    ("line", "out", "err"),
    [("/set parameter num_predict 6", "Set parameter 'num_predict' to '6'\n", ""),
     ("/set parameter stop <a> <b>", "Set parameter 'stop' to '<a>, <b>'\n", ""),
     ("/set parameter num_predict lots", 'Couldn\'t set parameter: "invalid int value [lots]"\n', ""),
     ("/set parameter heat 3", 'Couldn\'t set parameter: "unknown parameter \'heat\'"\n', ""),
     ("/set parameter seed", "", USAGE_PARAMETERS),
     ("/set", "", USAGE_SET),
     ("/set verbose", "Set 'verbose' mode.\n", ""),
     ("/set quiet", "Set 'quiet' mode.\n", ""),
     ("/set wordwrap", "Set 'wordwrap' mode.\n", ""),
     ("/set nowordwrap", "Set 'nowordwrap' mode.\n", ""),
     ("/set format json", "Set format to 'json' mode.\n", ""),
     ("/set format yaml", "Invalid or missing format. For 'json' mode use '/set format json'\n", ""),
     ("/set noformat", "Disabled format.\n", ""),
     ("/set think", "Set 'think' mode.\n", 'warning: model "m" does not support thinking output\n'),
     ("/set think high", "Set 'think' mode to 'high'.\n",
      'warning: model "m" does not support thinking output\n'),
     ("/set nothink", "Set 'nothink' mode.\n", 'warning: model "m" does not support thinking output\n'),
     ("/set history", "", ""),
     ("/set bogus", "Unknown command '/set bogus'. Type /? for help\n", ""),
     ("/set system Be brief.", "Set system message.\n", ""),
     ("/show system", "No system message was specified for this model.\n", ""),
     ("/show license", "No license was specified for this model.\n", ""),
     ("/show template", "{{ .Prompt }}\n", ""),
     ("/show bogus", "Unknown command '/show bogus'. Type /? for help\n", ""),
     ("/load", "Usage:\n  /load <modelname>\n", ""),
     ("/save", "Usage:\n  /save <modelname>\n", ""),
     ("/clear", "Cleared session context\n", ""),
     ("/?", "", USAGE),
     ("/help set", "", USAGE_SET),
     ("/list", "Unknown command '/list'. Type /? for help\n", ""),
     ("/nope x", "Unknown command '/nope'. Type /? for help\n", "")],
    ids=lambda v: v if isinstance(v, str) and v.startswith("/") else "",
)  # fmt: skip
def test_commands(line: str, out: str, err: str) -> None:
    shown, warned, _, _ = converse(line)
    assert (shown, warned) == (out, err)


def test_set_parameter_types_the_value_and_keeps_stop_as_a_list() -> None:
    _, _, opts, _ = converse("/set parameter num_predict 6", "/set parameter temperature 0.7",
                             "/set parameter stop <a> <b>")  # fmt: skip
    assert opts.options == {"num_predict": 6, "temperature": 0.7, "stop": ["<a>", "<b>"]}


def test_a_turn_sends_the_session_and_keeps_the_answer() -> None:
    typed = ("/set system Be brief.", "/set format json", "Hi", "/set verbose", "Again")
    shown, warned, opts, client = converse(*typed)
    assert shown == (
        "Set system message.\nSet format to 'json' mode.\nHello.\n\nSet 'verbose' mode.\nHello.\n\n"
    )
    assert warned == (
        "eval count:           2 token(s)\neval duration:        500ms\neval rate:            4.00 tokens/s\n"
    )
    chats = [body for path, body in client.sent if path == "/api/chat"]
    assert chats[0] == {"model": "m", "format": "json", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}  # fmt: skip
    assert [m["role"] for m in opts.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert opts.messages[2] == {"role": "assistant", "content": "Hello."}


def test_clear_keeps_the_system_message() -> None:
    _, _, opts, _ = converse("/set system Be brief.", "Hi", "/clear")
    assert opts.messages == [{"role": "system", "content": "Be brief."}]


def test_several_lines_and_a_system_message_over_several_lines() -> None:
    shown, _, opts, client = converse('/set system """You are', 'terse."""', '"""', "line one", 'line two"""')
    assert shown == "Set system message.\nHello.\n\n"
    assert opts.system == "You are\nterse."
    chat = next(body for path, body in client.sent if path == "/api/chat")
    assert chat["messages"][-1] == {"role": "user", "content": "\nline one\nline two"}


def test_think_on_a_model_that_cannot_says_so_and_goes_on() -> None:
    shown, _, opts, _ = converse("/set think", "Hi", "/set nothink", "Hi")
    assert shown == (
        "Set 'think' mode.\nerror: \"m\" does not support thinking\nSet 'nothink' mode.\nHello.\n\n"
    )
    assert opts.think is False


def test_load_a_missing_model_keeps_the_old_one() -> None:
    shown, _, opts, _ = converse("Hi", "/load nope")
    assert shown == "Hello.\n\nLoading model 'nope'\nCouldn't find model 'nope'\n"
    assert opts.model == "m" and len(opts.messages) == 2


def test_load_another_model_starts_afresh_and_thinks_if_it_can() -> None:
    shown, _, opts, client = converse("Hi", "/load t")
    assert shown == "Hello.\n\nLoading model 't'\n"
    assert (opts.model, opts.messages, opts.think) == ("t", [], True)
    assert client.sent[-1] == ("/api/generate", {"model": "t", "think": True})


def test_save_creates_the_session_as_a_model() -> None:
    shown, _, _, client = converse("/set parameter num_predict 6", "Hi", "/save mine")
    assert shown.endswith("Created new model 'mine'\n")
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    body = {"model": "mine", "from": "m", "parameters": {"num_predict": 6}, "messages": messages}
    assert client.sent[-1] == ("/api/create", body)


def test_show_parameters_lists_the_models_then_the_sessions() -> None:
    shown, _, _, _ = converse("/set parameter seed 1", "/show parameters")
    assert shown.endswith(
        "Model defined parameters:\n  num_predict                    24\n\n"
        "User defined parameters:\n  seed                           1\n\n"
    )


def test_ctrl_c_at_the_prompt_reminds_how_to_leave() -> None:
    client, out = FakeClient(), io.StringIO()
    keys: list[BaseException | str] = [KeyboardInterrupt(), "/bye"]

    def read(prompt: str) -> str:
        key = keys.pop(0)
        if isinstance(key, BaseException):
            raise key
        return key

    Repl(client, RunOptions("m"), Screen(out, io.StringIO()), read).run()  # type: ignore[arg-type]
    assert out.getvalue() == "\nUse Ctrl + d or /bye to exit.\n"


@pytest.mark.parametrize("enabled", [True, False], ids=["history", "nohistory"])
def test_history_is_saved_only_when_enabled(tmp_path: Path, enabled: bool) -> None:
    """OLLAMA_NOHISTORY opens the history disabled, as `/set nohistory` leaves it: nothing saved."""
    pytest.importorskip("readline")
    history = History(tmp_path / "history", enabled=enabled)
    try:
        history.save()
        assert (tmp_path / "history").exists() is enabled
    finally:
        history.enable(True)  # readline's auto-history is process-wide
