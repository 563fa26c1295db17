"""services.gotemplate: Go's text/template semantics, and prompts rendered exactly as Ollama renders them.

Where the expected strings come from:
- the Go-semantics and error tables: Go's own text/template (Go 1.19, `missingkey=zero`, Ollama's
  `json`) run on the same data;
- gotemplate_data/named: Ollama's template/*.gotmpl and template/testdata (ollama/ollama fb30760,
  TestTemplate), copied verbatim;
- gotemplate_data/tools: Ollama's tools/testdata at e8b981fa5 (rendered from messages.json and
  tools.json, as its TestParseToolCalls did), copied verbatim;
- gotemplate_data/thinking/qwen3.gotmpl: the "qwen3" case of Ollama's thinking/template_test.go;
- Ollama's template and thinking unit tests (TestParse, TestExecuteWithMessages,
  TestExecuteWithSuffix, TestCollate, TestInferThinkingTags), ported case by case;
- the rest by reading the template.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

import services.gotemplate as gt
from services.gotemplate import (
    ExecError,
    GoStruct,
    GoValue,
    Message,
    Template,
    TemplateError,
    ToolCall,
    Values,
    collate,
    marshal,
    parse,
    render,
    render_chat,
    render_generate,
)

DATA = Path(__file__).parent / "gotemplate_data"
P = pytest.param

# -- Go's text/template -----------------------------------------------------------------------------

GO_SEMANTICS = [
    P("hello {{ .Name }}!", {"Name": "x"}, "hello x!", id="field"),
    P("a  {{- 1 -}}  b", None, "a1b", id="trim-both"),
    P("a \n\t {{- 1}} \n b {{2 -}}\n\n c", None, "a1 \n b 2c", id="trim-newlines-and-tabs"),
    P("{{-3}}", None, "-3", id="minus-without-space-is-a-number"),
    P("{{/* c */}}x {{- /* c2 */ -}} y", None, "xy", id="comments-with-trim"),
    P("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"B": 1}, "b", id="else-if-chain"),
    P("{{ if . }}t{{ else }}f{{ end }}", [], "f", id="empty-slice-is-false"),
    P("{{ if . }}t{{ else }}f{{ end }}", {}, "f", id="empty-map-is-false"),
    P("{{ if . }}t{{ else }}f{{ end }}", 0.0, "f", id="zero-is-false"),
    P("{{ if .Missing }}t{{ else }}f{{ end }}", {}, "f", id="missing-key-is-false"),
    P("{{ range $i, $m := .M }}{{ $i }}={{ $m }};{{ end }}", {"M": ["a", "b"]}, "0=a;1=b;", id="range-index"),
    P(
        "{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}",
        {"M": {"b": 1, "a": 2, "c": [1, 2]}},
        "a=2;b=1;c=[1 2];",
        id="range-map-sorted",
    ),
    P("{{ range .M }}{{ . }};{{ else }}empty{{ end }}", {}, "empty", id="range-else"),
    P(
        "{{ range .M }}{{ if eq . 2 }}{{ continue }}{{ end }}"
        "{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}",
        {"M": [1, 2, 3, 4, 5]},
        "13",
        id="break-continue",
    ),
    P(
        "{{ range .L }}{{ range . }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }}|{{ end }}",
        {"L": [[1, 2, 3], [4]]},
        "1|4|",
        id="break-inner-range-only",
    ),
    P(
        "{{ range $i, $_ := .M }}{{ $last := eq (len (slice $.M $i)) 1 }}"
        "{{ if $last }}last={{ . }}{{ end }}{{ end }}",
        {"M": ["a", "b", "c"]},
        "last=c",
        id="last-idiom",
    ),
    P("{{ $.A }} {{ range .L }}{{ $.A }}{{ . }}{{ end }}", {"A": "a", "L": [1, 2]}, "a a1a2", id="dollar"),
    P("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", None, "2", id="assign-outer-variable"),
    P("{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}", None, "21", id="shadow-in-block"),
    P("{{ if $x := .A }}{{ $x }}{{ else }}else {{ $x }}{{ end }}", {"A": 0}, "else 0", id="if-declares"),
    P("{{ with .A }}{{ .x }}{{ else }}none{{ end }}", {"A": {"x": 1}}, "1", id="with-sets-dot"),
    P("{{ with .A }}{{ . }}{{ else }}none{{ end }}", {"A": ""}, "none", id="with-else"),
    P("{{ .A.B.C }}", {"A": {"B": {"C": "deep"}}}, "deep", id="field-chain"),
    P("{{ (index .M 0).Role }}", {"M": [{"Role": "user"}]}, "user", id="chain-on-parenthesised"),
    P("{{ .Missing }}|{{ .A }}", {"A": None}, "<no value>|<no value>", id="missing-prints-no-value"),
    P("{{ $x := .Missing }}{{ $x.Foo }}", {}, "<no value>", id="field-of-nil-variable"),
    P('{{ eq .R "a" "b" }} {{ eq .Missing "a" }} {{ eq nil nil }}', {"R": "b"}, "true false true", id="eq"),
    P(
        '{{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1.5 2.5 }} {{ ne 1 2 }}',
        None,
        "true true true false true",
        id="compare",
    ),
    P(
        '{{ and 1 0 "x" }} {{ and 1 "x" }} {{ or 0 "" }} {{ or 0 "y" 3 }} {{ not 0 }} {{ not "a" }}',
        None,
        "0 x  y true false",
        id="and-or-not",
    ),
    P("{{ and .Missing .Missing.X }} {{ or 1 .Missing.X }}", {}, "<no value> 1", id="and-or-short-circuit"),
    P(
        "{{ len .M }}|{{ index .M 1 }}|{{ slice .M 1 }}|{{ slice .M 1 2 }}",
        {"M": [1, 2, 3]},
        "3|2|[2 3]|[2]",
        id="len-index-slice",
    ),
    P(
        '{{ index .M "a" }}|{{ index .M "z" }}|{{ index "abc" 1 }}',
        {"M": {"a": 1}},
        "1|<no value>|98",
        id="index-map-string",
    ),
    P('{{ len "héllo" }} {{ slice "héllo" 0 3 }}', None, "6 hé", id="strings-are-bytes"),
    P('{{ "a" | printf "%s-%s" "b" }} {{ .X | len }}', {"X": [1, 2]}, "b-a 2", id="pipe-appends-final-arg"),
    P(
        '{{ printf "%q %5d|%-5s|%05.2f %x %X %t %c %U" "a\\"b" 42 "ab" 3.14159 255 "hi" true 65 65 }}',
        None,
        '"a\\"b"    42|ab   |03.14 ff 6869 true A U+0041',
        id="printf-verbs",
    ),
    P(
        '{{ printf "%d" "x" }} {{ printf "%s" 3 }} {{ printf "%s" }} {{ printf "x" 1 2 }} {{ printf "%" }}',
        None,
        "%!d(string=x) %!s(int=3) %!s(MISSING) x%!(EXTRA int=1, int=2) %!(NOVERB)",
        id="printf-complaints",
    ),
    P(
        '{{ printf "%s %d" .L .L }}',
        {"L": ["a", None]},
        "[a <nil>] [%!d(string=a) <nil>]",
        id="printf-nil-inside-slice",
    ),
    P(
        '{{ printf "%v %s" .M .L }}',
        {"M": {"a": [1, "x"]}, "L": ["a", "b"]},
        "map[a:[1 x]] [a b]",
        id="printf-composites",
    ),
    P(
        '{{ printf "%e %g %.3g %f" 123456.789 123456.789 123456.789 1.0 }}',
        None,
        "1.234568e+05 123456.789 1.23e+05 1.000000",
        id="printf-floats",
    ),
    P(
        '{{ print "a" "b" 1 2 "c" 3.5 nil }} {{ println "a" 1 }}',
        None,
        "ab1 2c3.5 <nil> a 1\n",
        id="print-println",
    ),
    P(
        "{{ .F }} {{ .G }} {{ .H }} {{ .I }} {{ .J }} {{ .K }} {{ .L }}",
        {"F": 123456.0, "G": 1234567.0, "H": 0.0001, "I": 0.00001, "J": 3.0, "K": -2.5e-10, "L": 1e21},
        "123456 1.234567e+06 0.0001 1e-05 3 -2.5e-10 1e+21",
        id="float-printing",
    ),
    P("{{ . }}", {"a": [1, {"b": None}], "c": True}, "map[a:[1 map[b:<nil>]] c:true]", id="map-printing"),
    P(
        '{{ html "<a href=\\"x\\">&\'" }} {{ js "a\'b\\"c<d>=&\\n" }} {{ urlquery "a b&c/d" }}',
        None,
        "&lt;a href=&#34;x&#34;&gt;&amp;&#39; a\\'b\\\"c\\u003Cd\\u003E\\u003D\\u0026\\u000A a+b%26c%2Fd",
        id="escapers",
    ),
    P(
        "{{ 010 }} {{ 0x1F }} {{ 1e3 }} {{ 1_000 }} {{ 'a' }} {{ -5 }} {{ +3 }} {{ .5 }} {{ 0x1p-2 }}",
        None,
        "8 31 1000 1000 97 -5 3 0.5 0.25",
        id="number-literals",
    ),
    P('{{ "x" }}{{ `raw\\n` }}{{ "\\u00e9\\x41\\101\\t" }}', None, "xraw\\néAA\t", id="string-literals"),
    P(
        "{{ json .M }}",
        {"M": {"b": [1, 2.5, None], "a": "<&>\u2028\u0001\t"}},
        '{"a":"\\u003c\\u0026\\u003e\\u2028\\u0001\\t","b":[1,2.5,null]}',
        id="json",
    ),
    P(
        "{{ json .F }} {{ json .G }} {{ json .H }} {{ json .I }} {{ json .J }} {{ json .K }} {{ json .L }}",
        {"F": 123456.0, "G": 1234567.0, "H": 0.0001, "I": 0.0000001, "J": 3.0, "K": -2.5e-10, "L": 1e21},
        "123456 1234567 0.0001 1e-7 3 -2.5e-10 1e+21",
        id="json-floats",
    ),
]

EXEC_ERRORS = [
    P(
        "{{ .A.B }}",
        {},
        'template: :1:5: executing "" at <.A.B>: nil pointer evaluating interface {}.B',
        id="nil-midway",
    ),
    P(
        "{{ .A.B }}",
        {"A": "str"},
        'template: :1:5: executing "" at <.A.B>: can\'t evaluate field B in type interface {}',
        id="field-of-string",
    ),
    P(
        '{{ eq 1 "a" }}',
        None,
        'template: :1:3: executing "" at <eq 1 "a">: error calling eq: incompatible types for comparison',
        id="eq-kinds",
    ),
    P(
        "{{ eq .A 1 }}",
        {"A": 1.0},
        'template: :1:3: executing "" at <eq .A 1>: error calling eq: incompatible types for comparison',
        id="eq-float-int",
    ),
    P(
        "{{ lt true false }}",
        None,
        'template: :1:3: executing "" at <lt true false>: error calling lt: invalid type for comparison',
        id="lt-bool",
    ),
    P(
        "{{ index .M 5 }}",
        {"M": [1]},
        'template: :1:3: executing "" at <index .M 5>: error calling index: index out of range: 5',
        id="index-range",
    ),
    P(
        "{{ slice .M 2 1 }}",
        {"M": [1, 2, 3]},
        'template: :1:3: executing "" at <slice .M 2 1>: error calling slice: invalid slice index: 2 > 1',
        id="slice-order",
    ),
    P(
        "{{ range .S }}{{ end }}",
        {"S": "abc"},
        'template: :1:9: executing "" at <.S>: range can\'t iterate over abc',
        id="range-string",
    ),
    P(
        "{{ len 3 }}",
        None,
        'template: :1:3: executing "" at <len 3>: error calling len: len of type int',
        id="len-int",
    ),
    P(
        "{{ not }}",
        None,
        'template: :1:3: executing "" at <not>: wrong number of args for not: want 1 got 0',
        id="arity",
    ),
    P(
        "{{ eq 1 }}",
        None,
        'template: :1:3: executing "" at <eq 1>: error calling eq: missing argument for comparison',
        id="eq-one-arg",
    ),
    P(
        "{{ .A 1 }}",
        {"A": 2},
        'template: :1:3: executing "" at <.A>: A is not a method but has arguments',
        id="field-with-args",
    ),
    P(
        "{{ 1 2 }}",
        None,
        'template: :1:3: executing "" at <1>: can\'t give argument to non-function 1',
        id="non-function",
    ),
    P("{{ nil }}", None, 'template: :1:3: executing "" at <nil>: nil is not a command', id="nil-command"),
    P(
        "{{ printf 3 }}",
        None,
        'template: :1:10: executing "" at <3>: expected string; found 3',
        id="printf-format-type",
    ),
]

PARSE_ERRORS = [
    P("{{ .Prompt ", "template: :1: unclosed action", id="unclosed-action"),
    P("{{ end }}", "template: :1: unexpected {{end}}", id="stray-end"),
    P("{{ if .A }}", "template: :1: unexpected EOF", id="missing-end"),
    P("{{ if }}{{ end }}", "template: :1: missing value for if", id="empty-if"),
    P("{{ $x }}", 'template: :1: undefined variable "$x"', id="undefined-variable"),
    P(
        "{{ range $i, $e := .L }}{{ end }}{{ $i }}",
        'template: :1: undefined variable "$i"',
        id="variable-out-of-scope",
    ),
    P("{{ foo }}", 'template: :1: function "foo" not defined', id="undefined-function"),
    P("{{ break }}", "template: :1: {{break}} outside {{range}}", id="break-outside-range"),
    P(
        "x\n{{ if 1 }}{{ else }}{{ else }}{{ end }}",
        "template: :2: expected end; found {{else}}",
        id="two-elses",
    ),
    P('{{ "unterminated }}', "template: :1: unterminated quoted string", id="unterminated-string"),
    P("{{ 3x }}", 'template: :1: bad number syntax: "3x"', id="bad-number"),
    P("{{ ( 1 }}", "template: :1: unclosed left paren", id="unclosed-paren"),
    P(
        "{{ .A\n 3x }}",
        'template: :2: bad number syntax: "3x" in action started at :1',
        id="error-in-multiline-action",
    ),
    P("{{ ) }}", 'template: :1: unexpected ")" in command', id="stray-paren"),
    P("{{/* unclosed ", "template: :1: unclosed comment", id="unclosed-comment"),
    P("{{ .A | 3 }}", "template: :1: non executable command in pipeline stage 2", id="constant-in-pipeline"),
    P("{{ $a, $b := 1 }}", "template: :1: too many declarations in command", id="two-declarations"),
    P('{{ define "x" }}{{ end }}', "template: :1: {{define}} is not supported", id="define-unsupported"),
]


@pytest.mark.parametrize(("text", "data", "expected"), GO_SEMANTICS)
def test_go_semantics(text: str, data: Any, expected: str) -> None:
    assert parse(text).execute(data) == expected


@pytest.mark.parametrize(("text", "data", "message"), EXEC_ERRORS)
def test_execution_errors_read_like_go(text: str, data: Any, message: str) -> None:
    template = parse(text)
    with pytest.raises(ExecError) as caught:
        template.execute(data)
    assert str(caught.value) == message


@pytest.mark.parametrize(("text", "message"), PARSE_ERRORS)
def test_parse_errors_read_like_go(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse(text)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)


# -- Go values: structs, String() and encoding/json ---------------------------------------------------

MESSAGE = GoStruct("*template.templateMessage", {"Role": "user", "Content": "hi"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        P("{{ .Role }}: {{ .Content }}", "user: hi", id="fields"),
        P("{{ . }}", "{user hi}", id="printed-as-go-struct"),
        P('{{ printf "%+v" . }}', "{Role:user Content:hi}", id="printed-with-names"),
        P("{{ json . }}", '{"Role":"user","Content":"hi"}', id="json-without-tags"),
    ],
)
def test_struct(text: str, expected: str) -> None:
    assert parse(text).execute(MESSAGE) == expected


def test_missing_struct_field_is_an_error_as_in_go() -> None:
    with pytest.raises(ExecError, match=r"can't evaluate field Foo in type \*template.templateMessage"):
        parse("{{ .Foo }}").execute(MESSAGE)


def test_stringer_prints_its_string_but_acts_as_its_value() -> None:
    args = GoValue({"b": 1.0, "a": "x"}, string='{"a":"x","b":1}')
    data = {"Args": args, "List": [args]}
    text = "{{ .Args }} {{ .List }} {{ len .Args }} {{ range $k, $v := .Args }}{{ $k }}={{ $v }},{{ end }}"
    text += " {{ .Args.a }}"
    assert parse(text).execute(data) == '{"a":"x","b":1} [{"a":"x","b":1}] 2 a=x,b=1, x'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        P(
            GoStruct("T", {"A": "", "B": 0, "C": [1], "D": "x"}, {"A": "a,omitempty", "B": "b", "D": "-"}),
            '{"b":0,"C":[1]}',
            id="struct-tags",
        ),
        P(GoValue(["x"], json='"x"'), '"x"', id="marshal-json-override"),
        P({"z": b"\x00\xff", "a": float("1e-7")}, '{"a":1e-7,"z":"AP8="}', id="bytes-base64"),
        P([True, None, -0.0, 12345678.0], "[true,null,-0,12345678]", id="scalars"),
    ],
)
def test_marshal_is_go_json(value: Any, expected: str) -> None:
    assert marshal(value) == expected


# -- Ollama's real templates ------------------------------------------------------------------------

CONVERSATIONS = {
    "user": [Message("user", "Hello, how are you?")],
    "user-assistant-user": [
        Message("user", "Hello, how are you?"),
        Message("assistant", "I'm doing great. How can I help you today?"),
        Message("user", "I'd like to show off how chat templating works!"),
    ],
}
CONVERSATIONS["system-user-assistant-user"] = [
    Message("system", "You are a helpful assistant."),
    *CONVERSATIONS["user-assistant-user"],
]
NAMED = sorted(p.stem for p in (DATA / "named").glob("*.gotmpl"))
# Ollama's own test strips one trailing space these templates leave after the last [/INST].
TRAILING_SPACE = {"llama2-chat", "mistral-instruct"}


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", NAMED)
def test_ollama_named_templates(name: str, conversation: str) -> None:
    template = parse((DATA / "named" / f"{name}.gotmpl").read_text())
    got = render(template, Values(CONVERSATIONS[conversation]))
    if name in TRAILING_SPACE and got.endswith(" "):
        got = got[:-1]
    assert got == (DATA / "named" / name / conversation).read_text()


TOOL_MESSAGES = [Message.from_api(m) for m in json.loads((DATA / "tools" / "messages.json").read_text())]
TOOLS = json.loads((DATA / "tools" / "tools.json").read_text())


@pytest.mark.parametrize("name", sorted(p.stem for p in (DATA / "tools").glob("*.gotmpl")))
def test_ollama_tool_templates(name: str) -> None:
    """System prompt, a tool call, its result and a reply, then a question, with one tool offered."""
    template = parse((DATA / "tools" / f"{name}.gotmpl").read_text())
    assert render(template, Values(TOOL_MESSAGES, TOOLS)) == (DATA / "tools" / f"{name}.out").read_text()


def _named(name: str) -> Template:
    return parse((DATA / "named" / f"{name}.gotmpl").read_text())


def _tools(name: str) -> Template:
    return parse((DATA / "tools" / f"{name}.gotmpl").read_text())


# Ollama's TestExecuteWithMessages: prompt-only (legacy) templates give the same prompt as .Messages ones.
MISTRAL_LEGACY = "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}[/INST] "
MISTRAL_MESSAGES = (
    "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}\n{{- range .Messages }}\n"
    '{{- if eq .Role "user" }}{{ .Content }}[/INST] '
    '{{ else if eq .Role "assistant" }}{{ .Content }}[INST] {{ end }}\n'
    "{{- end }}"
)
CHATML_LEGACY = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
    "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)
CHATML_MESSAGES = (
    "\n{{- range $index, $_ := .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
HELLO = [
    Message("user", "Hello friend!"),
    Message("assistant", "Hello human!"),
    Message("user", "What is your name?"),
]
SYSTEM_HELLO = [Message("system", "You are a helpful assistant!"), *HELLO]
HELLO_PROMPT = "Hello friend![/INST] Hello human![INST] What is your name?[/INST] "
CHATML_HELLO = (
    "<|im_start|>system\nYou are a helpful assistant!<|im_end|>\n<|im_start|>user\nHello friend!<|im_end|>\n"
    "<|im_start|>assistant\nHello human!<|im_end|>\n<|im_start|>user\nWhat is your name?<|im_end|>\n"
    "<|im_start|>assistant\n"
)


@pytest.mark.parametrize(
    ("text", "messages", "expected"),
    [
        P(
            MISTRAL_LEGACY,
            HELLO,
            "[INST] " + HELLO_PROMPT,
            id="mistral-no-response",
        ),
        P(
            MISTRAL_LEGACY + "{{ .Response }}",
            HELLO,
            "[INST] " + HELLO_PROMPT,
            id="mistral-response",
        ),
        P(
            MISTRAL_MESSAGES,
            HELLO,
            "[INST] " + HELLO_PROMPT,
            id="mistral-messages",
        ),
        P(
            MISTRAL_LEGACY,
            SYSTEM_HELLO,
            "[INST] You are a helpful assistant!\n\n" + HELLO_PROMPT,
            id="mistral-system-legacy",
        ),
        P(
            MISTRAL_MESSAGES,
            SYSTEM_HELLO,
            "[INST] You are a helpful assistant!\n\n" + HELLO_PROMPT,
            id="mistral-system-messages",
        ),
        P(
            "[INST] {{ .Prompt }}[/INST] {{ .Response }}",
            [*HELLO, Message("assistant", "My name is Ollama and I")],
            "[INST] " + HELLO_PROMPT + "My name is Ollama and I",
            id="legacy-continues-assistant",
        ),
        P(
            CHATML_LEGACY,
            SYSTEM_HELLO,
            CHATML_HELLO,
            id="chatml-legacy",
        ),
        P(
            CHATML_MESSAGES,
            SYSTEM_HELLO,
            CHATML_HELLO,
            id="chatml-messages",
        ),
    ],
)
def test_legacy_and_messages_templates_agree(text: str, messages: list[Message], expected: str) -> None:
    assert render(text, Values(messages)) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        P(Values([Message("user", "hello")]), "hello", id="chat-message"),
        P(
            Values(prompt="def add(", suffix="return x"),
            "<PRE> def add( <SUF>return x <MID>",
            id="fill-in-middle",
        ),
    ],
)
def test_suffix(values: Values, expected: str) -> None:
    text = (
        "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>\n{{- else }}{{ .Prompt }}\n{{- end }}"
    )
    assert render(text, values) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        P("{{ .Prompt }}", ["prompt", "response"], id="response-appended"),
        P(
            "{{ .System }} {{ .Prompt }} {{ .Response }}",
            ["prompt", "response", "system"],
            id="prompt-response-system",
        ),
        P(
            "{{ with .Tools }}{{ . }}{{ end }} {{ .System }} {{ .Prompt }}",
            ["prompt", "response", "system", "tools"],
            id="tools-block",
        ),
        P(
            "{{ range .Messages }}{{ .Role }} {{ .Content }}{{ end }}",
            ["content", "messages", "role"],
            id="messages-range",
        ),
        P(
            '{{ range .Messages }}{{ if eq .Role "tool" }}Tool Result: '
            "{{ .ToolName }} {{ .Content }}{{ end }}{{ end }}",
            ["content", "messages", "role", "toolname"],
            id="tool-result",
        ),
        P(CHATML_LEGACY, ["prompt", "response", "system"], id="chatml-legacy"),
    ],
)
def test_variables(text: str, expected: list[str]) -> None:
    assert parse(text).variables() == expected


def test_variables_of_real_templates_give_capabilities() -> None:
    qwen = _tools("qwen2.5").variables()
    assert {"tools", "suffix", "messages", "$last", "$"} <= set(qwen)
    assert "tools" not in _named("chatml").variables()
    assert "tools" in _named("command-r").variables()
    assert "suffix" not in _tools("llama3.2").variables()


THINKING_BASIC = """
{{ if .Thinking}}
/think
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{ if and $last .Thinking }}
<think>{{ .Thinking }}</think>
{{ end }}
{{ end }}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        P(THINKING_BASIC, ("<think>", "</think>"), id="basic"),
        P(
            THINKING_BASIC.replace("{{- $last", "{{- range $j, $_ := .NotMessages }}{{- $last").replace(
                "{{ end }}\n{{ end }}\n", "{{ end }}\n{{ end }}\n{{ end }}\n"
            ),
            ("", ""),
            id="doubly-nested-range",
        ),
        P(
            THINKING_BASIC.replace(
                "<think>{{ .Thinking }}</think>", "Some text before   {{ .Thinking }}    Some text after"
            ),
            ("Some text before", "Some text after"),
            id="whitespace-trimmed",
        ),
        P((DATA / "thinking" / "qwen3.gotmpl").read_text(), ("<think>", "</think>"), id="qwen3"),
        P((DATA / "tools" / "qwen3.gotmpl").read_text(), ("", ""), id="qwen3-without-thinking"),
        P(MISTRAL_MESSAGES, ("", ""), id="no-thinking"),
    ],
)
def test_thinking_tags(text: str, expected: tuple[str, str]) -> None:
    assert parse(text).thinking_tags() == expected


