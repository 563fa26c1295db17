"""Every NATS subject and stream name herd uses: the one table of the wire's addresses.

| subject / stream                       | kind                          | from → to                 |
|----------------------------------------|-------------------------------|---------------------------|
| stream HERD_REQ, `herd.req.>`          | JetStream work queue, bounded | gateway → scheduler       |
| `herd.worker.<id>.run/.load/.unload`   | request/reply                 | scheduler → worker        |
| `herd.worker.heartbeat`                | core pub/sub                  | worker → scheduler, gateway |
| `herd.reply.<request-id>`              | core, many messages           | worker/scheduler → gateway |
| `herd.cancel.<request-id>`             | core pub/sub                  | gateway → scheduler, worker |
| `herd.registry.resolve/.list`          | request/reply                 | gateway, worker → registry |
"""

from __future__ import annotations

REQUEST_STREAM = "HERD_REQ"
REQUEST_SUBJECTS = "herd.req.>"
SCHEDULER_DURABLE = "scheduler"

HEARTBEAT = "herd.worker.heartbeat"
CANCEL_ALL = "herd.cancel.*"
REGISTRY_RESOLVE = "herd.registry.resolve"
REGISTRY_LIST = "herd.registry.list"


def request_subject(kind: str) -> str:
    """Subject a generation request of `kind` (generate, chat) is published on."""
    return f"herd.req.{kind}"


def worker_run(worker_id: str) -> str:
    return f"herd.worker.{worker_id}.run"


def worker_load(worker_id: str) -> str:
    return f"herd.worker.{worker_id}.load"


def worker_unload(worker_id: str) -> str:
    return f"herd.worker.{worker_id}.unload"


def reply_subject(request_id: str) -> str:
    return f"herd.reply.{request_id}"


def cancel_subject(request_id: str) -> str:
    return f"herd.cancel.{request_id}"


def request_id_of(subject: str) -> str:
    """The request id at the end of a `herd.reply.<id>` or `herd.cancel.<id>` subject."""
    return subject.rsplit(".", 1)[-1]
