"""The Modelfile parser and the /api/create body (Ollama's parser/parser_test.go, ported)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
from pathlib import Path
from types import SimpleNamespace

import pytest

from corral.modelfile import (
    Command,
    ModelfileError,
    create_request,
    decode_modelfile,
    format_modelfile,
    format_parameters,
    parse,
)

INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
LLAMA3_TEMPLATE = (
    "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
    "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
)


def cmds(*pairs: tuple[str, str]) -> list[Command]:
    return [Command(name, args) for name, args in pairs]


FOO = ("model", "foo")

PARSE_CASES = [
    (
        "file",
        f"\nFROM model1\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\n"
        f'TEMPLATE """{LLAMA3_TEMPLATE}"""    \n',
        cmds(
            ("model", "model1"),
            ("adapter", "adapter1"),
            ("license", "MIT"),
            ("param1", "value1"),
            ("param2", "value2"),
            ("template", LLAMA3_TEMPLATE),
        ),
    ),
    (
        "trim space",
        f'\nFROM "     model 1"\nADAPTER      adapter3\nLICENSE "MIT       "\n'
        f"PARAMETER param1        value1\n"
        f'PARAMETER param2    value2\nTEMPLATE """   {LLAMA3_TEMPLATE}   """    \n',
        cmds(
            ("model", "     model 1"),
            ("adapter", "adapter3"),
            ("license", "MIT       "),
            ("param1", "value1"),
            ("param2", "value2"),
            ("template", f"   {LLAMA3_TEMPLATE}   "),
        ),
    ),
    ("draft", "\nFROM base\nDRAFT ./assistant\n", cmds(("model", "base"), ("draft", "./assistant"))),
    ("from quoted", 'FROM "FOO  BAR  "', cmds(("model", "FOO  BAR  "))),
    (
        "from then parameter",
        'FROM "FOO BAR"\nPARAMETER param1 value1',
        cmds(("model", "FOO BAR"), ("param1", "value1")),
    ),
    ("from spaces", "FROM     FOOO BAR    ", cmds(("model", "FOOO BAR"))),
    ("from path with space", "FROM /what/is/the path ", cmds(("model", "/what/is/the path"))),
    ("from name", "FROM foo", cmds(FOO)),
    ("from path", "FROM /path/to/model/fp16.bin", cmds(("model", "/path/to/model/fp16.bin"))),
    ("from tag", "FROM llama3:7b-instruct-q4_K_M", cmds(("model", "llama3:7b-instruct-q4_K_M"))),
    ("parameter first", "PARAMETER param1 value1\nFROM foo", cmds(("param1", "value1"), FOO)),
    (
        "words",
        "PARAMETER what the \nFROM lemons make lemonade ",
        cmds(("what", "the"), ("model", "lemons make lemonade")),
    ),
    ("renderer", "\nFROM foo\nRENDERER renderer1\n", cmds(FOO, ("renderer", "renderer1"))),
    ("parser", "\nFROM foo\nPARSER parser1\n", cmds(FOO, ("parser", "parser1"))),
    (
        "message",
        "\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\n",
        cmds(FOO, ("message", "system: You are a file parser. Always parse things.")),
    ),
    (
        "message at end",
        "\nFROM foo\nMESSAGE system You are a file parser. Always parse things.",
        cmds(FOO, ("message", "system: You are a file parser. Always parse things.")),
    ),
    (
        "messages",
        "\nFROM foo\nMESSAGE system You are a file parser. Always parse things.\nMESSAGE user Hey there!\n"
        "MESSAGE assistant Hello, I want to parse all the things!\n",
        cmds(
            FOO,
            ("message", "system: You are a file parser. Always parse things."),
            ("message", "user: Hey there!"),
            ("message", "assistant: Hello, I want to parse all the things!"),
        ),
    ),
    (
        "message multiline",
        '\nFROM foo\nMESSAGE system """\nYou are a multiline file parser. Always parse things.\n"""\n\t\t\t',
        cmds(FOO, ("message", "system: \nYou are a multiline file parser. Always parse things.\n")),
    ),
    (
        "quoted multiline",
        '\nFROM foo\nSYSTEM """\nThis is a\nmultiline system.\n"""\n\t\t\t',
        cmds(FOO, ("system", "\nThis is a\nmultiline system.\n")),
    ),
    (
        "quoted closing on last line",
        '\nFROM foo\nSYSTEM """\nThis is a\nmultiline system."""\n\t\t\t',
        cmds(FOO, ("system", "\nThis is a\nmultiline system.")),
    ),
    (
        "quoted opening on first line",
        '\nFROM foo\nSYSTEM """This is a\nmultiline system."""\n\t\t\t',
        cmds(FOO, ("system", "This is a\nmultiline system.")),
    ),
    (
        "triple quoted one line",
        '\nFROM foo\nSYSTEM """This is a multiline system."""\n\t\t\t',
        cmds(FOO, ("system", "This is a multiline system.")),
    ),
    (
        "quotes inside",
        '\nFROM foo\nSYSTEM """\nThis is a multiline system with "quotes".\n"""\n',
        cmds(FOO, ("system", '\nThis is a multiline system with "quotes".\n')),
    ),
    ("empty triple quotes", '\nFROM foo\nSYSTEM """"""\n', cmds(FOO, ("system", ""))),
    ("empty quotes", '\nFROM foo\nSYSTEM ""\n', cmds(FOO, ("system", ""))),
    ("single quote", '\nFROM foo\nSYSTEM "\'"\n', cmds(FOO, ("system", "'"))),
    (
        "many quotes",
        '\nFROM foo\nSYSTEM """\'\'"\'""\'""\'"\'\'\'\'\'""\'""\'"""\n',
        cmds(FOO, ("system", "''\"'\"\"'\"\"'\"'''''\"\"'\"\"'")),
    ),
    (
        "template at end",
        '\nFROM foo\nTEMPLATE """\n{{ .Prompt }}\n"""',
        cmds(FOO, ("template", "\n{{ .Prompt }}\n")),
    ),
    ("comment", "\n# comment\nFROM foo\n\t", cmds(FOO)),
    ("multibyte", "FROM test\n\tSYSTEM 你好👋", cmds(("model", "test"), ("system", "你好👋"))),
    # Beyond parser_test.go; each checked against Go's ParseFile.
    ("case", "from foo\nSystem hi\nparameter Top_K 5\n", cmds(FOO, ("system", "hi"), ("Top_K", "5"))),
    ("hash inside a value", "FROM foo\n# FROM bar\nSYSTEM a # b\n", cmds(FOO, ("system", "a # b"))),
    ("crlf inside quotes", 'FROM foo\nSYSTEM """a\r\nb"""\r\n', cmds(FOO, ("system", "a\r\nb"))),
    ("tab kept", "FROM foo\nSYSTEM a\tb  \n", cmds(FOO, ("system", "a\tb"))),
    ("control characters dropped", "\x00FROM foo\nSYSTEM hi\x01there\n", cmds(FOO, ("system", "hithere"))),
    ("bom", "\ufeffFROM foo", cmds(FOO)),
    ("empty value", "FROM foo\nSYSTEM \n", cmds(FOO, ("system", ""))),
    ("stop after tab", 'FROM foo\nPARAMETER stop\t"<|a|>"\n', cmds(FOO, ("stop", "<|a|>"))),
    ("message multiline", 'FROM foo\nMESSAGE user """a\nb"""\n', cmds(FOO, ("message", "user: a\nb"))),
    ("parameter name missing", "FROM foo\nPARAMETER   temperature 1\n", cmds(FOO, ("", "temperature 1"))),
]

