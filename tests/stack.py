"""A real corral stack for tests: a fresh nats-server and the four service processes.

Nothing is mocked: services run as `python -m services.<name>` exactly as in
production, against a nats-server on a free port with JetStream in a temp dir.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
from nats.js.api import StreamInfo
from nats.js.errors import NotFoundError

from corral.nats_server import NatsServer
from services.protocol import subjects
from tests.watch import DEADLINE

MODEL = "smollm2:135m"
SERVICES = ("registry", "scheduler", "worker", "gateway")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    root: Path
    nats_binary: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    nats: NatsServer | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    port: int = 0
    monitor_port: int = 0  # nats-server's HTTP monitoring (/connz, /jsz)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def nats_url(self) -> str:
        assert self.nats is not None
        return self.nats.url

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "CORRAL_"))}
        env.update(
            NATS_URL=self.nats_url,
            OLLAMA_HOST=f"127.0.0.1:{self.port}",
            OLLAMA_MODELS=str(self.root / "models"),
            CORRAL_DATA_DIR=str(self.root / "data"),
            CORRAL_WORKER_ID="w1",
            CORRAL_HEARTBEAT_INTERVAL="0.5",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env_overrides)
        return env

    def start(self, services: tuple[str, ...] = SERVICES) -> Stack:
        """Start nats-server and `services`; with all four, wait until a preload goes through."""
        self.port = free_port()
        self.nats = NatsServer(self.nats_binary, self.root / "nats")
        self.monitor_port = free_port()
        self.nats.start(monitor_port=self.monitor_port)
        try:
            for name in services:
                self.start_service(name)
            if services == SERVICES:
                self.wait_ready()
        except BaseException:
            self.stop()  # a stack that never came up leaves no process behind
            raise
        return self

    def start_service(self, name: str, module: str | None = None, env: dict[str, str] | None = None) -> None:
        """Start `python -m services.<module>` (default: `name`), known here as `name`, with `env`
        over the stack's environment."""
        self.start_process(name, ["-m", f"services.{module or name}"], env)

    def start_process(self, name: str, arguments: list[str], env: dict[str, str] | None = None) -> None:
        """Start `python <arguments>` in the stack's environment (`env` over it), known as `name`."""
        log = (self.root / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, *arguments],
            env={**self.env(), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(20)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, timeout: float = DEADLINE) -> None:
        """Ready means a preload goes all the way through: registry, scheduler, worker."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited early:\n{self.log(name)[-3000:]}")
            try:
                response = httpx.post(f"{self.url}/api/generate", json={"model": MODEL}, timeout=30)
                if response.status_code == 200 and response.json().get("done_reason") == "load":
                    return
                last = response.text
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.3)
        raise RuntimeError(f"stack not ready: {last}")

    def stop(self) -> None:
        extra = [name for name in self.processes if name not in SERVICES]
        for name in [*extra, *reversed(SERVICES)]:
            if name in self.processes:
                process = self.processes.pop(name)
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
        if self.nats is not None:
            self.nats.stop()

    async def stream_info(self) -> StreamInfo | None:
        """The request stream as JetStream reports it; None while nobody has created it."""
        nc = await nats.connect(self.nats_url, allow_reconnect=False)
        try:
            return await nc.jetstream().stream_info(subjects.REQUEST_STREAM)
        except NotFoundError:
            return None
        finally:
            await nc.close()

    async def stream_messages(self) -> int:
        """Messages now waiting in the request stream (the queue OLLAMA_MAX_QUEUE bounds)."""
        info = await self.stream_info()
        assert info is not None, "no request stream"
        return int(info.state.messages)
