"""`herd serve` as a new user runs it, and one trace per request across the services."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.stack import MODEL, Stack, free_port


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_herd_serve_starts_everything_and_stops_with_no_orphans(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "HERD_", "NATS_"))}
    env.update(OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=str(tmp_path / "models"),
               HERD_DATA_DIR=str(tmp_path / "herd"))
    herd = Path(sys.executable).with_name("herd")
    serve = subprocess.Popen([str(herd), "serve"], env=env, stdout=subprocess.PIPE,
                             stderr=(tmp_path / "serve.log").open("wb"), text=True)
    try:
        banner = serve.stdout.readline()  # type: ignore[union-attr]
        assert banner.startswith(f"herd is listening on http://127.0.0.1:{port}"), banner
        children = descendants(serve.pid)
        assert len(children) == 5  # nats-server and the four services
        body = {"model": MODEL, "prompt": "Why is the sky blue?", "stream": False,
                "options": {"num_predict": 16}}
        result = httpx.post(f"http://127.0.0.1:{port}/api/generate", json=body, timeout=60).json()
        assert result["done"] is True and result["response"].strip()
        assert list((tmp_path / "herd" / "nats" / "jetstream").iterdir())
    finally:
        serve.send_signal(signal.SIGINT)
        assert serve.wait(40) == 0
    time.sleep(0.2)
    alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
             and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]
    assert alive == []


def test_herd_serve_refuses_a_bad_setting(tmp_path: Path) -> None:
    herd = Path(sys.executable).with_name("herd")
    env = {**os.environ, "OLLAMA_MAX_QUEUE": "lots", "HERD_DATA_DIR": str(tmp_path)}
    done = subprocess.run([str(herd), "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "OLLAMA_MAX_QUEUE" in done.stderr and "whole number" in done.stderr


def test_one_request_is_one_trace_across_services(tmp_path: Path, nats_binary: Path) -> None:
    stack = Stack(tmp_path, nats_binary, {"OTEL_TRACES_EXPORTER": "console"}).start()
    try:
        body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}}
        assert httpx.post(f"{stack.url}/api/generate", json=body, timeout=60).json()["done"]
    finally:
        stack.stop()  # flushes the batched spans to each service's output
    traces = {name: trace_ids(stack.log(name)) for name in ("gateway", "scheduler", "worker")}
    shared = traces["gateway"] & traces["scheduler"] & traces["worker"]
    assert shared, {name: len(ids) for name, ids in traces.items()}


def trace_ids(output: str) -> set[str]:
    return set(re.findall(r'"trace_id": "(0x[0-9a-f]{32})"', output))