PARAMETER_CASES = [
    ("numa true", "numa", "true"),
    ("num_ctx 1", "num_ctx", "1"),
    ("num_gqa 1", "num_gqa", "1"),
    ("use_mmap true", "use_mmap", "true"),
    ("top_p 1.0", "top_p", "1.0"),
    ("min_p 0.05", "min_p", "0.05"),
    ("penalize_newline true", "penalize_newline", "true"),
    ("stop ### User:", "stop", "### User:"),
    ("stop ### User: ", "stop", "### User:"),
    ('stop "### User:"', "stop", "### User:"),
    ('stop "### User: "', "stop", "### User: "),
    ('stop """### User:"""', "stop", "### User:"),
    ('stop """### User:\n"""', "stop", "### User:\n"),
    ("stop <|endoftext|>", "stop", "<|endoftext|>"),
    ("stop </s>", "stop", "</s>"),
]

ERROR_CASES = [
    ("empty", "", "no FROM line"),
    ("no from", "PARAMETER param1 value1", "no FROM line"),
    ("parameter without value", "\nFROM foo\nPARAMETER param1\n", "unexpected EOF: param1"),
    ("parameter without name", "FROM foo\nPARAMETER \n", "unexpected EOF: "),
    ("bad parameter name", "FROM foo\nPARAMETER num-ctx 1\n", "unexpected EOF: num"),
    ("bad command", "\nFROM foo\nBADCOMMAND param1 value1\n", f"(line 3): {INVALID_COMMAND}"),
    ("command alone", "FROM\n", f"(line 2): {INVALID_COMMAND}"),
    ("crlf counts twice", "FROM foo\r\nBAD x\r\n", f"(line 3): {INVALID_COMMAND}"),
    ("bad role", "\nFROM foo\nMESSAGE badguy I'm a bad guy!\n", f"(line 3): {INVALID_ROLE}"),
    ("role is case-sensitive", "FROM foo\nMESSAGE User hi\n", f"(line 2): {INVALID_ROLE}"),
    ("message without text", "\nFROM foo\nMESSAGE system\n", "unexpected EOF: system"),
    ("message at end", "\nFROM foo\nMESSAGE system", "unexpected EOF"),
    (
        "unclosed triple quote",
        '\nFROM foo\nSYSTEM """This is a multiline system.""\n\t\t\t',
        "unexpected EOF",
    ),
    ("unclosed quote", '\nFROM foo\nSYSTEM "\n\t\t\t', "unexpected EOF"),
    ("open triple quote", 'FROM foo\nTEMPLATE """\n', "unexpected EOF"),
    ("five quotes", 'FROM foo\nSYSTEM """""\n', "unexpected EOF"),
]

