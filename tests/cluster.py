"""A 3-node NATS cluster for tests, and a corral stack on it.

Three nats-server processes on free ports, one cluster ("corral"), each with its own name,
JetStream store and monitoring port, each routed to the other two. `Cluster.start` returns
once JetStream has a meta leader; a node can be killed with SIGKILL and started again on the
same ports and store. Services get every node in NATS_URL (a comma-separated list) and move to
another node when theirs goes away.

Nodes do not advertise their client URLs to clients (`no_advertise`): the list in NATS_URL
carries the token each URL needs, and a discovered URL would come without it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
from nats.js.api import StreamInfo
from nats.js.errors import NotFoundError

from corral.nats_server import config_file
from services.protocol import subjects
from tests.stack import Stack, free_port
from tests.watch import DEADLINE, until

CLUSTER = "corral"
LEASE_STREAM = f"KV_{subjects.LEADER_BUCKET}"  # the stream under the scheduler's lease bucket


@dataclass
class Node:
    """One nats-server of the cluster: its ports are fixed at creation, so a restart keeps them."""

    name: str
    root: Path
    binary: Path
    token: str
    port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.token}@127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, peers: list[Node]) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self.root / "nats.conf"
        routes = ", ".join(f"nats-route://127.0.0.1:{peer.route_port}" for peer in peers)
        config.write_text(
            config_file().read_text()
            + f"""
server_name: {self.name}
listen: 127.0.0.1:{self.port}
http: 127.0.0.1:{self.monitor_port}
jetstream {{
  store_dir: "{self.root / "jetstream"}"
}}
cluster {{
  name: {CLUSTER}
  listen: 127.0.0.1:{self.route_port}
  routes: [{routes}]
  no_advertise: true
}}
authorization {{
  token: "{self.token}"
}}
"""
        )
        config.chmod(0o600)
        log = (self.root / "nats-server.log").open("ab")
        self.process = subprocess.Popen(
            [str(self.binary), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        until(self._listening, what=f"nats-server {self.name} to listen", timeout=20)

    def kill(self) -> None:
        """kill -9: no lame-duck mode, no goodbye to the routes or the clients."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """The monitoring endpoint's JSON (/jsz, /routez, /connz…)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/{endpoint}", timeout=5) as answer:
            data: dict[str, Any] = json.loads(answer.read())
        return data

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"nats-server {self.name} exited: see {self.root / 'nats-server.log'}")
        try:
            self.monitor("varz")  # answers while JetStream waits for its peers (/healthz does not)
        except OSError:
            return False
        return True


@dataclass
class Cluster:
    binary: Path
    root: Path
    size: int = 3
    nodes: list[Node] = field(default_factory=list)

    def start(self) -> Cluster:
        token = secrets.token_urlsafe(16)
        names = [f"n{index + 1}" for index in range(self.size)]
        self.nodes = [Node(name, self.root / name, self.binary, token) for name in names]
        try:
            for node in self.nodes:
                node.start(self._peers(node))
            self.wait_meta_leader()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def servers(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """NATS_URL for the services: every node, comma-separated."""
        return ",".join(self.servers)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def kill(self, name: str) -> None:
        self.node(name).kill()

    def restart(self, name: str) -> None:
        """Start a killed node again on its ports and store; return once it is back in the
        cluster with a meta leader in view."""
        node = self.node(name)
        node.start(self._peers(node))
        self.wait_meta_leader()

    def meta_leader(self) -> str | None:
        """The JetStream meta leader, if every live node agrees on one (None: an election)."""
        leaders = set()
        for node in self.nodes:
            if node.alive:
                try:
                    leaders.add(node.monitor("jsz").get("meta_cluster", {}).get("leader"))
                except OSError:
                    return None
        return leaders.pop() if len(leaders) == 1 else None

    def wait_meta_leader(self, timeout: float = DEADLINE) -> str:
        until(lambda: self.meta_leader() is not None, what="a JetStream meta leader", timeout=timeout)
        leader = self.meta_leader()
        assert leader is not None
        return leader

    async def stream_info(self, stream: str) -> StreamInfo | None:
        """The stream as JetStream reports it (None while it does not exist)."""
        connection = await nats.connect(self.servers, allow_reconnect=False, connect_timeout=2)
        try:
            return await connection.jetstream(timeout=2).stream_info(stream)
        except NotFoundError:
            return None
        finally:
            await connection.close()

    def leader_of(self, stream: str) -> str | None:
        """The node whose server leads `stream` (None: it has no leader now, or does not exist)."""
        try:
            info = asyncio.run(self.stream_info(stream))
        except (nats.errors.Error, TimeoutError):
            return None
        if info is None or info.cluster is None:
            return None
        return info.cluster.leader

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _peers(self, node: Node) -> list[Node]:
        return [peer for peer in self.nodes if peer is not node]


@dataclass
class ClusterStack(Stack):
    """A corral stack whose broker is a `Cluster` (started by the caller)."""

    cluster: Cluster | None = None

    @property
    def nats_url(self) -> str:
        assert self.cluster is not None
        return self.cluster.url

    def start(self, services: tuple[str, ...] = ("registry", "scheduler", "gateway")) -> ClusterStack:
        self.port = free_port()
        for name in services:
            self.start_service(name)
        return self

    def stop(self) -> None:
        super().stop()
        if self.cluster is not None:
            self.cluster.stop()

    async def stream_info(self) -> StreamInfo | None:
        assert self.cluster is not None
        return await self.cluster.stream_info(subjects.REQUEST_STREAM)
