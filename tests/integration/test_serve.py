"""`corral serve` as a new user runs it, and one trace per request across the services."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.otlp import OtlpReceiver, Span, exporting_to
from tests.stack import MODEL, Stack, free_port
from tests.watch import until


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


def alive(pids: list[int]) -> list[int]:
    """The processes among `pids` still running (zombies count as gone)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            running.append(pid)
    return running


def test_corral_serve_starts_everything_and_stops_with_no_orphans(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_", "NATS_"))}
    env.update(
        OLLAMA_HOST=f"127.0.0.1:{port}",
        OLLAMA_MODELS=str(tmp_path / "models"),
        CORRAL_DATA_DIR=str(tmp_path / "corral"),
    )
    corral = Path(sys.executable).with_name("corral")
    serve = subprocess.Popen(
        [str(corral), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "serve.log").open("wb"),
        text=True,
    )
    try:
        banner = serve.stdout.readline()  # type: ignore[union-attr]
        assert banner.startswith(f"corral is listening on http://127.0.0.1:{port}"), banner
        token = (tmp_path / "corral" / "nats" / "token").read_text().strip()
        assert token not in banner and "nats://***@127.0.0.1:" in banner  # the secret never printed
        children = descendants(serve.pid)
        assert len(children) == 5  # nats-server and the four services
        body = {
            "model": MODEL,
            "prompt": "Why is the sky blue?",
            "stream": False,
            "options": {"num_predict": 16},
        }
        result = httpx.post(f"http://127.0.0.1:{port}/api/generate", json=body, timeout=60).json()
        assert result["done"] is True and result["response"].strip()
        assert list((tmp_path / "corral" / "nats" / "jetstream").iterdir())
    finally:
        serve.send_signal(signal.SIGINT)
        assert serve.wait(40) == 0
    until(lambda: not alive(children), what="every child process to exit")


@pytest.mark.parametrize("verb", ["serve", "start"])  # `start`: ollama's alias of serve
def test_corral_serve_refuses_a_bad_setting(tmp_path: Path, verb: str) -> None:
    corral = Path(sys.executable).with_name("corral")
    env = {**os.environ, "OLLAMA_MAX_QUEUE": "lots", "CORRAL_DATA_DIR": str(tmp_path)}
    done = subprocess.run([str(corral), verb], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "OLLAMA_MAX_QUEUE" in done.stderr and "whole number" in done.stderr


def test_one_request_is_one_trace_across_services(tmp_path: Path, nats_binary: Path) -> None:
    """Spans exported over OTLP by gateway, scheduler and worker share the request's trace id."""
    with OtlpReceiver() as receiver:
        stack = Stack(tmp_path, nats_binary, exporting_to(receiver)).start()
        try:
            body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}}
            assert httpx.post(f"{stack.url}/api/generate", json=body, timeout=60).json()["done"]

            def shared() -> set[str]:
                traces = receiver.traces_by_service()
                services = ("corral-gateway", "corral-scheduler", "corral-worker")
                return set.intersection(*(traces.get(name, set()) for name in services))

            until(lambda: bool(shared()), what="one trace id in the spans of all three services")

            # The request's own span, with GenAI attributes, and its queue wait and generation.
            # (The stack's readiness check, a preload, made one before: done_reason "load".)
            def generated() -> list[Span]:
                spans = receiver.named(f"text_completion {MODEL}")
                return [s for s in spans if s.attributes.get("gen_ai.response.finish_reasons") == ["length"]]

            until(lambda: bool(generated()), what="the request's span")
            (request,) = generated()
            assert request.trace_id in shared()
            assert request.attributes["gen_ai.request.model"] == MODEL
            assert request.attributes["gen_ai.usage.output_tokens"] == 4
            for phase in ("queue wait", "generation"):
                until(
                    lambda p=phase: any(s.parent_id == request.span_id for s in receiver.named(p)), what=phase
                )
                (span,) = [s for s in receiver.named(phase) if s.parent_id == request.span_id]
                assert span.trace_id == request.trace_id
            (dispatch,) = [s for s in receiver.named("dispatch") if s.trace_id == request.trace_id]
            assert dispatch.service == "corral-scheduler"
            # Logs name the trace: the scheduler's placement and the gateway's submission.
            assert f"trace_id={request.trace_id}" in stack.log("scheduler")
            assert f"trace_id={request.trace_id}" in stack.log("gateway")
        finally:
            stack.stop()