ROUND_TRIP = [
    "\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\n"
    "TEMPLATE template1\nMESSAGE system You are a file parser. Always parse things.\n"
    "MESSAGE user Hey there!\n"
    "MESSAGE assistant Hello, I want to parse all the things!\n",
    "\nFROM foo\nADAPTER adapter1\nLICENSE MIT\nPARAMETER param1 value1\nPARAMETER param2 value2\n"
    'TEMPLATE template1\nMESSAGE system """\nYou are a store greeter. Always respond with "Hello!".\n"""\n'
    "MESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
    '\nFROM foo\nADAPTER adapter1\nLICENSE """\nVery long and boring legal text.\nBlah blah blah.\n'
    '"Oh look, a quote!"\n"""\n\nPARAMETER param1 value1\nPARAMETER param2 value2\nTEMPLATE template1\n'
    'MESSAGE system """\nYou are a store greeter. Always respond with "Hello!".\n"""\n'
    "MESSAGE user Hey there!\nMESSAGE assistant Hello, I want to parse all the things!\n",
    '\nFROM foo\nSYSTEM ""\n',
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in PARSE_CASES], ids=[c[0] for c in PARSE_CASES])
def test_parse(text: str, expected: list[Command]) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("line", "name", "value"), PARAMETER_CASES, ids=[c[0] for c in PARAMETER_CASES])
def test_parse_parameter(line: str, name: str, value: str) -> None:
    assert parse(f"FROM foo\nPARAMETER {line}\n") == cmds(FOO, (name, value))


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ModelfileError) as caught:
        parse(text)
    assert str(caught.value) == message


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_printing_round_trips(text: str) -> None:
    commands = parse(text)
    assert parse(format_modelfile(commands)) == commands


