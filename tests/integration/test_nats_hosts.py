"""NATS across hosts, as docker-compose.yml (host A) and docker-compose.worker.yml (host B) set it
up: host B's leaf node joins host A's nats-server over TLS with the password that
deploy/nats-credentials made, and no leaf joins without both.

Real nats-servers (every build here) run deploy/nats-hub.conf and deploy/nats-leaf.conf as they
are, fed through their environment as the compose files feed them; the servers' monitoring
endpoints show what the hub accepted (/leafz) and what it refused (/connz?state=closed).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.msg import Msg

from corral.nats_server import version
from services.protocol.subjects import HEARTBEAT, worker_run
from tests.conftest import nats_binaries
from tests.watch import DEADLINE, until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CREDENTIALS = DEPLOY / "nats-credentials"
HUB = "127.0.0.1"  # the name host B reaches host A by: the certificate names it, the leaf dials it
LOOPBACK_FREE_PORTS = ("-a", "127.0.0.1", "-p", "-1", "-m", "-1")  # clients and monitoring
PROMPT = b"x" * (2 << 20)  # a long prompt: over NATS's default 1 MiB, within corral's 8 MiB


def generate(secrets: Path, *names: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "CORRAL_NATS_SECRETS": str(secrets)}
    return subprocess.run([str(CREDENTIALS), *names], env=env, capture_output=True, text=True, check=False)


def env_file(path: Path) -> dict[str, str]:
    """NAME=value lines, read as compose reads an `env_file`."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nats") / "secrets"
    made = generate(out, HUB, "localhost")
    assert made.returncode == 0, made.stderr
    return out


@pytest.fixture(scope="module")
def stranger_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another run's CA: it did not sign the hub's certificate."""
    out = tmp_path_factory.mktemp("stranger") / "secrets"
    assert generate(out, HUB).returncode == 0
    return out / "leaf" / "ca.pem"


@dataclass
class Server:
    """A nats-server on free ports (it picks them and writes them down: no race), on loopback."""

    process: subprocess.Popen[bytes]
    url: str
    monitoring: str

    @classmethod
    def start(cls, binary: Path, config: Path, env: dict[str, str], root: Path, *args: str) -> Server:
        ports = root / "ports"
        ports.mkdir(parents=True)
        with (root / "nats-server.log").open("wb") as log:
            process = subprocess.Popen(
                [str(binary), "-c", str(config), *LOOPBACK_FREE_PORTS, "--ports_file_dir", str(ports), *args],
                env={"PATH": os.environ["PATH"], **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        found: dict[str, list[str]] = {}

        def reported() -> bool:
            assert process.poll() is None, f"nats-server exited; see {root / 'nats-server.log'}"
            for path in ports.glob("*.ports"):
                try:
                    found.update(json.loads(path.read_text()))
                except ValueError:  # still being written
                    return False
            return bool(found)

        try:
            until(reported, f"nats-server with {config.name} to report its ports")
        except BaseException:
            process.kill()
            raise
        return cls(process, found["nats"][0], found["monitoring"][0])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(DEADLINE)

    def monitor(self, endpoint: str) -> Any:
        return httpx.get(self.monitoring + endpoint, timeout=10).json()

    def leafs(self) -> int:
        return int(self.monitor("/leafz")["leafnodes"])

    def interest_across(self, subject: str) -> bool:
        """Whether the other side of this server's leaf connection has said it wants `subject`."""
        leafs = self.monitor("/leafz?subs=1")["leafs"] or []
        return any(subject in (leaf.get("subscriptions_list") or []) for leaf in leafs)

    def refused_leafs(self) -> list[str]:
        """Why each closed leaf connection was closed."""
        closed = self.monitor("/connz?state=closed")["connections"] or []
        return [c["reason"] for c in closed if c.get("kind") == "Leafnode"]


StartLeaf = Callable[[str, Path], Server]


