"""docs/faq.md is true of a running corral.

Every code block fenced as `sh run` runs, in the FAQ's order, with `bash -e -o pipefail`
against one real stack: `localhost:11434` / `127.0.0.1:11434` in it become the stack's
address, OLLAMA_HOST names the stack (for `corral`) and the venv's bin comes first on PATH.
The Host headers the FAQ tells nginx, ngrok and cloudflared to send are the ones the gateway
serves, and what they would send without the rewrite gets 403. The settings it says corral
refuses are refused. deploy/corral.service runs `corral serve` with settings corral accepts, and
passes `systemd-analyze verify` where that exists.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.config import ConfigError, load_settings
from tests.stack import MODEL, Stack, free_port
from tests.watch import DEADLINE, until

ROOT = Path(__file__).resolve().parents[2]
FAQ = ROOT / "docs" / "faq.md"
UNIT = ROOT / "deploy" / "corral.service"
BIN = Path(sys.executable).parent
DEFAULT_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):11434\b")
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^`]*)$")
ENVIRONMENT = re.compile(r'Environment="([A-Za-z_][A-Za-z0-9_]*)=([^"]*)"')
# What each tool is told to send as Host, as the FAQ writes it.
REWRITES = {
    "nginx": re.compile(r"proxy_set_header Host ([^;\s]+);"),
    "ngrok": re.compile(r'ngrok http \S+ --host-header="([^"]+)"'),
    "cloudflared": re.compile(r'cloudflared tunnel .*--http-host-header="([^"]+)"'),
}


@dataclass(frozen=True)
class Block:
    info: str
    body: str
    line: int  # of the opening fence, counting from 1

    @property
    def runnable(self) -> bool:
        return self.info.split() == ["sh", "run"]

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.body.splitlines() if line.strip()), "")


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown text, indented ones (in list items) dedented."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, start, body = len(opening["indent"]), i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        found.append(Block(opening["info"].strip(), "\n".join(body) + "\n", start + 1))
        i += 1
    return found


FAQ_TEXT = FAQ.read_text(encoding="utf-8")
BLOCKS = blocks(FAQ_TEXT)
RUNNABLE = [b for b in BLOCKS if b.runnable]
RUNNABLE_IDS = [f"{n:02d}-{b.first_line[:40]}" for n, b in enumerate(RUNNABLE, 1)]


def run_block(stack: Stack, block: Block) -> subprocess.CompletedProcess[str]:
    script = DEFAULT_ADDRESS.sub(f"127.0.0.1:{stack.port}", block.body)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
    env.update(
        OLLAMA_HOST=f"127.0.0.1:{stack.port}",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        NO_PROXY="localhost,127.0.0.1",  # curl must reach the stack, whatever proxy is set here
        no_proxy="localhost,127.0.0.1",
    )
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=DEADLINE,  # only a hung command waits this long
    )


def test_the_faq_has_runnable_blocks() -> None:
    assert len(RUNNABLE) >= 8, RUNNABLE_IDS


@pytest.mark.parametrize("block", RUNNABLE, ids=RUNNABLE_IDS)
def test_runnable_block(stack: Stack, block: Block) -> None:
    done = run_block(stack, block)
    assert done.returncode == 0, (
        f"docs/faq.md line {block.line} exited {done.returncode}:\n{block.body}\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )


def rewritten_host(tool: str) -> str:
    values = {m[1] for b in BLOCKS for m in REWRITES[tool].finditer(b.body)}
    assert len(values) == 1, f"the FAQ should give {tool} one Host rewrite, found {values}"
    return values.pop()


@pytest.mark.parametrize("tool", sorted(REWRITES))
def test_the_host_each_proxy_is_told_to_send_is_served(stack: Stack, tool: str) -> None:
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.get(f"{stack.url}/api/version", headers={"Host": rewritten_host(tool)})
    assert response.status_code == 200 and "version" in response.json()


@pytest.mark.parametrize(
    "host",
    ["evil.example", "example.com", "corral.ngrok-free.app", "corral.trycloudflare.com"],
    ids=["foreign", "nginx-host-variable", "ngrok-public-name", "cloudflare-public-name"],
)
def test_a_foreign_host_gets_403_while_bound_to_loopback(stack: Stack, host: str) -> None:
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.get(f"{stack.url}/api/version", headers={"Host": host})
    assert response.status_code == 403 and response.content == b""


ALLOWED_ORIGIN = "http://localhost:3000"  # in Ollama's default list
FOREIGN_ORIGIN = "https://evil.example"
MISSING = {"model": "no-such-model:1", "prompt": "Hi", "stream": False}  # the route answers 404


def mapped_errors(stack: Stack) -> int:
    """The gateway's error_response lines for MISSING so far."""
    return sum(
        "error_response" in line and "no-such-model" in line for line in stack.log("gateway").splitlines()
    )


def test_a_foreign_origin_gets_403_and_its_request_never_runs(stack: Stack) -> None:
    before = mapped_errors(stack)
    copy = {"source": MODEL, "destination": "cors-copy"}
    with httpx.Client(trust_env=False, timeout=30) as client:
        refused = client.post(f"{stack.url}/api/generate", json=MISSING, headers={"Origin": FOREIGN_ORIGIN})
        assert refused.status_code == 403 and refused.content == b""
        assert mapped_errors(stack) == before  # the route, which would have said 404, did not run
        # A page on another site cannot change the store either: its copy is refused, not made.
        assert (
            client.post(f"{stack.url}/api/copy", json=copy, headers={"Origin": FOREIGN_ORIGIN}).status_code
            == 403
        )
        names = [m["name"] for m in client.get(f"{stack.url}/api/tags").json()["models"]]
        assert "cors-copy:latest" not in names and MODEL in names
        answered = client.post(f"{stack.url}/api/generate", json=MISSING, headers={"Origin": ALLOWED_ORIGIN})
    assert answered.status_code == 404 and "not found" in answered.json()["error"]
    assert answered.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert answered.headers.get_list("vary") == ["Origin"]
    assert mapped_errors(stack) == before + 1  # a bad request logs one line