@pytest.mark.parametrize(
    ("command", "printed"),
    [
        (Command("model", "  spaced  "), "FROM   spaced  "),
        (Command("system", "plain"), "SYSTEM plain"),
        (Command("system", " padded"), 'SYSTEM " padded"'),
        (Command("template", 'say "hi"\n'), 'TEMPLATE """say "hi"\n"""'),
        (Command("draft", "./d"), "DRAFT ./d"),
        (Command("requires", "0.14.0"), "REQUIRES 0.14.0"),
        (Command("message", "user: hi there"), "MESSAGE user hi there"),
        (Command("message", "assistant: line\nbreak"), 'MESSAGE assistant "line\nbreak"'),
        (Command("stop", "### User: "), 'PARAMETER stop "### User: "'),
    ],
)
def test_command_str(command: Command, printed: str) -> None:
    assert str(command) == printed


UTF16_TEXT = "FROM bob\nPARAMETER param1 1\nPARAMETER param2 4096\nSYSTEM You are a utf16 file.\n"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe" + UTF16_TEXT.encode("utf-16-le"),
        b"\xfe\xff" + UTF16_TEXT.encode("utf-16-be"),
        b"\xef\xbb\xbf" + UTF16_TEXT.encode(),
        UTF16_TEXT.encode(),
    ],
    ids=["utf-16-le", "utf-16-be", "utf-8 bom", "utf-8"],
)
def test_decode(data: bytes) -> None:
    assert parse(decode_modelfile(data)) == cmds(
        ("model", "bob"), ("param1", "1"), ("param2", "4096"), ("system", "You are a utf16 file.")
    )


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"temperature": ["0.5"]}, {"temperature": 0.5}),
        ({"temperature": ["0.123456789"]}, {"temperature": 0.12345679}),  # float32, as Go writes it
        ({"top_p": ["1e-1"]}, {"top_p": 0.1}),
        ({"top_p": ["0x1p-2"]}, {"top_p": 0.25}),
        ({"top_p": ["1_0.5"]}, {"top_p": 10.5}),
        ({"top_k": ["40"], "seed": ["-1"]}, {"top_k": 40, "seed": -1}),
        ({"num_ctx": ["+8192"]}, {"num_ctx": 8192}),
        ({"use_mmap": ["T"]}, {"use_mmap": True}),
        ({"use_mmap": ["False"]}, {"use_mmap": False}),
        ({"stop": ["a", "b"]}, {"stop": ["a", "b"]}),
    ],
)
def test_format_parameters(params: dict[str, list[str]], expected: dict[str, object]) -> None:
    typed = format_parameters(params)
    assert typed == expected
    assert [type(value) for value in typed.values()] == [type(value) for value in expected.values()]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"bogus": ["1"]}, "unknown parameter 'bogus'"),
        ({"Temperature": ["1"]}, "unknown parameter 'Temperature'"),
        ({"temperature": ["hot"]}, "invalid float value [hot]"),
        ({"temperature": ["inf"]}, "invalid float value [inf]"),
        ({"temperature": ["NaN"]}, "invalid float value [NaN]"),
        ({"temperature": ["1e39"]}, "invalid float value [1e39]"),
        ({"temperature": [" 1"]}, "invalid float value [ 1]"),
        ({"temperature": ["1_"]}, "invalid float value [1_]"),
        ({"temperature": ["a", "b"]}, "invalid float value [a b]"),
        ({"top_k": ["1.0"]}, "invalid int value [1.0]"),
        ({"top_k": ["1_000"]}, "invalid int value [1_000]"),
        ({"seed": ["9223372036854775808"]}, "invalid int value [9223372036854775808]"),
        ({"use_mmap": ["yes"]}, "invalid bool value [yes]"),
        ({"use_mmap": ["tRUE"]}, "invalid bool value [tRUE]"),
    ],
)
def test_format_parameters_errors(params: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ModelfileError) as caught:
        format_parameters(params)
    assert str(caught.value) == message


