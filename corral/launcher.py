"""`corral serve`: the whole system on one machine, as separate processes.

Starts a local nats-server (unless NATS_URL names one), then registry,
scheduler, worker and gateway with the same entry points the containers use
(`python -m services.<name>`), and stops them in order on Ctrl-C (gateway
first, broker last).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import httpx

from corral.children import spawn
from corral.nats_server import NatsServer, find_binary
from services.config import Settings

SERVICES = ("registry", "scheduler", "worker", "gateway")
READY_TIMEOUT = 120.0


@dataclass
class Launcher:
    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    nats: NatsServer | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, cancelled: Callable[[], bool] = lambda: False) -> str:
        """Start everything; return the gateway's URL once it answers."""
        nats_url = self.settings.nats_url
        if not nats_url:
            binary = find_binary(self.settings.nats_server)
            self.nats = NatsServer(binary, self.settings.data_dir / "nats")
            nats_url = self.nats.start(detached=True)
        self.env["NATS_URL"] = nats_url
        for name in SERVICES:
            self.children[name] = spawn(
                [sys.executable, "-m", f"services.{name}"], detached=True, env=self.env
            )
        url = self.settings.host.connectable_url
        self._wait_ready(url, cancelled)
        return url

    def _wait_ready(self, url: str, cancelled: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not cancelled():
            self.check_children()
            try:
                # trust_env=False: a proxy in HTTP(S)_PROXY must not carry a loopback check.
                if httpx.get(url + "/", timeout=1.0, trust_env=False).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        if cancelled():
            return
        raise RuntimeError(f"the gateway did not answer on {url} within {READY_TIMEOUT:.0f}s")

    def check_children(self) -> None:
        for name, child in self.children.items():
            if child.poll() is not None:
                raise RuntimeError(f"corral-{name} exited with status {child.returncode}")

    def stop(self, timeout: float = 15.0) -> None:
        for name in reversed(SERVICES):
            child = self.children.pop(name, None)
            if child is None or child.poll() is not None:
                continue
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self.nats is not None:
            self.nats.stop()

    def run_until_stopped(self, started: Callable[[str], None]) -> None:
        """Start everything, call `started(url)`, then block until SIGINT/SIGTERM or a child's
        death; stop everything in any case. Signals are taken over before the first child
        starts, so a Ctrl-C during start-up also ends in a clean stop."""
        stopping = False

        def on_signal(signum: int, _: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            url = self.start(lambda: stopping)
            if not stopping:
                started(url)
            while not stopping:
                self.check_children()
                time.sleep(0.2)
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
