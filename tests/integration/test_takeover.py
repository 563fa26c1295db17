"""Losing the scheduler, with real processes: a standby takes over from a killed leader and
nothing waiting is lost or runs twice; a request whose client left while no scheduler
listened never runs; a request a worker has already taken is not run again.

The ack wait is set far beyond the test's deadline, so these pass only because a new
leader restarts the consumer and gets every held request at once, never by redelivery.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from services.protocol import GenerationRequest, Options, ResolveRequest, ResolveResult, subjects
from tests.integration.test_queue import LONG, QUICK, Background, one_running_one_waiting, queued
from tests.stack import MODEL, Stack
from tests.watch import ReplyRecorder, until

SETTINGS = {"OLLAMA_MAX_QUEUE": "4", "OLLAMA_NUM_PARALLEL": "1", "CORRAL_QUEUE_ACK_WAIT": "3600"}


@pytest.fixture
def stack(tmp_path: Path, nats_binary: Path) -> Iterator[Stack]:
    running = Stack(tmp_path, nats_binary, SETTINGS).start()
    yield running
    running.stop()


@pytest.fixture
def replies(stack: Stack) -> Iterator[ReplyRecorder]:
    recorder = ReplyRecorder(stack.nats_url)
    yield recorder
    recorder.close()


async def _ask(stack: Stack, work: str, request_id: str = "") -> object:
    connection = await nats.connect(stack.nats_url)
    js = connection.jetstream()
    try:
        if work == "leader":
            kv = await js.key_value(subjects.LEADER_BUCKET)
            return (await kv.get(subjects.LEADER_KEY)).value
        if work == "last request":
            info = await js.stream_info(subjects.REQUEST_STREAM)
            message = await js.get_msg(subjects.REQUEST_STREAM, info.state.last_seq)
            return GenerationRequest.model_validate_json(message.data or b"").id
        if work == "cancel kept":
            await js.get_last_msg(subjects.CANCEL_STREAM, subjects.cancel_subject(request_id))
            return True
        raise AssertionError(work)
    except NotFoundError:
        return None
    finally:
        await connection.close()


def leader(stack: Stack) -> str | None:
    """The name of the stack's process that holds the scheduler lease (None: nobody)."""
    holder = asyncio.run(_ask(stack, "leader"))
    if not isinstance(holder, bytes):
        return None
    by_pid = {str(process.pid): name for name, process in stack.processes.items()}
    return by_pid.get(holder.decode().rsplit("-", 1)[-1])


def test_a_standby_takes_over_a_killed_leader_and_nothing_is_lost_or_run_twice(
    stack: Stack, replies: ReplyRecorder
) -> None:
    stack.start_service("standby", module="scheduler")
    assert leader(stack) == "scheduler"
    running, waiting = one_running_one_waiting(stack)

    stack.stop_service("scheduler", signal.SIGKILL)
    until(lambda: leader(stack) == "standby", what="the standby to take the lease")

    assert running.join()[-1]["done"] is True
    final = waiting.join()[-1]
    assert final["done"] is True and final["eval_count"] > 0
    until(lambda: queued(stack) == 0, what="the queue to empty")
    assert len(replies.replies) == 2
    assert {request_id: replies.started(request_id) for request_id in replies.replies} == dict.fromkeys(
        replies.replies, 1
    )


class RawClient:
    """An HTTP request on a socket of its own, to leave (close) whenever the test says."""

    def __init__(self, url: str, body: dict[str, object]) -> None:
        host, port = url.removeprefix("http://").split(":")
        data = json.dumps(body).encode()
        self._socket = socket.create_connection((host, int(port)))
        head = (
            f"POST /api/generate HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        self._socket.sendall(head.encode() + data)

    def leave(self) -> None:
        self._socket.close()


def test_a_request_whose_client_left_while_no_scheduler_listened_never_runs(
    stack: Stack, replies: ReplyRecorder
) -> None:
    running = Background(stack.url, LONG)
    until(lambda: len(running.chunks) > 0, what="first chunk")
    until(lambda: queued(stack) == 0, what="the running request to leave the queue")
    client = RawClient(stack.url, {**QUICK, "stream": True})
    until(lambda: queued(stack) == 1, what="the second request to wait")
    request_id = asyncio.run(_ask(stack, "last request"))
    assert isinstance(request_id, str)

    stack.stop_service("scheduler", signal.SIGKILL)
    client.leave()
    until(lambda: asyncio.run(_ask(stack, "cancel kept", request_id)) is True, what="the cancel to be kept")
    stack.start_service("scheduler")

    until(lambda: queued(stack) == 0, what="the new leader to settle what it inherited")
    assert running.join()[-1]["done"] is True
    # Requests are placed in arrival order: once a later one has run, the cancelled one never will.
    assert httpx.post(f"{stack.url}/api/generate", json=QUICK, timeout=120).status_code == 200
    assert replies.of(request_id) == []


async def _requeue(stack: Stack, request_id: str) -> None:
    """Put `request_id` back in the queue as the last leader left it: unacknowledged."""
    connection = await nats.connect(stack.nats_url)
    try:
        answer = await connection.request(
            subjects.REGISTRY_RESOLVE, ResolveRequest(name=MODEL).encode(), timeout=30
        )
        model = ResolveResult.model_validate_json(answer.data).model
        assert model is not None
        request = GenerationRequest(
            id=request_id,
            kind="generate",
            model=model,
            prompt="Hi",
            options=Options(num_predict=4),
            reply_subject=subjects.reply_subject(request_id),
        )
        js = connection.jetstream()
        await js.publish(
            subjects.request_subject("generate"), request.encode(), stream=subjects.REQUEST_STREAM
        )
    finally:
        await connection.close()


def test_a_request_a_worker_has_taken_is_not_run_again_by_the_next_leader(
    stack: Stack, replies: ReplyRecorder
) -> None:
    assert httpx.post(f"{stack.url}/api/generate", json=QUICK, timeout=120).status_code == 200
    [request_id] = replies.replies
    assert replies.started(request_id) == 1

    stack.stop_service("scheduler", signal.SIGKILL)
    asyncio.run(_requeue(stack, request_id))
    assert queued(stack) == 1
    stack.start_service("scheduler")

    until(lambda: queued(stack) == 0, what="the new leader to settle what it inherited")
    assert httpx.post(f"{stack.url}/api/generate", json=QUICK, timeout=120).status_code == 200
    assert replies.started(request_id) == 1