def body_of(text: str, relative_dir: Path) -> dict[str, object]:
    return create_request(parse(text), relative_dir).body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM test", {"from": "test"}),
        ("FROM test\nTEMPLATE some template\n", {"from": "test", "template": "some template"}),
        (
            "FROM test\nLICENSE single license\nPARAMETER temperature 0.5\nMESSAGE user Hello\n",
            {
                "from": "test",
                "license": ["single license"],
                "parameters": {"temperature": 0.5},
                "messages": [{"role": "user", "content": "Hello"}],
            },
        ),
        (
            "FROM test\nPARAMETER temperature 0.5\nPARAMETER top_k 1\nSYSTEM You are a bot.\n"
            "LICENSE license1\nLICENSE license2\nMESSAGE user Hello there!\n"
            "MESSAGE assistant Hi! How are you?\n",
            {
                "from": "test",
                "license": ["license1", "license2"],
                "system": "You are a bot.",
                "parameters": {"temperature": 0.5, "top_k": 1},
                "messages": [
                    {"role": "user", "content": "Hello there!"},
                    {"role": "assistant", "content": "Hi! How are you?"},
                ],
            },
        ),
        (
            "FROM test\nPARAMETER stop a\nPARAMETER temperature 1\n"
            "PARAMETER stop b\nPARAMETER temperature 2\n",
            {"from": "test", "parameters": {"stop": ["a", "b"], "temperature": 2.0}},
        ),
        ('FROM test\nTEMPLATE """"""\nSYSTEM ""\n', {"from": "test"}),
        (
            "FROM test\nRENDERER qwen3\nPARSER qwen3\nREQUIRES v0.14.0\n",
            {"from": "test", "renderer": "qwen3", "parser": "qwen3", "requires": "0.14.0"},
        ),
        ("FROM a\nFROM b\n", {"from": "b"}),
        ("PARAMETER template x\nFROM test\n", {"from": "test", "template": "x"}),
    ],
)
def test_create_request(text: str, expected: dict[str, object], tmp_path: Path) -> None:
    request = create_request(parse(text), tmp_path)
    assert request.body == expected
    assert request.uploads == {}
    assert request.warnings == []


def test_deprecated_parameters_warn(tmp_path: Path) -> None:
    request = create_request(parse("FROM test\nPARAMETER mirostat 1\nPARAMETER use_mlock true\n"), tmp_path)
    assert request.body == {"from": "test"}
    assert request.warnings == ["parameter mirostat is deprecated", "parameter use_mlock is deprecated"]


def test_unknown_parameter_fails(tmp_path: Path) -> None:
    with pytest.raises(ModelfileError, match=r"^unknown parameter 'tfs_z'$"):
        create_request(parse("FROM test\nPARAMETER tfs_z 1\n"), tmp_path)


@pytest.mark.parametrize("version", ["0.14.0", "v0.14.0", "1", "1.2", "1.0.0-rc.1+build.05", "1.0.0-x-y.0"])
def test_requires_valid(version: str, tmp_path: Path) -> None:
    body = body_of(f"FROM test\nREQUIRES {version}\n", tmp_path)
    assert body["requires"] == version.removeprefix("v")


@pytest.mark.parametrize(
    "version", ["latest", "01.0.0", "1.0.0-01", "1.0.0-", "1.0-rc1", "1.0.0+", "1.0.0+a..b", "vv1", "1.0.0.0"]
)
def test_requires_invalid(version: str, tmp_path: Path) -> None:
    with pytest.raises(ModelfileError, match=r"^requires must be a valid semver \(e\.g\. 0\.14\.0\)$"):
        create_request(parse(f"FROM test\nREQUIRES {version}\n"), tmp_path)


GGUF = b"GGUF\x03\x00\x00\x00" + bytes(504)
BINARY = bytes(range(256)) * 2
ZIP = b"PK\x03\x04" + bytes(28)


def write(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def sha(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = GGUF + bytes(5 << 20)  # several hashing chunks
    write(tmp_path, {"models/tiny.gguf": weights})
    monkeypatch.chdir("/")
    request = create_request(parse("FROM ./models/tiny.gguf\nSYSTEM hi\n"), tmp_path)
    assert request.body == {"files": {"tiny.gguf": sha(weights)}, "system": "hi"}
    assert request.uploads == {sha(weights): tmp_path / "models" / "tiny.gguf"}
    json.dumps(request.body)


def test_from_two_files_names_them_from_their_common_directory(tmp_path: Path) -> None:
    write(tmp_path, {"a/x.gguf": GGUF, "b/c/y.gguf": GGUF + b"y"})
    request = create_request(parse(f"FROM {tmp_path}/a/x.gguf\nFROM b/c/y.gguf\n"), tmp_path)
    assert request.body == {"files": {"a/x.gguf": sha(GGUF), "b/c/y.gguf": sha(GGUF + b"y")}}
    assert set(request.uploads.values()) == {tmp_path / "a/x.gguf", tmp_path / "b/c/y.gguf"}


def test_from_a_missing_path_is_a_model_name(tmp_path: Path) -> None:
    assert body_of("FROM ./nothing-here.gguf\n", tmp_path) == {"from": "./nothing-here.gguf"}


def test_from_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"home/models/m.gguf": GGUF})
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert body_of("FROM ~/models/m.gguf\n", tmp_path / "elsewhere") == {"files": {"m.gguf": sha(GGUF)}}


