"""The worker's NATS shell: load / unload / run on command, stream chunks, keep timers.

Generation runs in a thread per slot; text comes back to the event loop through
an asyncio queue and goes straight to the request's reply subject. Every state
change bumps `seq` and sends a heartbeat at once, so the scheduler sees a freed
slot without waiting for the next periodic beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from faststream.nats import NatsBroker, NatsMessage

from services.config import Settings
from services.protocol import (
    Chunk,
    CommandResult,
    Done,
    Failed,
    GenerationRequest,
    LoadCommand,
    RunCommand,
    Started,
    UnloadCommand,
    WorkerState,
    subjects,
)
from services.telemetry import log_event
from services.worker.chat_template import TemplateRenderError
from services.worker.engines.base import Engine, EngineError, GenerationStats, LoadSpec
from services.worker.residency import Instance, Residency

log = logging.getLogger("corral.worker")
_END = object()


def select_engine(settings: Settings) -> Engine:
    """The engine this worker runs; imported lazily so CPU hosts never import CUDA code."""
    if settings.engine in ("auto", "llamacpp"):
        from services.worker.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine()
    raise SystemExit(f"corral-worker: CORRAL_ENGINE={settings.engine} is not available in this build")


class Worker:
    def __init__(
        self,
        broker: NatsBroker,
        settings: Settings,
        engine: Engine,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._broker = broker
        self._settings = settings
        self._engine = engine
        self._clock = clock
        self._residency = Residency(clock)
        self._cancels: dict[str, threading.Event] = {}
        self._seq = 0
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def id(self) -> str:
        return self._settings.worker_id

    def state(self) -> WorkerState:
        return WorkerState(
            worker_id=self.id,
            seq=self._seq,
            engine=self._engine.name,
            devices=self._engine.devices(),
            resident=[i.describe() for i in self._residency.instances()],
        )

    def _touch(self) -> None:
        self._seq += 1
        self._changed.set()

    async def run(self, command: RunCommand) -> CommandResult:
        request = command.request
        instance = self._residency.get(request.model.digest, command.num_ctx)
        if instance is None or not self._residency.acquire(instance, request.id, request.keep_alive):
            return CommandResult(ok=False, error="no free slot", state=self.state())
        self._cancels[request.id] = threading.Event()
        self._touch()
        task = asyncio.create_task(self._serve(instance, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return CommandResult(ok=True, state=self.state())

    async def load(self, command: LoadCommand) -> CommandResult:
        if self._residency.get(command.model.digest, command.num_ctx) is not None:
            return CommandResult(ok=True, state=self.state())
        keep_alive = self._settings.keep_alive if command.keep_alive is None else command.keep_alive
        slots = command.slots
        instance = self._residency.begin_load(command.model, command.num_ctx, slots, keep_alive)
        self._touch()
        spec = LoadSpec(
            path=self._settings.models / "blobs" / command.model.digest.replace(":", "-"),
            num_ctx=command.num_ctx,
            slots=slots,
            flash_attention=self._settings.flash_attention,
            kv_cache_type=self._settings.kv_cache_type,
        )
        log_event(log, "loading", model=command.model.name, num_ctx=command.num_ctx, slots=slots)
        started = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(self._engine.load, spec)
        except EngineError as exc:
            self._residency.forget(instance)
            self._touch()
            log_event(log, "load_failed", level=logging.ERROR, model=command.model.name, error=exc)
            return CommandResult(ok=False, error=str(exc), state=self.state())
        self._residency.finish_load(instance, loaded)
        self._touch()
        log_event(log, "loaded", model=command.model.name, seconds=round(time.perf_counter() - started, 3))
        return CommandResult(ok=True, state=self.state())

    async def unload(self, command: UnloadCommand) -> CommandResult:
        for instance in self._residency.unload_when_idle(command.digest):
            self._close(instance, "unload")
        self._touch()
        return CommandResult(ok=True, state=self.state())

    def cancel(self, request_id: str) -> None:
        event = self._cancels.get(request_id)
        if event is not None:
            event.set()
            log_event(log, "cancel_requested", request=request_id)

    async def _serve(self, instance: Instance, request: GenerationRequest) -> None:
        reply = request.reply_subject
        cancelled = self._cancels[request.id]
        try:
            await self._broker.publish(Started(), reply)
            if request.action == "load":
                await self._broker.publish(Done(done_reason="load"), reply)
                return
            assert instance.loaded is not None
            prompt = instance.loaded.prompt_for(request)
            done = await self._stream(instance, request, prompt, cancelled)
            await self._broker.publish(done, reply)  # also after a cancel: it says how far it got
            log_event(
                log,
                "done",
                request=request.id,
                model=request.model.name,
                reason=done.done_reason,
                eval_count=done.eval_count,
            )
        except (EngineError, TemplateRenderError) as exc:
            await self._broker.publish(Failed(error=str(exc), status=500), reply)
            log_event(log, "failed", level=logging.ERROR, request=request.id, error=exc)
        finally:
            self._cancels.pop(request.id, None)
            self._residency.release(instance, request.id)
            self._touch()

    async def _stream(
        self, instance: Instance, request: GenerationRequest, prompt: str, cancelled: threading.Event
    ) -> Done:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        assert instance.loaded is not None
        model = instance.loaded
        options = request.options.model_copy(update={"num_ctx": instance.num_ctx})

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        def work() -> GenerationStats:
            try:
                return model.generate(prompt, options, emit, cancelled.is_set)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, _END)

        generation = asyncio.ensure_future(asyncio.to_thread(work))
        connection = self._broker.connection
        seq = 0
        while (piece := await pieces.get()) is not _END:
            if seq == 0:
                log_event(log, "first_token", request=request.id, model=request.model.name)
            await connection.publish(request.reply_subject, Chunk(text=str(piece)).encode())
            seq += 1
        stats = await generation
        return Done(
            done_reason=stats.done_reason,
            prompt_eval_count=stats.prompt_eval_count,
            prompt_eval_duration=stats.prompt_eval_duration,
            eval_count=stats.eval_count,
            eval_duration=stats.eval_duration,
        )

    def _close(self, instance: Instance, why: str) -> None:
        self._residency.forget(instance)
        if instance.loaded is not None:
            instance.loaded.close()
        log_event(log, "unloaded", model=instance.model.name, reason=why)

    async def heartbeat_loop(self) -> None:
        """Beat on every change and at least every interval; unload what has expired."""
        interval = self._settings.heartbeat_interval
        while True:
            for instance in self._residency.expired():
                self._close(instance, "keep_alive expired")
                self._seq += 1
            await self._broker.publish(self.state(), subjects.HEARTBEAT)
            self._changed.clear()
            timeout = interval
            if (deadline := self._residency.next_expiry()) is not None:
                timeout = max(0.0, min(interval, deadline - self._clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    async def stop(self) -> None:
        for event in self._cancels.values():
            event.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for instance in self._residency.instances():
            if instance.loaded is not None:
                self._close(instance, "shutdown")
        await self._broker.publish(self.state(), subjects.HEARTBEAT)


def register(broker: NatsBroker, settings: Settings) -> Worker:
    worker = Worker(broker, settings, select_engine(settings))

    @broker.subscriber(subjects.worker_run(worker.id))
    async def on_run(command: RunCommand) -> CommandResult:
        return await worker.run(command)

    @broker.subscriber(subjects.worker_load(worker.id))
    async def on_load(command: LoadCommand) -> CommandResult:
        return await worker.load(command)

    @broker.subscriber(subjects.worker_unload(worker.id))
    async def on_unload(command: UnloadCommand) -> CommandResult:
        return await worker.unload(command)

    @broker.subscriber(subjects.CANCEL_ALL)
    async def on_cancel(message: NatsMessage) -> None:
        worker.cancel(subjects.request_id_of(message.raw_message.subject))

    return worker
