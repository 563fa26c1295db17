"""The gateway's count of an answer's chunks: a number skipped, or a Done that counts more
chunks than arrived, is a cut stream (never an answer that claims to be whole)."""

from __future__ import annotations

import pytest

from services.gateway.relay import ChunkCount, Event
from services.protocol import Chunk, Done, Embeddings, Failed, Started

STOP = "stop"


def chunk(seq: int) -> Chunk:
    return Chunk(seq=seq, text=f"part {seq}")


def done(chunks: int) -> Done:
    return Done(done_reason=STOP, chunks=chunks)


# (case, events in order, what lost_before says for each)
CASES: list[tuple[str, list[Event], list[int]]] = [
    ("whole answer", [Started(), chunk(1), chunk(2), done(2)], [0, 0, 0, 0]),
    ("no output at all", [Started(), done(0)], [0, 0]),
    ("a chunk lost in the middle", [chunk(1), chunk(3)], [0, 1]),
    ("the first chunks lost", [Started(), chunk(3)], [0, 2]),
    ("the last chunk lost before done", [chunk(1), done(2)], [0, 1]),
    ("every chunk lost before done", [done(3)], [3]),
    ("failures and embeddings are not counted", [chunk(1), Failed(error="x")], [0, 0]),
    ("embeddings alone", [Embeddings(embeddings=[[1.0]])], [0]),
]


@pytest.mark.parametrize(("events", "lost"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_lost_before(events: list[Event], lost: list[int]) -> None:
    count = ChunkCount()
    assert [count.lost_before(event) for event in events] == lost
