"""Every NATS subject and stream name corral uses: the one table of the wire's addresses.

| subject / stream                         | kind                          | from → to                   |
|------------------------------------------|-------------------------------|-----------------------------|
| stream CORRAL_REQ, `corral.req.>`        | JetStream work queue, bounded | gateway → scheduler         |
| `corral.worker.<id>.run/.load/.unload`   | request/reply                 | scheduler → worker          |
| `corral.worker.<id>.cancel`              | core pub/sub                  | gateway/scheduler → worker  |
| `corral.worker.<id>.ping`                | request/reply                 | gateway → worker            |
| `corral.worker.<id>.taken`               | request/reply                 | scheduler → worker          |
| `corral.worker.heartbeat`                | core pub/sub                  | worker → scheduler, gateway |
| `corral.reply.<request-id>`              | core, many messages           | worker/scheduler → gateway  |
| `corral.cancel.<request-id>`             | core pub/sub                  | gateway → scheduler         |
| stream CORRAL_CANCEL, `corral.cancel.*`  | JetStream, last per request   | (kept for a new leader)     |
| KV bucket CORRAL_SCHEDULER, key `leader` | JetStream KV, entries expire  | scheduler ↔ scheduler       |
| `corral.registry.resolve/.list/.show`    | request/reply                 | gateway → registry          |
| `corral.registry.copy/.delete/.create`   | request/reply                 | gateway → registry          |
| `corral.registry.blob.head/.open`        | request/reply                 | gateway → registry          |
| `corral.upload.<registry>.<upload>`      | request/reply, raw bytes      | gateway → one registry      |
| `corral.registry.pull/.push`             | core; Progress to reply subj. | gateway → registry          |
| `corral.registry.resumed.<job>`          | core, Progress; no listener   | registry → (anyone)         |
| `corral.metrics.scrape`                  | core, one answer per process  | gateway → every service     |
| `corral.scheduler.queue`                 | request/reply                 | gateway → scheduler         |
"""

from __future__ import annotations

REQUEST_STREAM = "CORRAL_REQ"
REQUEST_SUBJECTS = "corral.req.>"
SCHEDULER_DURABLE = "scheduler"

HEARTBEAT = "corral.worker.heartbeat"
CANCEL_ALL = "corral.cancel.*"
# Every cancel is kept a while (the last per request), so a scheduler that takes over the
# queue can tell which of the requests it inherits were cancelled while no scheduler listened.
CANCEL_STREAM = "CORRAL_CANCEL"
# The scheduler lease: the key's value names the leader; entries expire (the bucket's TTL).
LEADER_BUCKET = "CORRAL_SCHEDULER"
LEADER_KEY = "leader"
REGISTRY_RESOLVE = "corral.registry.resolve"
REGISTRY_LIST = "corral.registry.list"
REGISTRY_SHOW = "corral.registry.show"
REGISTRY_COPY = "corral.registry.copy"
REGISTRY_DELETE = "corral.registry.delete"
REGISTRY_CREATE = "corral.registry.create"
REGISTRY_PULL = "corral.registry.pull"
REGISTRY_PUSH = "corral.registry.push"
REGISTRY_BLOB_HEAD = "corral.registry.blob.head"
REGISTRY_BLOB_OPEN = "corral.registry.blob.open"
# Every process answers with a MetricsSnapshot to the scrape's reply subject; the gateway's
# /metrics gathers them.
METRICS_SCRAPE = "corral.metrics.scrape"
SCHEDULER_QUEUE = "corral.scheduler.queue"
# An upload's chunks: raw bytes, each with its offset (decimal bytes) in UPLOAD_OFFSET; the last,
# empty, message carries UPLOAD_END. Every chunk is answered with a RegistryResult. A sender that
# gives up publishes an empty message with UPLOAD_ABORT (no answer).
UPLOAD_OFFSET = "Corral-Offset"
UPLOAD_END = "Corral-End"
UPLOAD_ABORT = "Corral-Abort"


def uploads_of(registry_id: str) -> str:
    """Wildcard subject of every upload registry instance `registry_id` holds open."""
    return f"corral.upload.{registry_id}.*"


def upload_subject(registry_id: str, upload_id: str) -> str:
    return f"corral.upload.{registry_id}.{upload_id}"


def resumed_subject(job_id: str) -> str:
    """Where a pull the registry resumed on its own reports (no client listens)."""
    return f"corral.registry.resumed.{job_id}"


def request_subject(kind: str) -> str:
    """Subject a generation request of `kind` (generate, chat) is published on."""
    return f"corral.req.{kind}"


def worker_run(worker_id: str) -> str:
    return f"corral.worker.{worker_id}.run"


def worker_load(worker_id: str) -> str:
    return f"corral.worker.{worker_id}.load"


def worker_unload(worker_id: str) -> str:
    return f"corral.worker.{worker_id}.unload"


def worker_cancel(worker_id: str) -> str:
    """A cancel for the one worker that holds the request (a CancelCommand)."""
    return f"corral.worker.{worker_id}.cancel"


def worker_ping(worker_id: str) -> str:
    """Asked by a gateway whose stream fell silent: no responders means the worker is gone."""
    return f"corral.worker.{worker_id}.ping"


def worker_taken(worker_id: str) -> str:
    """Asked by a scheduler that takes over: which of these requests have you taken?"""
    return f"corral.worker.{worker_id}.taken"


def reply_subject(request_id: str) -> str:
    return f"corral.reply.{request_id}"


def cancel_subject(request_id: str) -> str:
    return f"corral.cancel.{request_id}"


def request_id_of(subject: str) -> str:
    """The request id at the end of a `corral.reply.<id>` or `corral.cancel.<id>` subject."""
    return subject.rsplit(".", 1)[-1]
