"""`corral serve`: the whole system on one machine, as separate processes.

Starts a local nats-server (unless NATS_URL names one), then registry,
scheduler, worker and gateway with the same entry points the containers use
(`python -m services.<name>`), and stops them in order on Ctrl-C (gateway
first, broker last).

It supervises them: a child that exits on its own is logged and started again after a
backoff (`RestartPolicy`) while the others keep serving. The broker comes back on the same
port with the same token and JetStream store, so the services, which reconnect forever, find
it by themselves. A child that cannot start (exits at once, several times in a row) stops
everything with an error rather than spinning.
"""

from __future__ import annotations

import logging
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
from corral.nats_server import NatsServer, NatsServerError, find_binary
from services.config import Settings

SERVICES = ("registry", "scheduler", "worker", "gateway")
BROKER = "nats-server"
READY_PATHS = ("/", "/api/tags")
READY_TIMEOUT = 120.0
TICK = 0.2  # how often the launcher looks at its children
log = logging.getLogger("corral.launcher")


@dataclass(frozen=True)
class RestartPolicy:
    """When a child that exited starts again: after `first_delay`, doubled for each exit in a
    row up to `max_delay`; a run of `stable_after` seconds starts the count afresh. After
    `give_up_after` exits in a row, each within `quick_exit` seconds of starting, the child
    cannot start (a port taken, a broken install): give up rather than spin."""

    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 60.0
    quick_exit: float = 10.0
    give_up_after: int = 5


@dataclass
class Backoff:
    """One child's exits, timed by `clock`: `exited()` answers how long to wait before starting
    it again, or None to give up."""

    policy: RestartPolicy = RestartPolicy()
    clock: Callable[[], float] = time.monotonic
    started_at: float = 0.0
    exits: int = 0  # in a row, with no stable run between them
    quick: int = 0  # in a row, each soon after its start

    def started(self) -> None:
        self.started_at = self.clock()

    def exited(self) -> float | None:
        ran = self.clock() - self.started_at
        self.exits = 1 if ran >= self.policy.stable_after else self.exits + 1
        self.quick = self.quick + 1 if ran < self.policy.quick_exit else 0
        if self.quick >= self.policy.give_up_after:
            return None
        return min(self.policy.first_delay * 2.0 ** (self.exits - 1), self.policy.max_delay)


@dataclass
class Launcher:
    settings: Settings
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    nats: NatsServer | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    policy: RestartPolicy = RestartPolicy()
    backoffs: dict[str, Backoff] = field(default_factory=dict)
    due: dict[str, float] = field(default_factory=dict)  # exited children: when each starts again

    def start(self, cancelled: Callable[[], bool] = lambda: False) -> str:
        """Start everything; return the gateway's URL once it answers."""
        nats_url = self.settings.nats_url
        if not nats_url:
            binary = find_binary(self.settings.nats_server)
            self.nats = NatsServer(binary, self.settings.data_dir / "nats")
            self._backoff(BROKER).started()
            nats_url = self.nats.start(detached=True)
        self.env["NATS_URL"] = nats_url
        for name in SERVICES:
            self._start_service(name)
        url = self.settings.host.connectable_url
        self._wait_ready(url, cancelled)
        return url

    def _backoff(self, name: str) -> Backoff:
        return self.backoffs.setdefault(name, Backoff(self.policy))

    def _start_service(self, name: str) -> None:
        self._backoff(name).started()
        self.children[name] = spawn([sys.executable, "-m", f"services.{name}"], detached=True, env=self.env)

    def _wait_ready(self, url: str, cancelled: Callable[[], bool]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and not cancelled():
            self.supervise()
            try:
                # Ready: the gateway answers with its broker (GET /) and the registry answers
                # through it (GET /api/tags), so the first request after the banner works.
                # trust_env=False: a proxy in HTTP(S)_PROXY must not carry a loopback check.
                if all(
                    httpx.get(url + path, timeout=1.0, trust_env=False).status_code == 200
                    for path in READY_PATHS
                ):
                    return
            except httpx.TransportError:
                pass
            time.sleep(TICK)
        if cancelled():
            return
        raise RuntimeError(f"the gateway did not answer on {url} within {READY_TIMEOUT:.0f}s")

    def supervise(self) -> None:
        """One look at every child: note those that exited, start again those whose wait is
        over. Raises RuntimeError for a child that cannot start."""
        for name, status in self._exited():
            delay = self.backoffs[name].exited()
            if delay is None:
                raise RuntimeError(
                    f"{_label(name)} exited {self.policy.give_up_after} times in a row within "
                    f"{self.policy.quick_exit:g}s of starting (last with status {status}); not restarting it"
                )
            _event("exited", logging.WARNING, service=name, status=status, restart_in=f"{delay:g}s")
            self.due[name] = time.monotonic() + delay
        for name, when in list(self.due.items()):
            if time.monotonic() >= when:
                del self.due[name]
                self._restart(name)

    def _exited(self) -> list[tuple[str, int]]:
        """Children that exited and are not yet waiting to start again, with their status."""
        processes = dict(self.children)
        if self.nats is not None and self.nats.process is not None:
            processes[BROKER] = self.nats.process
        return [
            (name, process.returncode)
            for name, process in processes.items()
            if name not in self.due and process.poll() is not None
        ]

    def _restart(self, name: str) -> None:
        if name != BROKER:
            self._start_service(name)
            _event("restarted", service=name, pid=self.children[name].pid)
            return
        assert self.nats is not None
        self._backoff(BROKER).started()
        try:
            # The same port, token and store: the services' reconnect loops find it again.
            self.nats.start(detached=True, port=self.nats.port)
        except NatsServerError as exc:  # its process has exited: the next look counts it
            _event("restart_failed", logging.WARNING, service=name, error=exc)
            return
        assert self.nats.process is not None
        _event("restarted", service=name, pid=self.nats.process.pid, port=self.nats.port)

    def stop(self, timeout: float = 15.0) -> None:
        self.due.clear()
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
        """Start everything, call `started(url)`, then supervise until SIGINT/SIGTERM (or a
        child that cannot start); stop everything in any case. Signals are taken over before
        the first child starts, so a Ctrl-C during start-up also ends in a clean stop."""
        stopping = False

        def on_signal(signum: int, _: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        _log_to_stderr()
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            url = self.start(lambda: stopping)
            if not stopping:
                started(url)
            while not stopping:
                self.supervise()
                time.sleep(TICK)
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)


def _label(name: str) -> str:
    return name if name == BROKER else f"corral-{name}"


def _event(event: str, level: int = logging.INFO, **fields: object) -> None:
    log.log(level, " ".join([event, *(f"{k}={v}" for k, v in fields.items())]))


def _log_to_stderr() -> None:
    """The launcher's events in the services' own line format (`time level logger event k=v`),
    so `corral serve`'s stderr reads as one log."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
