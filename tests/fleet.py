"""A fleet of simulated workers in one process, for scheduler tests at scale:
`python -m tests.fleet COUNT` (NATS_URL and the other settings from the environment).

Each worker is a real corral worker, built by `services.worker.service.register` on the
simulated engine (CORRAL_ENGINE=simulated) with its own NATS connection and its own id
(sim000, sim001, …), as `python -m services.worker` builds one; only the process is shared,
so a hundred fit on two cores. SIGTERM stops them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys

from faststream.nats import NatsBroker

from services.runtime import new_broker, service_settings
from services.worker.service import register
from services.worker.worker import Worker


async def run(count: int) -> None:
    settings = service_settings("worker")
    if settings.engine != "simulated":
        sys.exit("tests.fleet: CORRAL_ENGINE must be simulated")
    running: list[tuple[NatsBroker, Worker, asyncio.Task[None]]] = []
    for index in range(count):
        mine = dataclasses.replace(settings, worker_id=f"sim{index:03d}")
        broker = new_broker(mine.nats_url or "", "worker")
        worker = register(broker, mine)
        await broker.start()
        running.append((broker, worker, asyncio.create_task(worker.heartbeat_loop())))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for broker, worker, beating in running:
        await worker.stop()
        beating.cancel()
        await broker.stop()


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1])))