def test_an_allowed_preflight_gets_204_with_ollamas_headers(stack: Stack) -> None:
    headers = {
        "Origin": ALLOWED_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.options(f"{stack.url}/api/generate", headers=headers)
    assert response.status_code == 204 and response.content == b""
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert response.headers["access-control-allow-methods"] == "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
    assert response.headers["access-control-allow-headers"].startswith(
        "Authorization,Content-Type,User-Agent,"
    )
    assert response.headers["access-control-max-age"] == "43200"
    assert response.headers.get_list("vary") == [
        "Origin",
        "Access-Control-Request-Method",
        "Access-Control-Request-Headers",
    ]


@pytest.fixture(scope="module")
def faq_origins_url(stack: Stack) -> Iterator[str]:
    """A second gateway on the stack, started with the FAQ's OLLAMA_ORIGINS example."""
    example = re.search(r'OLLAMA_ORIGINS="([^"]+)" corral serve', FAQ_TEXT)
    assert example, "the FAQ should show an OLLAMA_ORIGINS example"
    port = free_port()
    env = {"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_ORIGINS": example[1]}
    stack.start_service("gateway-origins", module="gateway", env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: serving(url), what="the gateway started with the FAQ's OLLAMA_ORIGINS")
        yield url
    finally:
        stack.stop_service("gateway-origins")


def serving(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/version", timeout=5, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("https://chat.example.com", True), ("chrome-extension://abcdef", True), (ALLOWED_ORIGIN, True),
     ("https://other.example.com", False), ("moz-extension://abcdef", False)],
    ids=["exact", "extension-wildcard", "default-list-kept", "foreign", "other-extension"],
)  # fmt: skip
def test_the_faqs_ollama_origins_example(faq_origins_url: str, origin: str, allowed: bool) -> None:
    with httpx.Client(trust_env=False, timeout=30) as client:
        response = client.get(f"{faq_origins_url}/api/version", headers={"Origin": origin})
    if allowed:
        assert response.status_code == 200 and response.headers["access-control-allow-origin"] == origin
    else:
        assert response.status_code == 403 and response.content == b""


@pytest.mark.parametrize(
    ("env", "refused"),
    [({"OLLAMA_KV_CACHE_TYPE": "q8_0"}, True),
     ({"OLLAMA_KV_CACHE_TYPE": "q4_0", "OLLAMA_FLASH_ATTENTION": "0"}, True),
     ({"OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_FLASH_ATTENTION": "1"}, False),
     ({"OLLAMA_KV_CACHE_TYPE": "q5_1", "OLLAMA_FLASH_ATTENTION": "1"}, True),
     ({"OLLAMA_DEBUG": "2"}, True),
     ({"OLLAMA_DEBUG": "1", "CORRAL_METRICS": "1", "OLLAMA_FLASH_ATTENTION": "true"}, False),
     ({"OLLAMA_ORIGINS": "chat.example.com"}, True),
     ({"OLLAMA_ORIGINS": "https://*.*.example.com"}, True),
     ({"OLLAMA_ORIGINS": "*,https://*.example.com,moz-extension://abc"}, False)],
    ids=["quantized-cache-alone", "quantized-cache-flash-off", "quantized-cache-flash-on",
         "unknown-cache-type", "debug-trace-level", "booleans", "origin-without-scheme",
         "origin-with-two-wildcards", "origins-wildcards-and-extension"],
)  # fmt: skip
def test_the_settings_the_faq_says_are_refused(env: dict[str, str], refused: bool) -> None:
    if refused:
        with pytest.raises(ConfigError):
            load_settings(env)
    else:
        load_settings(env)


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of each assignment in a systemd unit, in order."""
    entries, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        entries.append((section, key.strip(), value.strip()))
    return entries


def unit_environment(entries: list[tuple[str, str, str]]) -> dict[str, str]:
    env = {}
    for section, key, value in entries:
        if section == "Service" and key == "Environment":
            match = ENVIRONMENT.fullmatch(f"Environment={value}")
            assert match, f"not one quoted NAME=VALUE: {value}"
            env[match[1]] = match[2]
    return env


def test_the_unit_runs_corral_serve_with_the_settings_the_faq_names() -> None:
    entries = unit_entries(UNIT.read_text(encoding="utf-8"))
    service = {key: value for section, key, value in entries if section == "Service"}
    program, *args = service["ExecStart"].split()
    assert Path(program).is_absolute() and Path(program).name == "corral" and args == ["serve"]
    assert service["User"] == "corral" and service["KillMode"] == "mixed"
    env = unit_environment(entries)
    assert {"OLLAMA_HOST", "OLLAMA_MODELS"} <= env.keys()
    load_settings(env)  # corral would start with them
    for name, value in env.items():
        assert f"{name}={value}" in FAQ_TEXT, f"the FAQ does not mention the unit's {name}={value}"
    for name, value in ENVIRONMENT.findall(FAQ_TEXT):  # every override the FAQ shows is valid
        load_settings({**env, name: value})


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit is checked by the test above only")
    # verify insists that ExecStart's program exists: point it at this venv's corral.
    program = UNIT.read_text(encoding="utf-8").split("ExecStart=", 1)[1].split()[0]
    unit = tmp_path / "corral.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(program, str(BIN / "corral")))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=DEADLINE)
    complaints = [line for line in done.stderr.splitlines() if "corral.service" in line]
    assert done.returncode == 0 and not complaints, done.stderr