def test_from_a_users_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"alice/m.gguf": GGUF})
    homes = {"alice": str(tmp_path / "alice")}
    monkeypatch.setattr(pwd, "getpwnam", lambda name: SimpleNamespace(pw_dir=homes[name]))
    assert body_of("FROM ~alice/m.gguf\n", Path("/")) == {"files": {"m.gguf": sha(GGUF)}}


def test_from_an_unknown_users_home(tmp_path: Path) -> None:
    name = "no-such-user-corral"
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    with pytest.raises(ModelfileError) as caught:
        create_request(parse(f"FROM ~{name}/m.gguf\n"), tmp_path)
    assert str(caught.value) == f"failed to find user '{name}': user: unknown user {name}"


# Go's TestFilesForModel: the files a model directory contributes.
DIRECTORY_CASES = [
    (
        "safetensors",
        {
            "model-00001-of-00002.safetensors": b"a",
            "model-00002-of-00002.safetensors": b"b",
            "config.json": b"{}",
            "tokenizer.json": b"{}",
            "chat_template.jinja": b"{{ x }}",
            "README.md": b"# hi",
        },
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "config.json",
            "tokenizer.json",
            "chat_template.jinja",
        ],
    ),
    (
        "safetensors with tokenizer.model",
        {"model-00001-of-00001.safetensors": b"a", "config.json": b"{}", "tokenizer.model": BINARY},
        ["model-00001-of-00001.safetensors", "config.json", "tokenizer.model"],
    ),
    (
        "sentence transformers",
        {
            "model.safetensors": b"a",
            "config.json": b"{}",
            "modules.json": b"[]",
            "2_Dense/config.json": b"{}",
            "2_Dense/model.safetensors": b"b",
        },
        [
            "model.safetensors",
            "config.json",
            "modules.json",
            "2_Dense/config.json",
            "2_Dense/model.safetensors",
        ],
    ),
    (
        "model files before consolidated",
        {"model-00001-of-00001.safetensors": b"a", "consolidated.safetensors": b"b", "config.json": b"{}"},
        ["model-00001-of-00001.safetensors", "config.json"],
    ),
    (
        "consolidated",
        {"consolidated.safetensors": b"b", "config.json": b"{}"},
        ["consolidated.safetensors", "config.json"],
    ),
    (
        "exl2 shards",
        {
            "output-00001-of-00002.safetensors": b"a",
            "output-00002-of-00002.safetensors": b"b",
            "config.json": b"{}",
        },
        ["output-00001-of-00002.safetensors", "output-00002-of-00002.safetensors", "config.json"],
    ),
    (
        "pytorch",
        {
            "pytorch_model-00001-of-00002.bin": ZIP,
            "pytorch_model-00002-of-00002.bin": ZIP + b"2",
            "config.json": b"{}",
        },
        ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin", "config.json"],
    ),
    (
        "consolidated pth",
        {"consolidated.00.pth": ZIP, "consolidated.01.pth": ZIP + b"1", "config.json": b"{}"},
        ["consolidated.00.pth", "consolidated.01.pth", "config.json"],
    ),
    ("gguf", {"model.gguf": GGUF, "config.json": b'{"config": true}'}, ["model.gguf", "config.json"]),
    ("bin as gguf", {"model.bin": BINARY, "config.json": b"{}"}, ["model.bin", "config.json"]),
    ("dot files", {".model.gguf": GGUF}, [".model.gguf"]),
    ("text gguf skipped", {"model.gguf": b"not weights", "other.bin": BINARY}, ["other.bin"]),
    (
        "nested text tokenizer",
        {"model.gguf": GGUF, "sub/tokenizer.model": b"lfs"},
        ["model.gguf", "sub/tokenizer.model"],
    ),
    (
        "utf-16 json is text",
        {"model.gguf": GGUF, "config.json": "{}".encode("utf-16")},
        ["model.gguf", "config.json"],
    ),
]