@pytest.mark.parametrize(
    ("messages", "system", "contents"),
    [
        P(
            [Message("user", "Hello"), Message("user", "How are you?")],
            "",
            ["Hello\n\nHow are you?"],
            id="merge-consecutive",
        ),
        P(
            [Message("tool", "sunny", tool_name="w"), Message("tool", "72F", tool_name="t")],
            "",
            ["sunny", "72F"],
            id="tools-kept-apart",
        ),
        P(
            [Message("system", "S1"), Message("system", "S2"), Message("user", "U")],
            "S1\n\nS2",
            ["S1\n\nS2", "U"],
            id="systems-joined",
        ),
    ],
)
def test_collate(messages: list[Message], system: str, contents: list[str]) -> None:
    got_system, collated = collate(messages)
    assert got_system == system
    assert [m.content for m in collated] == contents


# -- Ollama's data as templates see it ----------------------------------------------------------------

WEATHER_CALL = Message(
    "assistant", tool_calls=(ToolCall("get_weather", {"unit": "celsius", "location": "Tokyo", "days": 3}),)
)


@pytest.mark.parametrize(
    ("text", "tools", "expected"),
    [
        P(
            "{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Arguments }}{{ end }}{{ end }}",
            None,
            '{"days":3,"location":"Tokyo","unit":"celsius"}',
            id="arguments-print-json",
        ),
        P(
            "{{ range .Messages }}{{ range .ToolCalls }}{{ range $k, $v := .Function.Arguments }}"
            "{{ $k }}={{ $v }};{{ end }}{{ end }}{{ end }}",
            None,
            "days=3;location=Tokyo;unit=celsius;",
            id="arguments-range",
        ),
        P(
            "{{ range .Messages }}{{ end }}{{ range .Tools }}"
            "{{ range $name, $p := .Function.Parameters.Properties }}"
            "{{ $name }}:{{ $p.Type }}:{{ toTypeScriptType $p }};{{ end }}{{ end }}",
            TOOLS,
            "format:string:string;location:string:string;",
            id="properties-range",
        ),
        P("{{ range .Messages }}{{ end }}{{ .Tools }}", None, "null", id="no-tools-print-null"),
        P(
            "{{ range .Messages }}{{ end }}{{ if .Tools }}yes{{ else }}no{{ end }} {{ len .Tools }}",
            [],
            "no 0",
            id="empty-tools-false",
        ),
        P(
            "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ .Function.Parameters }}{{ end }}",
            TOOLS,
            '{"type":"object","required":["location","format"],"properties":{"format":{"type":"string",'
            '"description":"The temperature unit to use. Infer this from the user\'s location.",'
            '"enum":["celsius","fahrenheit"]},"location":{"type":"string",'
            '"description":"The city and state, e.g. San Francisco, CA"}}}',
            id="parameters-print-json",
        ),
    ],
)
def test_ollama_template_data(text: str, tools: Any, expected: str) -> None:
    assert render(text, Values([WEATHER_CALL], tools)) == expected


