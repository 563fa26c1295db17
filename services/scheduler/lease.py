"""Which scheduler leads: a lease in the NATS KV bucket CORRAL_SCHEDULER.

Only the leader reads the request stream and places requests; any number of standby
schedulers keep their fleet view from heartbeats and try to take the lease every `ttl / 3`
seconds. The leader renews it as often, each renewal conditional on the revision it
holds, so a standby that took the lease can never be overwritten.

The bucket's entries live `ttl` seconds (its max age): a leader that dies loses the lease
at most `ttl` after its last renewal, and a standby takes over then. A leader that cannot
renew (the broker is away, its loop was stalled) steps down by its own clock at `ttl` after
it *sent* its last successful renewal, which is before the entry can expire on the server:
there is never a second writer.

The bucket keeps CORRAL_STREAM_REPLICAS copies, so a NATS cluster that loses a server keeps
the lease; a bucket that exists with other replicas is changed, as the streams are
(`stream.conform`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.protocol import subjects
from services.scheduler.stream import conform

LEASE_TTL = 3.0  # seconds a lease lasts unrenewed: a standby leads at most this long after a crash

# What a renewal or a take can fail with besides losing the race: the broker is away or slow.
_UNREACHABLE = (nats.errors.Error, TimeoutError, OSError)
_STREAM = f"KV_{subjects.LEADER_BUCKET}"  # the stream under the bucket


class LeaseLost(Exception):
    """The lease was taken by another scheduler, or could not be renewed in time."""


class Lease:
    def __init__(
        self,
        jetstream: Callable[[], JetStreamContext],
        holder: str,
        ttl: float = LEASE_TTL,
        clock: Callable[[], float] = time.monotonic,
        replicas: int = 1,
    ) -> None:
        self._jetstream = jetstream  # called once connected: the broker's JetStream context
        self._holder = holder.encode()
        self._ttl = ttl
        self._clock = clock
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._revision = 0  # of the entry this holder wrote last; 0 while not leading
        self._valid_until = 0.0  # by our clock: the lease is ours until then unless renewed
        self._closed = False  # after close(): never taken again

    @property
    def held(self) -> bool:
        return self._revision > 0 and self._clock() < self._valid_until

    async def acquire(self) -> None:
        """Wait until this scheduler holds the lease (for ever once closed)."""
        while True:
            if self._closed:
                await asyncio.Event().wait()
            sent = self._clock()
            try:
                kv = await self._bucket()
                self._revision = await kv.create(subjects.LEADER_KEY, self._holder)
                self._valid_until = sent + self._ttl
                return
            except (KeyWrongLastSequenceError, *_UNREACHABLE):
                pass  # another leads, or the broker is away: try again
            await asyncio.sleep(self._ttl / 3)

    async def hold(self) -> None:
        """Renew the lease every `ttl / 3` seconds while leading; raise LeaseLost when it is gone."""
        while True:
            await asyncio.sleep(self._ttl / 3)
            sent = self._clock()
            left = self._valid_until - sent
            if left <= 0 or self._closed:
                break
            try:
                kv = await self._bucket()
                renewal = kv.update(subjects.LEADER_KEY, self._holder, last=self._revision)
                self._revision = await asyncio.wait_for(renewal, timeout=left)
                self._valid_until = sent + self._ttl
            except KeyWrongLastSequenceError as exc:
                self._revision = 0
                raise LeaseLost("another scheduler holds the lease") from exc
            except _UNREACHABLE:
                continue  # try again while the lease lasts
        self._revision = 0
        raise LeaseLost(f"the lease could not be renewed within {self._ttl:g} s")

    async def close(self) -> None:
        """Give the lease up for good (a clean stop)."""
        self._closed = True
        await self.release()

    async def release(self) -> None:
        """Give the lease up now, so a standby need not wait for it to expire."""
        revision, self._revision = self._revision, 0
        if revision and self._kv is not None:
            with contextlib.suppress(*_UNREACHABLE):
                await self._kv.delete(subjects.LEADER_KEY, last=revision)

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            js = self._jetstream()
            try:
                kv = await js.key_value(subjects.LEADER_BUCKET)
                await conform(js, await js.stream_info(_STREAM), num_replicas=self._replicas)
            except BucketNotFoundError:
                config = KeyValueConfig(
                    bucket=subjects.LEADER_BUCKET,
                    history=1,
                    ttl=self._ttl,
                    storage=StorageType.FILE,
                    replicas=self._replicas,
                )
                try:
                    kv = await js.create_key_value(config)
                except BadRequestError:  # another scheduler created it a moment ago
                    kv = await js.key_value(subjects.LEADER_BUCKET)
            self._kv = kv
        return self._kv
