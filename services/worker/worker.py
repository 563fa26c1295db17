"""The worker's state and commands: residency, keep_alive timers, runs, cancels, heartbeats.

Owned by the event loop alone. A run takes a slot of a resident instance, turns the
request into an engine job (prompt rules in `prompt`, the answer's text in
`generation`) and sends the replies through one ordered outbox. Every state change
bumps `seq` and sends a heartbeat at once, so the scheduler sees a freed slot
without waiting for the next periodic beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cachetools import FIFOCache

from services.config import Settings
from services.protocol import (
    CommandResult,
    Done,
    Embeddings,
    Failed,
    GenerationRequest,
    LoadCommand,
    ModelRef,
    RunCommand,
    Started,
    UnloadCommand,
    WorkerState,
)
from services.protocol.messages import Message, ModelFormat
from services.telemetry import log_event
from services.worker import measure
from services.worker.engines.base import Engine, EngineError, InvalidJob, Job, LoadedModel, LoadSpec, Step
from services.worker.generation import Generation, max_tokens, sampling_for
from services.worker.handoff import Outbox, StepInbox
from services.worker.prompt import INPUT_TOO_LONG, PromptError, build_prompt, render
from services.worker.residency import Instance, Residency
from services.worker.stops import StopMatcher

log = logging.getLogger("corral.worker")
TAKEN_REMEMBERED = 100_000  # request ids a worker remembers having run, so none runs twice


@dataclass
class Running:
    """A request holding a slot: its reply subject, and its generation once submitted."""

    request: GenerationRequest
    instance: Instance
    cancelled: bool = False
    generation: Generation | None = None
    engine_done: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Worker:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        publish: Callable[[str, bytes], Awaitable[None]],
        heartbeat_subject: str,
        clock: Callable[[], float] = time.time,
        formats: Sequence[ModelFormat] = ("gguf",),
    ) -> None:
        """`formats`: the model formats `engine` runs, which the heartbeat reports."""
        self._settings = settings
        self._engine = engine
        self._formats = list(formats)
        self._clock = clock
        self._heartbeat_subject = heartbeat_subject
        self._residency = Residency(clock)
        self._outbox = Outbox(publish)
        self._inbox: StepInbox | None = None
        self._running: dict[str, Running] = {}
        self._taken: FIFOCache[str, None] = FIFOCache(maxsize=TAKEN_REMEMBERED)  # the oldest forgotten
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
            formats=self._formats,
        )

    def _touch(self) -> None:
        self._seq += 1
        self._changed.set()

    def _send(self, subject: str, message: Message) -> None:
        self._outbox.send(subject, message)

    # ---- commands

    async def load(self, command: LoadCommand) -> CommandResult:
        if (held := self._residency.get(command.id)) is not None:  # asked again (a new scheduler)
            same = held.model.digest == command.model.digest and held.num_ctx == command.num_ctx
            error = None if same else f"instance {command.id} holds another model"
            return CommandResult(ok=same, error=error, state=self.state())
        found = model_paths(self._settings.models, command.model)
        if found is None:
            log_event(log, "load_refused", level=logging.ERROR, model=command.model.name)
            return CommandResult(ok=False, error="model weights outside OLLAMA_MODELS", state=self.state())
        weights, files = found
        keep_alive = self._settings.keep_alive if command.keep_alive is None else command.keep_alive
        instance = self._residency.begin_load(
            command.id, command.model, command.num_ctx, command.slots, keep_alive, command.request_id
        )
        self._touch()
        spec = LoadSpec(
            path=weights,
            num_ctx=command.num_ctx,
            slots=command.slots,
            flash_attention=self._settings.flash_attention,
            kv_cache_type=self._settings.kv_cache_type,
            split=command.split,
            layers=command.model.shape.block_count if command.model.shape else None,
            format=command.model.format,  # the engine is chosen by it (engines/formats.py)
            files=files,
        )
        log_event(
            log,
            "loading",
            model=command.model.name,
            instance=command.id,
            num_ctx=command.num_ctx,
            slots=command.slots,
            split=command.split,
        )
        started = time.perf_counter()
        try:
            loaded = await asyncio.to_thread(self._engine.load, spec, self._steps().put)
        except EngineError as exc:
            self._residency.forget(instance)
            self._touch()
            log_event(log, "load_failed", level=logging.ERROR, model=command.model.name, error=exc)
            measure.loads.add(1, self._about(command.model.name) | {"corral.load.result": "failed"})
            return CommandResult(ok=False, error=str(exc), state=self.state())
        self._residency.finish_load(instance, loaded)
        self._touch()
        seconds = time.perf_counter() - started
        log_event(log, "loaded", model=command.model.name, seconds=round(seconds, 3))
        measure.loads.add(1, self._about(command.model.name) | {"corral.load.result": "loaded"})
        measure.load_duration.record(seconds, self._about(command.model.name))
        return CommandResult(ok=True, state=self.state())

    async def unload(self, command: UnloadCommand) -> CommandResult:
        for instance in self._residency.unload_when_idle(command.digest, command.instance):
            self._close(instance, "unload")
        self._touch()
        return CommandResult(ok=True, state=self.state())

    async def run(self, command: RunCommand) -> CommandResult:
        request = command.request
        if request.id in self._taken:  # sent again (a scheduler took over): it runs once
            log_event(log, "run_again_refused", request=request.id)
            return CommandResult(ok=True, state=self.state())
        if command.instance:
            instance = self._residency.get(command.instance)
            if instance is not None and instance.model.digest != request.model.digest:
                instance = None  # a name this worker gave another model: never run it there
        else:  # an older scheduler names no instance
            instance = self._residency.find(request.model.digest, command.num_ctx)
        if instance is None or not self._residency.acquire(instance, request.id, request.keep_alive):
            return CommandResult(ok=False, error="no free slot", state=self.state())
        self._taken[request.id] = None
        running = Running(request, instance)
        self._running[request.id] = running
        self._touch()
        task = asyncio.create_task(self._serve(running))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return CommandResult(ok=True, state=self.state())

    async def running(self, request_id: str) -> bool:
        """Whether `request_id` is running here. When it is not, every reply already queued is
        handed to NATS first, so the asker gets the request's last messages before this answer."""
        if request_id in self._running:
            return True
        await self._outbox.flush()
        return False

    def taken(self, request_ids: list[str]) -> list[str]:
        """Which of `request_ids` this worker has run or runs (a new scheduler asks)."""
        return [request_id for request_id in request_ids if request_id in self._taken]

    def cancel(self, request_id: str) -> None:
        self._residency.cancelled(request_id)
        running = self._running.get(request_id)
        if running is None or running.cancelled:
            return
        running.cancelled = True
        log_event(log, "cancel_requested", request=request_id)
        loaded = running.instance.loaded
        if running.generation is not None and loaded is not None:
            loaded.cancel(request_id)

    # ---- serving one request

    async def _serve(self, running: Running) -> None:
        request, instance = running.request, running.instance
        reply = request.reply_subject
        try:
            self._send(reply, Started(worker_id=self.id))
            if request.action == "load" or running.cancelled:
                self._send(reply, Done(done_reason="load" if request.action == "load" else "cancel"))
                return
            loaded = instance.loaded
            assert loaded is not None
            if request.kind == "embed":
                await self._embed(request, loaded, instance.num_ctx)
                return
            if request.action == "render":
                text = (await asyncio.to_thread(render, request, loaded, instance.num_ctx)).text
                self._send(reply, Done(done_reason="render", rendered=text))
                return
            done = await self._generate(running, loaded)
            self._send(reply, done)
            self._count_tokens(request.model.name, done.prompt_eval_count, done.eval_count)
            log_event(
                log,
                "done",
                request=request.id,
                model=request.model.name,
                reason=done.done_reason,
                eval_count=done.eval_count,
            )
        except PromptError as exc:
            self._send(reply, Failed(error=str(exc), code=exc.code))
        except InvalidJob as exc:
            self._send(reply, Failed(error=str(exc), code="invalid"))
        except EngineError as exc:
            self._send(reply, Failed(error=str(exc), code="internal"))
            log_event(log, "failed", level=logging.ERROR, request=request.id, error=exc)
        finally:
            self._running.pop(request.id, None)
            self._residency.release(instance, request.id)
            self._touch()

    async def _generate(self, running: Running, loaded: LoadedModel) -> Done:
        request = running.request
        options = request.options_for(request.model.parameters)
        num_ctx = running.instance.num_ctx
        num_keep = options.num_keep if options.num_keep is not None else 4
        # Tokenizing a long document (or building 100,000 stops) takes seconds: on a thread, so the
        # event loop keeps the heartbeats going meanwhile.
        prompt = await asyncio.to_thread(build_prompt, request, loaded, num_ctx, num_keep)
        stops = await asyncio.to_thread(StopMatcher, options.stop or [])
        if running.cancelled:  # while it was being prepared: nothing was submitted
            return Done(done_reason="cancel")
        limit, may_shift = max_tokens(options.num_predict or -1, num_ctx, len(prompt.tokens))
        top = request.top_logprobs if request.logprobs or request.top_logprobs else None
        job = Job(
            id=request.id,
            prompt=prompt.tokens,
            sampling=sampling_for(options, request.format, top),
            max_tokens=limit,
            num_keep=num_keep,
            shift=request.shift and may_shift,
        )
        running.generation = Generation(
            job=job,
            submitted_ns=time.perf_counter_ns(),
            detokenizer=loaded,
            parser=prompt.parser,
            stops=stops,
            keep_context=request.kind == "generate" and not request.raw,
        )
        loaded.submit(job)
        await running.finished.wait()
        if running.generation.error is not None:
            raise EngineError(running.generation.error)
        return running.generation.done()

    async def _embed(self, request: GenerationRequest, loaded: LoadedModel, num_ctx: int) -> None:
        inputs = await asyncio.to_thread(_embedding_inputs, request, loaded, num_ctx)
        vectors = await asyncio.to_thread(loaded.embed, inputs) if inputs else []
        count = sum(len(tokens) for tokens in inputs)
        self._send(request.reply_subject, Embeddings(embeddings=vectors, prompt_eval_count=count))
        self._count_tokens(request.model.name, count, 0)

    def _about(self, model: str) -> dict[str, str]:
        """The attributes of a metric about `model` on this worker."""
        return {measure.WORKER: self.id, measure.MODEL: model}

    def _count_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        measure.tokens.add(input_tokens, self._about(model) | {measure.TOKEN_TYPE: "input"})
        measure.tokens.add(output_tokens, self._about(model) | {measure.TOKEN_TYPE: "output"})

    def _steps(self) -> StepInbox:
        if self._inbox is None:
            self._inbox = StepInbox(asyncio.get_running_loop(), self._on_steps)
        return self._inbox

    def _on_steps(self, steps: list[Step]) -> None:
        """Engine steps, on the event loop: feed each request's generation, send what it made."""
        touched: dict[str, Running] = {}
        for step in steps:
            running = self._running.get(step.job_id)
            if running is None or running.generation is None:
                continue
            running.generation.take(step)
            running.engine_done = running.engine_done or step.finish is not None
            touched[step.job_id] = running
        for running in touched.values():
            generation = running.generation
            assert generation is not None
            chunk = generation.chunk()
            if chunk is not None:
                self._send(running.request.reply_subject, chunk)
            if generation.finished and not running.finished.is_set():
                if not running.engine_done:  # a stop string: the engine is still generating
                    loaded = running.instance.loaded
                    if loaded is not None:
                        loaded.cancel(running.request.id)
                running.finished.set()

    # ---- lifetime

    def _close(self, instance: Instance, why: str) -> None:
        self._residency.forget(instance)
        if instance.loaded is not None:
            instance.loaded.close()
        log_event(log, "unloaded", model=instance.model.name, instance=instance.id, reason=why)
        measure.unloads.add(1, self._about(instance.model.name) | {"corral.unload.reason": why})

    async def heartbeat_loop(self) -> None:
        """Send replies; beat on every change and at least every interval; unload what expired."""
        sender = asyncio.create_task(self._outbox.run())
        interval = self._settings.heartbeat_interval
        try:
            while True:
                for instance in self._residency.expired():
                    self._close(instance, "keep_alive expired")
                    self._seq += 1
                self._send(self._heartbeat_subject, self.state())
                self._changed.clear()
                timeout = interval
                if (deadline := self._residency.next_expiry()) is not None:
                    timeout = max(0.0, min(interval, deadline - self._clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
        finally:
            sender.cancel()

    async def stop(self) -> None:
        for request_id in list(self._running):
            self.cancel(request_id)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for instance in self._residency.instances():
            if instance.loaded is not None:
                self._close(instance, "shutdown")
        self._send(self._heartbeat_subject, self.state())
        await self._outbox.flush()


def model_paths(models: Path, model: ModelRef) -> tuple[Path, dict[str, Path]] | None:
    """Where `model` is in the store: its GGUF weights, or a multi-file model's config.json and
    every file by its name. None when any of them leads out of OLLAMA_MODELS."""
    if not model.files:
        weights = weights_path(models, model.digest)
        return None if weights is None else (weights, {})
    files: dict[str, Path] = {}
    for file in model.files:
        path = weights_path(models, file.digest)
        if path is None:
            return None
        files[file.name] = path
    return files.get("config.json", next(iter(files.values()))), files


def weights_path(models: Path, digest: str) -> Path | None:
    """The blob file of `digest` under `models`, or None when it leads elsewhere (a symlink
    out of the store): the worker opens nothing outside OLLAMA_MODELS."""
    root = models.resolve()
    path = (root / "blobs" / digest.replace(":", "-")).resolve()
    return path if path.is_relative_to(root) else None


def _embedding_inputs(request: GenerationRequest, loaded: LoadedModel, num_ctx: int) -> list[list[int]]:
    """Each input's tokens, cut to the context (or refused, with `truncate` false)."""
    inputs = []
    for text in request.input:
        tokens = loaded.tokenize(text, add_special=True)
        if len(tokens) > num_ctx and not request.truncate:
            raise PromptError(INPUT_TOO_LONG)
        inputs.append(tokens[:num_ctx])
    return inputs