@pytest.mark.parametrize(
    ("files", "names"), [c[1:] for c in DIRECTORY_CASES], ids=[c[0] for c in DIRECTORY_CASES]
)
def test_from_a_directory(files: dict[str, bytes], names: list[str], tmp_path: Path) -> None:
    write(tmp_path / "model", files)
    request = create_request(parse("FROM model\n"), tmp_path)
    assert request.body == {"files": {name: sha(files[name]) for name in names}}
    assert set(request.uploads) == {sha(files[name]) for name in names}  # one upload per blob
    for digest, path in request.uploads.items():
        assert sha(files[path.relative_to(tmp_path / "model").as_posix()]) == digest


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"README.md": b"x", "config.json": b"{}"}, "no Modelfile or safetensors files found"),
        (
            {"pytorch_model.bin": b"plain text", "config.json": b"{}"},
            "no Modelfile or safetensors files found",
        ),
        (
            {"model.gguf": GGUF, "config.json": BINARY},
            "invalid content type: expected application/octet-stream for ",
        ),
    ],
    ids=["no weights", "text pytorch", "binary json"],
)
def test_from_a_directory_errors(files: dict[str, bytes], message: str, tmp_path: Path) -> None:
    write(tmp_path / "model", files)
    with pytest.raises(ModelfileError) as caught:
        create_request(parse("FROM model\n"), tmp_path)
    assert str(caught.value).startswith(message)


def test_directory_links_must_stay_inside(tmp_path: Path) -> None:
    write(tmp_path, {"model/model.gguf": GGUF, ".cache/config": b"{}"})
    os.symlink(tmp_path / ".cache" / "config", tmp_path / "model" / "config.json")
    with pytest.raises(ModelfileError) as caught:
        create_request(parse("FROM model\n"), tmp_path)
    assert str(caught.value) == (
        "insecure path: ../.cache/config\n\nUse --local-dir <dir> when downloading model to disable caching"
    )


def test_draft_and_adapter_files(tmp_path: Path) -> None:
    write(tmp_path, {"draft.gguf": b"draft", "lora1.gguf": b"one", "lora2.gguf": b"two"})
    request = create_request(
        parse("FROM base\nDRAFT ./draft.gguf\nADAPTER lora1.gguf\nADAPTER lora2.gguf\n"), tmp_path
    )
    assert request.body == {
        "from": "base",
        "draft_files": {"draft.gguf": sha(b"draft")},
        "adapters": {"lora2.gguf": sha(b"two")},  # a later ADAPTER replaces an earlier one
    }
    assert request.uploads == {sha(b"draft"): tmp_path / "draft.gguf", sha(b"two"): tmp_path / "lora2.gguf"}


def test_missing_draft_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        create_request(parse("FROM base\nDRAFT ./draft.gguf\n"), tmp_path)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("FROM ./model.gguf\nDRAFT ./model.gguf\n", "model.gguf"),
        ("DRAFT ./model.gguf\nFROM ./link.gguf\n", "link.gguf"),
        ("FROM .\nDRAFT .\n", ""),
    ],
    ids=["same file", "same file through a link", "same directory"],
)
def test_draft_may_not_be_the_model(text: str, path: str, tmp_path: Path) -> None:
    write(tmp_path, {"model.gguf": GGUF})
    os.symlink(tmp_path / "model.gguf", tmp_path / "link.gguf")
    with pytest.raises(ModelfileError) as caught:
        create_request(parse(text), tmp_path)
    expected = os.path.join(tmp_path, path) if path else str(tmp_path)
    assert str(caught.value) == f"DRAFT must not reference the same local path as FROM: {expected}"