def test_unknown_tool_schema_keys_are_dropped_and_numbers_are_floats() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "parameters": {
                "type": "object",
                "properties": {
                    "n": {"type": ["integer", "null"], "minimum": 1, "enum": [1, 2]},
                    "o": {"type": "object", "properties": {"z": {"type": "string"}, "a": {"type": "number"}}},
                },
            },
        },
    }
    text = (
        "{{ range .Messages }}{{ end }}{{ range .Tools }}{{ . }}|"
        "{{ range .Function.Parameters.Properties }}{{ toTypeScriptType . }};{{ end }}{{ end }}"
    )
    assert render(text, Values([], [tool])) == (
        '{"type":"function","function":{"name":"f","description":"","parameters":{"type":"object","properties":'
        '{"n":{"type":["integer","null"],"enum":[1,2]},"o":{"type":"object","properties":{"z":{"type":"string"},'
        '"a":{"type":"number"}}}}}}}|number | null;Record<string, any>;'
    )


@pytest.mark.parametrize(
    ("think", "expected"),
    [
        P(None, "false||false", id="unset"),
        P(True, "true|medium|true", id="true"),
        P(False, "false||true", id="false"),
        P("high", "true|high|true", id="level"),
    ],
)
def test_think_values(think: gt.Think, expected: str) -> None:
    text = "{{ range .Messages }}{{ end }}{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}"
    assert render(text, Values([Message("user", "hi")], think=think)) == expected


