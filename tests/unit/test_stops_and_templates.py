"""Stop sequences over streamed text, and chat templates rendered in the sandbox."""

from __future__ import annotations

import pytest

from services.protocol import ChatMessage
from services.worker.chat_template import TemplateRenderError, render_chat
from services.worker.stops import StopMatcher


@pytest.mark.parametrize(
    ("stops", "pieces", "sent", "stopped"),
    [
        ([], ["Hello", " world"], "Hello world", False),
        (["\n"], ["one", "\ntwo"], "one", True),
        (["END"], ["abc E", "N", "D tail"], "abc ", True),
        (["END"], ["abc E", "N", "x"], "abc ENx", False),
        (["<|im_end|>"], ["hi<|im", "_end|>more"], "hi", True),
        (["ab", "b"], ["xb"], "x", True),
        (["abcd", "bc"], ["xab", "cd"], "x", True),
        (["", "END"], ["a", "b"], "ab", False),
        (["a" + str(n).zfill(7) for n in range(100_000)], ["say a000", "1234 now"], "say ", True),
        (["a" + str(n).zfill(7) for n in range(100_000)], ["say a000", "x"], "say a000x", False),
    ],
    ids=[
        "no-stops",
        "newline",
        "split-over-pieces",
        "false-alarm",
        "special",
        "earliest",
        "earliest-start-not-first-end",
        "empty-stop-ignored",
        "100k-stops-hit",
        "100k-stops-held-then-sent",
    ],
)
def test_stop_matcher(stops: list[str], pieces: list[str], sent: str, stopped: bool) -> None:
    matcher = StopMatcher(stops)
    out, hit = "", False
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out += text
        if hit:
            break
    if not hit:
        out += matcher.flush()
    assert (out, hit) == (sent, stopped)


CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_render_chat_with_generation_prompt() -> None:
    text = render_chat(CHATML, [ChatMessage(role="user", content="Hi")])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_template_errors_are_reported() -> None:
    strict = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}"
    with pytest.raises(TemplateRenderError, match="system first"):
        render_chat(strict, [ChatMessage(role="user", content="x")])


def test_sandbox_blocks_python_internals() -> None:
    escape = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateRenderError):
        render_chat(escape, [ChatMessage(role="user", content="x")])


@pytest.mark.parametrize(
    ("think", "rendered"),
    [(None, "thinking=unset effort=unset"), (False, "thinking=False effort=unset"),
     (True, "thinking=True effort=unset"), ("low", "thinking=True effort=low"),
     ("max", "thinking=True effort=high")],
    ids=["unset", "off", "on", "low", "max-as-high"],
)  # fmt: skip
def test_think_reaches_a_chat_template_as_hugging_face_names_it(
    think: bool | str | None, rendered: str
) -> None:
    template = (
        "thinking={{ enable_thinking if enable_thinking is defined else 'unset' }} "
        "effort={{ reasoning_effort if reasoning_effort is defined else 'unset' }}"
    )
    assert render_chat(template, [ChatMessage(role="user", content="x")], think=think) == rendered
