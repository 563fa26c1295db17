"""Engine steps into the event loop (coalesced when it lags), replies out in order."""

from __future__ import annotations

import asyncio
import threading

from services.protocol import Chunk, Done
from services.worker.engines.base import Step
from services.worker.handoff import Outbox, StepInbox


async def test_steps_that_pile_up_are_handled_in_one_go() -> None:
    batches: list[list[Step]] = []
    handled = asyncio.Event()

    def handle(steps: list[Step]) -> None:
        batches.append(steps)
        handled.set()

    inbox = StepInbox(asyncio.get_running_loop(), handle)
    engine = threading.Thread(target=lambda: [inbox.put([Step(str(i), i)]) for i in range(3)])
    engine.start()
    engine.join()  # the loop is blocked meanwhile: all three arrive before it can drain
    await handled.wait()
    assert [[s.job_id for s in batch] for batch in batches] == [["0", "1", "2"]]

    handled.clear()
    inbox.put([Step("3", 3)])  # a loop that keeps up gets each step on its own
    await handled.wait()
    assert [s.job_id for s in batches[-1]] == ["3"]


async def test_outbox_sends_in_queue_order() -> None:
    sent: list[tuple[str, bytes]] = []

    async def publish(subject: str, data: bytes) -> None:
        await asyncio.sleep(0)  # a publish that yields must not let a later message overtake
        sent.append((subject, data))

    outbox = Outbox(publish)
    sender = asyncio.create_task(outbox.run())
    outbox.send("r", Chunk(text="a"))
    outbox.send("r", Chunk(text="b"))
    outbox.send("r", Done(done_reason="stop"))
    await outbox.flush()
    sender.cancel()
    assert [data for _, data in sent] == [
        Chunk(text="a").encode(),
        Chunk(text="b").encode(),
        Done(done_reason="stop").encode(),
    ]