def test_ollama_functions() -> None:
    today = datetime.date.today()
    text = "{{ currentDate }} {{ yesterdayDate }} {{ json .Prompt }} {{ toTypeScriptType .Prompt }}"
    assert parse(text).execute({"Prompt": "a<b"}) == (
        f'{today.isoformat()} {(today - datetime.timedelta(days=1)).isoformat()} "a\\u003cb" any'
    )


# -- chatPrompt and /api/generate -----------------------------------------------------------------------

CHATML = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
CHATML += "<|im_start|>assistant\n"
LONG_CHAT = [
    Message("system", "Be brief."),
    Message("user", "one " * 20),
    Message("assistant", "two " * 20),
    Message("user", "three"),
]


def _words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize(
    ("num_ctx", "kept"),
    [
        P(100, ["system", "user", "assistant", "user"], id="fits"),
        P(30, ["system", "assistant", "user"], id="drops-oldest-keeps-system"),
        P(5, ["system", "user"], id="always-keeps-last"),
    ],
)
def test_render_chat_truncates_to_num_ctx(num_ctx: int, kept: list[str]) -> None:
    prompt = render_chat(CHATML, LONG_CHAT, num_ctx=num_ctx, count_tokens=_words)
    roles = [
        line.removeprefix("<|im_start|>")
        for line in prompt.text.splitlines()
        if line.startswith("<|im_start|>")
    ]
    assert roles == [*kept, "assistant"]
    assert prompt.text.count("three") == 1


