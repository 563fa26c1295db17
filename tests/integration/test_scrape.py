"""The gateway's scraper gathers every process's metrics over a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from corral.nats_server import NatsServer
from services.gateway.scrape import Scraper
from services.protocol import MetricsSnapshot, subjects


@pytest.fixture
def nats_url(tmp_path: Path, nats_binary: Path) -> Iterator[str]:
    server = NatsServer(nats_binary, tmp_path / "nats")
    yield server.start()
    server.stop()


class Process:
    """A service process answering scrapes; `hold` keeps its answer back until set."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.hold = asyncio.Event()
        self.hold.set()
        self.connection: Client | None = None

    async def start(self, url: str) -> None:
        self.connection = await nats.connect(url)
        await self.connection.subscribe(subjects.METRICS_SCRAPE, cb=self._answer)
        await self.connection.flush()

    async def _answer(self, message: Msg) -> None:
        await self.hold.wait()
        text = f'up{{instance="{self.instance}"}} 1.0\n'
        await message.respond(
            MetricsSnapshot(service="corral-test", instance=self.instance, text=text).encode()
        )

    async def stop(self) -> None:
        assert self.connection is not None
        await self.connection.close()


def instances(snapshots: list[MetricsSnapshot]) -> set[str]:
    return {s.instance for s in snapshots}


async def test_every_process_answers_and_a_late_one_is_waited_for_next_time(nats_url: str) -> None:
    a, b = Process("a"), Process("b")
    for process in (a, b):
        await process.start(nats_url)
    gateway = await nats.connect(nats_url)
    scraper = Scraper(window=2.0)  # returns as soon as every known process answered; ample on a busy machine
    try:
        assert instances(await scraper.gather(gateway)) == {"a", "b"}

        b.hold.clear()  # b answers only after the scrape gave up on it
        assert instances(await scraper.gather(gateway)) == {"a"}
        b.hold.set()
        await gateway.flush()
        for _ in range(1000):  # until b's late answer has reached the gateway
            if "b" in scraper._known:
                break
            await asyncio.sleep(0.01)
        assert instances(await scraper.gather(gateway)) == {"a", "b"}

        await b.stop()  # gone: the next scrape waits out its window, then forgets b
        assert instances(await scraper.gather(gateway)) == {"a"}
        assert scraper._known == {"a"}
    finally:
        await a.stop()
        await gateway.close()


async def test_without_nats_the_scraper_returns_nothing_rather_than_failing(nats_url: str) -> None:
    gateway = await nats.connect(nats_url)
    await gateway.close()
    assert await Scraper(window=0.1).gather(gateway) == []
