"""The broker under stress, with real processes: a nats-server restarted mid-stream (file
store) loses no accepted request, runs none twice and cuts no answer silently; a burst of
five times the queue while busy is answered exactly by the bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.nats_server import version
from tests.conftest import nats_binaries
from tests.integration.test_queue import LONG, Background, queued
from tests.stack import MODEL, Stack
from tests.watch import ReplyRecorder, until

COUNTING = {**LONG, "options": {"num_predict": 120, "temperature": 0}}
BUSY_TEXT = "server busy, please try again.  maximum pending requests exceeded"


def answer(lines: list[dict]) -> str:
    return "".join(str(line.get("response", "")) for line in lines)


@pytest.mark.parametrize("binary", nats_binaries(), ids=lambda p: f"nats-{version(p)}")
def test_a_broker_restart_loses_no_accepted_request_and_cuts_no_answer_silently(
    tmp_path: Path, binary: Path
) -> None:
    """On 2.9 an acknowledgement around the restart can also leave its message in the stream
    for good; the scheduler's sweep (`stream.sweep_acknowledged`) takes it out."""
    # A long idle timeout: a stream that stalled instead of ending would hang past the deadline.
    settings = {
        "OLLAMA_NUM_PARALLEL": "2",
        "OLLAMA_MAX_QUEUE": "16",
        "CORRAL_IDLE_TIMEOUT": "3600",
        "CORRAL_QUEUE_ACK_WAIT": "5",
    }
    stack = Stack(tmp_path, binary, settings).start()
    replies = ReplyRecorder(stack.nats_url)
    try:
        streams = [Background(stack.url, COUNTING) for _ in range(6)]
        until(lambda: sum(1 for s in streams if s.chunks) == 2, what="two answers streaming")
        until(lambda: queued(stack) == 4, what="four requests waiting")
        assert stack.nats is not None and stack.nats.process is not None
        port = stack.nats.port

        stack.nats.process.kill()
        stack.nats.process.wait(10)
        stack.nats.start(port=port)

        results = [stream.join() for stream in streams]
        reference = Background(stack.url, COUNTING).join()
        assert reference[-1]["done"] is True and reference[-1]["eval_count"] == 120
        for lines in results:
            end = lines[-1]
            assert end.get("done") is True or set(end) == {"error"}, end
            if end.get("done") is True:  # done means the whole answer arrived
                assert (answer(lines), end["eval_count"]) == (answer(reference), 120)
            else:
                assert end["error"].startswith(("reply stream interrupted", "worker w1 stopped")), end
        # Only the two streaming when the broker went down may have lost their answer.
        assert sum(1 for lines in results if lines[-1].get("done") is True) >= 4
        # An acknowledgement lost in the restart brings its request back after the ack wait; the
        # worker knows it took it, and it is acknowledged without running a second time.
        until(lambda: queued(stack) == 0, what="every request to leave the queue")
        assert max(replies.started(request_id) for request_id in replies.replies) == 1
    finally:
        replies.close()
        stack.stop()


def test_a_burst_of_five_times_the_queue_while_busy(tmp_path: Path, nats_binary: Path) -> None:
    bound = 4
    stack = Stack(tmp_path, nats_binary, {"OLLAMA_MAX_QUEUE": str(bound), "OLLAMA_NUM_PARALLEL": "1"}).start()
    try:
        busy = Background(stack.url, {**LONG, "options": {"num_predict": 1500, "temperature": 0}})
        until(lambda: len(busy.chunks) > 0, what="the slot to be busy")
        until(lambda: queued(stack) == 0, what="the running request to leave the queue")

        quick = {"model": MODEL, "prompt": "Hi", "options": {"num_predict": 4}}
        burst = [Background(stack.url, quick) for _ in range(5 * bound)]

        def refused() -> int:
            return sum(1 for request in burst if request.status == 503)

        def settled() -> bool:  # every request of the burst refused or waiting, or the slot freed
            return refused() + queued(stack) == len(burst) or busy.chunks[-1].get("done") is True

        until(settled, what="every request of the burst to be refused or to wait")
        assert busy.chunks[-1].get("done") is not True, "the slot freed during the burst: retry"
        assert (queued(stack), refused()) == (bound, 4 * bound)

        results = [request.join() for request in burst]
        rejected = [lines for request, lines in zip(burst, results, strict=True) if request.status == 503]
        accepted = [lines for request, lines in zip(burst, results, strict=True) if request.status == 200]
        assert all(lines == [{"error": BUSY_TEXT}] for lines in rejected)
        assert len(accepted) == bound and all(lines[-1]["done"] is True for lines in accepted)
        assert busy.join()[-1]["done"] is True
        assert queued(stack) == 0
    finally:
        stack.stop()
