"""The embedded nats-server never runs open: a local process without the token is refused."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import nats
import pytest
from nats.errors import Error as NatsError

from corral.nats_server import NatsServer, version
from tests.conftest import nats_binaries


@pytest.fixture(params=nats_binaries(), ids=lambda p: f"nats-{version(p)}")
def server(request: pytest.FixtureRequest, tmp_path: Path) -> NatsServer:
    running = NatsServer(request.param, tmp_path / "nats")
    running.start()
    request.addfinalizer(running.stop)
    return running


async def publish_and_receive(url: str) -> bytes:
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        sub = await nc.subscribe("corral.test")
        await nc.publish("corral.test", b"hello")
        return (await sub.next_msg(timeout=5)).data
    finally:
        await nc.close()


def test_a_connection_without_the_token_is_refused(server: NatsServer) -> None:
    assert asyncio.run(publish_and_receive(server.url)) == b"hello"
    anonymous = "nats://" + server.url.rsplit("@", 1)[1]
    with pytest.raises(NatsError, match=r"[Aa]uthorization"):
        asyncio.run(publish_and_receive(anonymous))
    wrong = "nats://not-the-token@" + server.url.rsplit("@", 1)[1]
    with pytest.raises(NatsError, match=r"[Aa]uthorization"):
        asyncio.run(publish_and_receive(wrong))


def test_the_token_is_the_owners_alone_and_survives_a_restart(server: NatsServer) -> None:
    token = server.token()
    assert token and f"://{token}@" in server.url
    for path, mode in (
        (server.data_dir, 0o700),
        (server.data_dir / "token", 0o600),
        (server.data_dir / "nats.conf", 0o600),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert server.process is not None
    command_line = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
    assert token.encode() not in command_line
    server.stop()
    assert server.start() and server.token() == token
    assert asyncio.run(publish_and_receive(server.url)) == b"hello"