@pytest.fixture(params=nats_binaries(), ids=lambda p: f"nats-{version(p)}")
def binary(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture
def hub(binary: Path, secrets: Path, tmp_path: Path) -> Iterator[Server]:
    """Host A's server as docker-compose.yml runs it: JetStream, the leafnode listener."""
    env = {
        **env_file(secrets / "hub" / "leafnode.env"),
        "LEAFNODE_LISTEN": "127.0.0.1:-1",
        "LEAFNODE_TLS_CERT": str(secrets / "hub" / "leafnode-cert.pem"),
        "LEAFNODE_TLS_KEY": str(secrets / "hub" / "leafnode-key.pem"),
    }
    root = tmp_path / "hub"
    server = Server.start(binary, DEPLOY / "nats-hub.conf", env, root, "-js", "-sd", str(root / "js"))
    yield server
    server.stop()


@pytest.fixture
def start_leaf(binary: Path, hub: Server, tmp_path: Path) -> Iterator[StartLeaf]:
    """Starts host B's server as docker-compose.worker.yml runs it, with the URL and CA given."""
    port = hub.monitor("/varz")["leaf"]["port"]
    started: list[Server] = []

    def start(hub_url: str, ca: Path) -> Server:
        env = {"HUB_URL": hub_url.replace(":7422", f":{port}"), "HUB_CA": str(ca)}
        root = tmp_path / f"leaf{len(started)}"
        started.append(Server.start(binary, DEPLOY / "nats-leaf.conf", env, root))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def test_credentials_are_the_owners_alone_and_name_the_hub(secrets: Path) -> None:
    files = {p.relative_to(secrets).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in secrets.rglob("*")}
    assert files == {
        "hub": 0o700,
        "hub/leafnode-cert.pem": 0o600,
        "hub/leafnode-key.pem": 0o600,
        "hub/leafnode.env": 0o600,
        "leaf": 0o700,
        "leaf/ca.pem": 0o600,
        "leaf/hub.env": 0o600,
    }  # and no CA key: nothing can sign another certificate the leaves would trust
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    password = env_file(secrets / "hub" / "leafnode.env")["LEAFNODE_PASSWORD"]
    assert len(password) >= 64
    assert env_file(secrets / "leaf" / "hub.env") == {"HUB_URL": f"tls://corral-leaf:{password}@{HUB}:7422"}
    for name in ("-verify_ip", HUB), ("-verify_hostname", "localhost"):
        verify = ["openssl", "verify", "-CAfile", str(secrets / "leaf" / "ca.pem"), *name]
        checked = subprocess.run(
            [*verify, str(secrets / "hub" / "leafnode-cert.pem")], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_credentials_are_never_overwritten(secrets: Path) -> None:
    before = (secrets / "hub" / "leafnode.env").read_text()
    again = generate(secrets, HUB)
    assert again.returncode != 0 and "already holds credentials" in again.stderr
    assert (secrets / "hub" / "leafnode.env").read_text() == before


def test_a_worker_host_joins_over_tls_with_the_password(
    hub: Server, start_leaf: StartLeaf, secrets: Path
) -> None:
    assert hub.monitor("/varz")["leaf"]["tls_required"] is True
    leaf = start_leaf(env_file(secrets / "leaf" / "hub.env")["HUB_URL"], secrets / "leaf" / "ca.pem")
    until(lambda: hub.leafs() == 1 and leaf.leafs() == 1, "the leaf to join the hub")
    assert hub.refused_leafs() == []
    # corral's nats.conf on both sides: a long prompt crosses (NATS's default is 1 MiB)
    assert hub.monitor("/varz")["max_payload"] == leaf.monitor("/varz")["max_payload"] == 8 << 20
    heartbeat, reply = asyncio.run(exchange(hub, leaf))
    assert heartbeat == b"w2 is alive"
    assert reply == b"w2 ran " + PROMPT


async def exchange(hub: Server, leaf: Server) -> tuple[bytes, bytes]:
    """A worker on host B heartbeats to host A's scheduler, which sends it a long request."""
    scheduler = await nats.connect(hub.url, allow_reconnect=False)
    worker = await nats.connect(leaf.url, allow_reconnect=False)
    try:
        heartbeats = await scheduler.subscribe(HEARTBEAT)
        await scheduler.flush()
        await asyncio.to_thread(until, lambda: leaf.interest_across(HEARTBEAT), "the hub's interest")
        await worker.publish(HEARTBEAT, b"w2 is alive")
        heartbeat = (await heartbeats.next_msg(timeout=DEADLINE)).data

        async def run(message: Msg) -> None:
            await message.respond(b"w2 ran " + message.data)

        await worker.subscribe(worker_run("w2"), cb=run)
        await worker.flush()
        await asyncio.to_thread(until, lambda: hub.interest_across(worker_run("w2")), "the worker's interest")
        reply = await scheduler.request(worker_run("w2"), PROMPT, timeout=DEADLINE)
        return heartbeat, reply.data
    finally:
        await worker.close()
        await scheduler.close()


@pytest.mark.parametrize(
    "credentials",
    [pytest.param("", id="no-credentials"), pytest.param("corral-leaf:guessed@", id="wrong-password")],
)
def test_a_leaf_without_the_password_is_refused(
    hub: Server, start_leaf: StartLeaf, secrets: Path, credentials: str
) -> None:
    leaf = start_leaf(f"tls://{credentials}{HUB}:7422", secrets / "leaf" / "ca.pem")
    until(lambda: bool(hub.refused_leafs() or hub.leafs()), "the hub to accept or refuse the leaf")
    assert hub.refused_leafs()[:1] == ["Authentication Failure"]
    assert hub.leafs() == 0 and leaf.leafs() == 0


def test_a_leaf_that_does_not_trust_the_hubs_ca_sends_it_nothing(
    hub: Server, start_leaf: StartLeaf, secrets: Path, stranger_ca: Path
) -> None:
    """The leaf checks the hub's certificate before it gives its password: a server that cannot
    show one from the CA never sees it."""
    leaf = start_leaf(env_file(secrets / "leaf" / "hub.env")["HUB_URL"], stranger_ca)
    until(lambda: bool(hub.refused_leafs() or hub.leafs()), "the hub to accept or refuse the leaf")
    assert hub.refused_leafs()[:1] == ["TLS Handshake Failure"]
    assert hub.leafs() == 0 and leaf.leafs() == 0
