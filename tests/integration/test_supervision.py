"""`corral serve` supervises its children: a service or the broker killed outright comes back
by itself while the rest keeps serving, and Ctrl-C still stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.test_serve import alive, descendants
from tests.stack import MODEL, SERVICES, Stack, free_port
from tests.watch import until


@dataclass
class Serve:
    process: subprocess.Popen[str]
    url: str
    nats_port: int  # as the banner reports it: the first nats-server chose it
    log: Path

    def child(self, is_it: str) -> int | None:
        """The running child whose command line contains `is_it` (`-m services.worker`…)."""
        found = [pid for pid in alive(descendants(self.process.pid)) if is_it in " ".join(command(pid))]
        assert len(found) <= 1, found
        return found[0] if found else None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def command(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def environment(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_", "NATS_"))}
    env.update(
        OLLAMA_HOST=f"127.0.0.1:{port}",
        OLLAMA_MODELS=str(tmp_path / "models"),
        CORRAL_DATA_DIR=str(tmp_path / "corral"),
        CORRAL_HEARTBEAT_INTERVAL="0.5",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_serve(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    corral = Path(sys.executable).with_name("corral")
    return subprocess.Popen(
        [str(corral), "serve"],
        env=environment(tmp_path, port),
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "serve.log").open("wb"),
        text=True,
    )


@contextmanager
def corral_serve(tmp_path: Path) -> Iterator[Serve]:
    """`corral serve` as a user runs it; afterwards, Ctrl-C must stop it with status 0 and leave
    no process behind, restarted ones included."""
    port = free_port()
    process = start_serve(tmp_path, port)
    children: list[int] = []
    try:
        banner = process.stdout.readline()  # type: ignore[union-attr]
        assert banner.startswith(f"corral is listening on http://127.0.0.1:{port}"), banner
        nats_port = int(banner.rsplit(":", 1)[1].split(")")[0])
        yield Serve(process, f"http://127.0.0.1:{port}", nats_port, tmp_path / "serve.log")
    finally:
        children = descendants(process.pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(40) == 0
    until(lambda: not alive(children), what="every child process to exit")


def generates(url: str) -> bool:
    body = {"model": MODEL, "prompt": "Why is the sky blue?", "stream": False, "options": {"num_predict": 4}}
    try:
        response = httpx.post(f"{url}/api/generate", json=body, timeout=60)
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.json()["done"] is True


def liveness(url: str) -> tuple[int, object]:
    """GET /'s status and body (JSON for an error); (0, None) for no answer."""
    try:
        response = httpx.get(url + "/", timeout=5)
    except httpx.TransportError:
        return 0, None
    return response.status_code, response.json() if response.status_code >= 400 else response.text


def test_a_killed_worker_is_restarted_while_the_others_keep_serving(tmp_path: Path) -> None:
    with corral_serve(tmp_path) as serve:
        assert generates(serve.url)
        names = ("nats-server", "-m services.registry", "-m services.scheduler", "-m services.gateway")
        others = {name: serve.child(name) for name in names}
        worker = serve.child("-m services.worker")
        assert worker is not None and None not in others.values()

        os.kill(worker, signal.SIGKILL)
        assert liveness(serve.url) == (200, "Ollama is running")
        until(lambda: serve.child("-m services.worker") not in (None, worker), what="a new worker process")
        until(lambda: generates(serve.url), what="a generation on the new worker")

        assert {name: serve.child(name) for name in others} == others  # nothing else restarted
        log = serve.stderr()
        assert "corral.launcher exited service=worker status=-9 restart_in=0.5s" in log
        assert "corral.launcher restarted service=worker pid=" in log


def test_a_killed_broker_is_restarted_on_its_port_and_liveness_follows_it(tmp_path: Path) -> None:
    with corral_serve(tmp_path) as serve:
        assert generates(serve.url)
        broker = serve.child("nats-server")
        services = {name: serve.child(f"-m services.{name}") for name in SERVICES}
        assert broker is not None and None not in services.values()

        os.kill(broker, signal.SIGKILL)
        # While the gateway has no broker GET / is a 503, and 200 again once it has reconnected.
        unavailable = (503, {"error": "message broker unavailable"})
        until(lambda: liveness(serve.url) == unavailable, what="GET / to answer 503")
        until(lambda: liveness(serve.url) == (200, "Ollama is running"), what="GET / to answer 200 again")

        restarted = serve.child("nats-server")
        assert restarted is not None and restarted != broker
        args = command(restarted)
        assert args[args.index("-p") + 1] == str(serve.nats_port)  # where the services look for it
        until(lambda: generates(serve.url), what="a generation through the restarted broker")
        # The services reconnected by themselves: none of them was restarted.
        assert {name: serve.child(f"-m services.{name}") for name in SERVICES} == services
        log = serve.stderr()
        assert "corral.launcher exited service=nats-server status=-9 restart_in=0.5s" in log
        assert f"corral.launcher restarted service=nats-server pid={restarted} port={serve.nats_port}" in log


def test_a_service_that_cannot_start_stops_corral_serve(tmp_path: Path) -> None:
    """The gateway's port is taken: it exits at once each time, and corral serve gives up with
    a message and status 1 rather than restart it forever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        serve = start_serve(tmp_path, taken.getsockname()[1])
        children: list[int] = []

        def gave_up() -> bool:
            children.extend(descendants(serve.pid))
            return serve.poll() is not None

        until(gave_up, what="corral serve to give up")
    assert serve.returncode == 1
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "corral-gateway exited 5 times in a row within 10s of starting" in log, log[-3000:]
    assert log.count("exited service=gateway") == 4
    until(lambda: not alive(children), what="every child process to exit")


def test_a_killed_worker_fails_its_streams_at_once_and_is_used_again_when_back(
    tmp_path: Path, nats_binary: Path
) -> None:
    """kill -9 of the worker mid-stream: the client gets an error as soon as the stream falls
    silent and the worker is found gone (no responders), not after CORRAL_IDLE_TIMEOUT; a
    worker that comes back with the same id serves again."""
    stack = Stack(tmp_path, nats_binary, env_overrides={"CORRAL_IDLE_TIMEOUT": "600"}).start()
    try:
        body = {"model": MODEL, "prompt": "1, 2, 3, 4, 5,", "raw": True, "options": {"num_predict": 2000}}
        with httpx.stream("POST", f"{stack.url}/api/generate", json=body, timeout=120) as response:
            lines = (json.loads(line) for line in response.iter_lines() if line)
            assert "response" in next(lines)
            stack.stop_service("worker", signal.SIGKILL)
            rest = list(lines)
        assert rest[-1] == {"error": "worker w1 stopped responding"}
        assert all(not line.get("done") for line in rest)  # never a false "done"

        stack.start_service("worker")
        short = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 4}}

        def served() -> bool:
            return httpx.post(f"{stack.url}/api/generate", json=short, timeout=120).status_code == 200

        until(served, what="a generation on the worker that came back")
    finally:
        stack.stop()