def test_render_chat_tags_images() -> None:
    messages = [
        Message("user", "look", images=(b"A", b"B")),
        Message("user", "compare [img] with", images=(b"C",)),
    ]
    prompt = render_chat("{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}", messages)
    assert prompt.text == "user: [img-0][img-1]look\n\ncompare [img-2] with\n"
    assert prompt.images == (b"A", b"B", b"C")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        P({"prompt": "Hi"}, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", id="prompt"),
        P(
            {"prompt": "Hi", "system": "Sys", "images": [b"png"]},
            "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\n[img-0]Hi<|im_end|>\n<|im_start|>assistant\n",
            id="system-and-image",
        ),
        P(
            {"prompt": "Hi", "history": [Message("user", "Earlier"), Message("assistant", "Reply")]},
            "<|im_start|>user\nEarlier<|im_end|>\n<|im_start|>assistant\nReply<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            id="model-messages",
        ),
        P(
            {"prompt": "Hi", "system": "Sys", "request_template": "{{ .System }}/{{ .Prompt }}"},
            "Sys/Hi",
            id="request-template",
        ),
        P(
            {"prompt": "def f(", "suffix": "pass", "system": "ignored"},
            "<PRE> def f( <SUF>pass <MID>",
            id="suffix",
        ),
    ],
)
def test_render_generate(kwargs: dict[str, Any], expected: str) -> None:
    template = CHATML + "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ end }}"
    if "suffix" in kwargs:
        template = "{{ if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ end }}"
    assert render_generate(template, **kwargs).text == expected
