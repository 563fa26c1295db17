"""The scheduler lease against real nats-server builds: one leader at a time, a standby that
takes over when the leader stops renewing, a renewal that never overwrites another's lease."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from corral.nats_server import NatsServer, version
from services.protocol import subjects
from services.scheduler.lease import Lease, LeaseLost
from tests.conftest import nats_binaries

TTL = 1.0  # seconds: short, so a test waits little for an expiry


@pytest.fixture(params=nats_binaries(), ids=lambda p: f"nats-{version(p)}")
async def connection(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Client]:
    server = NatsServer(request.param, tmp_path / "nats")
    url = server.start()
    client = await nats.connect(url)
    try:
        yield client
    finally:
        await client.close()
        server.stop()


def lease(connection: Client, holder: str, clock: list[float] | None = None) -> Lease:
    if clock is None:
        return Lease(connection.jetstream, holder, ttl=TTL)
    return Lease(connection.jetstream, holder, ttl=TTL, clock=lambda: clock[0])


async def leader(connection: Client) -> tuple[str, int]:
    """Who holds the lease, and the revision of its entry."""
    kv: KeyValue = await connection.jetstream().key_value(subjects.LEADER_BUCKET)
    entry = await kv.get(subjects.LEADER_KEY)
    return (entry.value or b"").decode(), int(entry.revision or 0)


async def renewed(connection: Client, times: int) -> str:
    """Wait until the leader's entry has been rewritten `times` more times; return its holder."""
    holder, start = await leader(connection)
    while (now := await leader(connection))[1] < start + times:
        await asyncio.sleep(0.05)
    assert now[0] == holder, "the lease changed hands while being renewed"
    return holder


async def test_one_leader_and_a_standby_that_takes_over(connection: Client) -> None:
    first, second = lease(connection, "first"), lease(connection, "second")
    await first.acquire()
    holding = asyncio.ensure_future(first.hold())
    waiting = asyncio.ensure_future(second.acquire())

    assert await renewed(connection, 3) == "first"
    assert not waiting.done()  # three renewals later the standby still waits

    holding.cancel()  # the leader dies: nobody renews
    await asyncio.wait_for(waiting, timeout=30)
    assert (await leader(connection))[0] == "second"
    assert second.held


async def test_a_renewal_never_overwrites_a_lease_another_took(connection: Client) -> None:
    """A leader whose clock stood still (a stalled process) finds the lease taken when it wakes:
    its conditional renewal fails, and it steps down."""
    stalled_clock = [0.0]
    stalled, other = lease(connection, "stalled", stalled_clock), lease(connection, "other")
    await stalled.acquire()
    await asyncio.wait_for(other.acquire(), timeout=30)  # the entry expired on the server

    with pytest.raises(LeaseLost, match="another scheduler holds the lease"):
        await stalled.hold()
    assert (await leader(connection))[0] == "other"


async def test_a_leader_that_cannot_renew_steps_down_by_its_own_clock(connection: Client) -> None:
    clock = [0.0]
    leader_lease = lease(connection, "leader", clock)
    await leader_lease.acquire()
    clock[0] = TTL  # its time is up before any renewal went out
    with pytest.raises(LeaseLost, match="could not be renewed"):
        await leader_lease.hold()
    assert not leader_lease.held


async def test_a_closed_lease_is_free_at_once_and_never_taken_again(connection: Client) -> None:
    first, second = lease(connection, "first"), lease(connection, "second")
    await first.acquire()
    waiting = asyncio.ensure_future(second.acquire())
    await first.close()
    await asyncio.wait_for(waiting, timeout=30)
    assert (await leader(connection))[0] == "second"

    await second.close()
    again = asyncio.ensure_future(first.acquire())
    await asyncio.sleep(3 * TTL)
    assert not again.done()  # closed for good: it never leads again
    again.cancel()
