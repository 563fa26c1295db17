"""One loaded GGUF model: its llama.cpp context of `slots` sequences and the jobs running in it.

Everything but the job inbox belongs to the engine loop's thread (`step`). Each
sequence keeps its tokens in the KV cache after its job ends, so a later prompt
with the same beginning (a chat's history, a system prompt) reuses them.
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import llama_cpp as L
import numpy as np
import numpy.typing as npt

from services.worker.engines import llamacpp_vocab as vocab
from services.worker.engines.base import (
    EngineError,
    FinishReason,
    InvalidJob,
    Job,
    OnSteps,
    Sampling,
    Step,
    TokenLogprob,
)
from services.worker.engines.batching import (
    pick_sequence,
    plan_chunks,
    shift_discard,
    token_logprob,
)

if TYPE_CHECKING:
    from services.worker.engines.llamacpp import EngineLoop


@dataclass
class _Sequence:
    """One llama.cpp sequence and the job, if any, that owns it."""

    id: int
    cached: list[int] = field(default_factory=list)  # tokens in the KV cache, positions 0..n-1
    job: Job | None = None
    grammar: str | None = None
    pending: list[int] = field(default_factory=list)  # to evaluate: prompt tail or last sample
    sampler: Any = None  # a `struct llama_sampler *`
    generated: int = 0
    prompt_cached: int | None = None  # reported on the job's first step, then None
    admitted: int = 0  # admission order: older prefills go first


class LlamaCppModel:
    def __init__(
        self,
        model: Any,
        context: Any,
        loop: EngineLoop,
        on_steps: OnSteps,
        *,
        num_ctx: int,
        placement: dict[str, int],
    ) -> None:
        self.placement = placement  # bytes on each device, as the scheduler's split planned them
        self.size = sum(placement.values())
        self.size_vram = sum(size for device, size in placement.items() if device != "cpu")
        self.n_ctx = num_ctx  # llama.cpp pads sequences; each stops where Ollama's would
        self._model, self._ctx, self._loop, self._on_steps = model, context, loop, on_steps
        self._vocab = L.llama_model_get_vocab(model)
        self._memory = L.llama_get_memory(context)
        self._n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._n_batch = L.llama_n_batch(context)
        self._batch = L.llama_batch_init(self._n_batch, 0, 1)
        self._sequences = [_Sequence(id=i) for i in range(L.llama_n_seq_max(context))]
        self._threads = 0
        self._waiting: deque[tuple[Job, str | None]] = deque()
        self._admissions = 0
        self._embedder: Any = None  # a second context, made on the first embedding request
        self.metadata = vocab.read_metadata(model)
        # Guarded by the loop's lock; everything else belongs to the loop thread.
        self._inbox: list[tuple[Job, str | None]] = []
        self._cancels: set[str] = set()
        self._closed = False

    # ---- tokenizer: llama.cpp's vocabulary is read-only, so any thread may use it

    def tokenize(self, text: str, *, add_special: bool) -> list[int]:
        return vocab.tokenize(self._vocab, text, add_special=add_special)

    def token_bytes(self, token: int) -> bytes:
        return vocab.token_bytes(self._vocab, token)

    def special_text(self, token: int) -> str:
        return vocab.token_bytes(self._vocab, token, special=True).decode("utf-8", errors="replace")

    # ---- the job interface (any thread)

    def submit(self, job: Job) -> None:
        grammar = vocab.grammar_for(job.sampling.format)  # raises InvalidJob before queueing
        if not job.prompt:
            raise InvalidJob("empty prompt")
        if len(job.prompt) > self.n_ctx:
            raise InvalidJob("the input length exceeds the context length")
        with self._loop.lock:
            if self._closed:
                raise EngineError("the model was unloaded")
            self._inbox.append((job, grammar))
            self._loop.lock.notify()

    def cancel(self, job_id: str) -> None:
        with self._loop.lock:
            self._cancels.add(job_id)
            self._loop.lock.notify()

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        return self._loop.call(lambda: [self._embed_one(tokens) for tokens in inputs])

    def close(self) -> None:
        with self._loop.lock:
            if self._closed:
                return
            self._closed = True
        self._loop.remove(self)
        for sequence in self._sequences:
            _free_sampler(sequence)
        L.llama_batch_free(self._batch)
        if self._embedder is not None:
            L.llama_free(self._embedder)
        L.llama_free(self._ctx)
        L.llama_model_free(self._model)

    # ---- the loop thread

    def has_work(self) -> bool:
        """Called under the loop's lock."""
        return bool(self._inbox or self._cancels or self._waiting) or any(s.job for s in self._sequences)

    def step(self, threads: int) -> None:
        """Admit, decode one batch, sample; report every job that produced something."""
        with self._loop.lock:
            inbox, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, set()
        if threads != self._threads:
            L.llama_set_n_threads(self._ctx, threads, threads)
            self._threads = threads
        steps: list[Step] = []
        try:
            self._waiting.extend(inbox)
            self._apply_cancels(cancels, steps)
            self._admit(steps)
            self._decode(steps)
        except Exception as exc:  # keep serving: fail what was running, not the thread
            self._fail([s for s in self._sequences if s.job], f"engine error: {exc}", steps)
        self._emit(steps)

    def shut_down(self) -> None:
        """Jobs still queued or running when the model closes end as cancelled."""
        with self._loop.lock:
            waiting = [*self._waiting, *self._inbox]
            self._inbox = []
        self._waiting.clear()
        steps = [Step(job.id, time.perf_counter_ns(), finish="cancel") for job, _ in waiting]
        for sequence in self._sequences:
            if sequence.job:
                self._finish(sequence, "cancel", steps)
        self._emit(steps)

    def _emit(self, steps: list[Step]) -> None:
        if steps:
            self._on_steps(steps)

    def _apply_cancels(self, ids: set[str], steps: list[Step]) -> None:
        for queued in [q for q in self._waiting if q[0].id in ids]:
            self._waiting.remove(queued)
            steps.append(Step(queued[0].id, time.perf_counter_ns(), finish="cancel"))
        for sequence in self._sequences:
            if sequence.job and sequence.job.id in ids:
                self._finish(sequence, "cancel", steps)

    def _admit(self, steps: list[Step]) -> None:
        while self._waiting:
            free = [(s.id, s.cached) for s in self._sequences if s.job is None]
            if not free:
                return  # the rest wait for a sequence
            job, grammar = self._waiting.popleft()
            if job.max_tokens <= 0:
                steps.append(Step(job.id, time.perf_counter_ns(), finish="length"))
                continue
            seq_id, reuse = pick_sequence(free, job.prompt)
            try:
                sampler = self._new_sampler(job.sampling, grammar, job.prompt)
            except EngineError as exc:
                steps.append(Step(job.id, time.perf_counter_ns(), finish="stop", error=str(exc)))
                continue
            self._start(self._sequences[seq_id], job, grammar, reuse, sampler)

    def _start(self, sequence: _Sequence, job: Job, grammar: str | None, reuse: int, sampler: Any) -> None:
        if not L.llama_memory_seq_rm(self._memory, sequence.id, reuse, -1):
            L.llama_memory_seq_rm(self._memory, sequence.id, -1, -1)  # fall back to a clean slate
            reuse = 0
        self._admissions += 1
        sequence.job, sequence.grammar, sequence.sampler, sequence.generated = job, grammar, sampler, 0
        sequence.cached = sequence.cached[:reuse]
        sequence.pending = list(job.prompt[reuse:])
        sequence.prompt_cached, sequence.admitted = reuse, self._admissions

    def _new_sampler(self, s: Sampling, grammar: str | None, prompt: list[int]) -> Any:
        """llama.cpp's usual chain: penalties, grammar, top_k, typical, top_p, min_p, temp, dist."""
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            L.llama_sampler_chain_add(chain, sampler)

        if s.repeat_penalty != 1.0 or s.frequency_penalty or s.presence_penalty:
            last_n = self.n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
            # This build's signature still begins with n_vocab (its include/llama.h agrees).
            add(
                L.llama_sampler_init_penalties(
                    self._n_vocab, last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
                )
            )
            # As in Ollama the prompt counts towards the penalties; accepted now, while the chain
            # holds nothing else, it stays out of the grammar added below.
            for token in prompt[-last_n:] if last_n > 0 else []:
                L.llama_sampler_accept(chain, token)
        if grammar:
            constraint = L.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
            if not constraint:
                L.llama_sampler_free(chain)
                raise EngineError("llama.cpp could not compile the grammar for this format")
            add(constraint)
        if s.temperature <= 0:
            add(L.llama_sampler_init_greedy())
            return chain
        add(L.llama_sampler_init_top_k(s.top_k))
        add(L.llama_sampler_init_typical(s.typical_p, 1))
        add(L.llama_sampler_init_top_p(s.top_p, 1))
        add(L.llama_sampler_init_min_p(s.min_p, 1))
        add(L.llama_sampler_init_temp(s.temperature))
        add(L.llama_sampler_init_dist(L.LLAMA_DEFAULT_SEED if s.seed < 0 else s.seed & 0xFFFFFFFF))
        return chain

    def _decode(self, steps: list[Step]) -> None:
        """One llama_decode over every running sequence, then sample those that reached an output."""
        running = sorted((s for s in self._sequences if s.job and s.pending), key=lambda s: s.admitted)
        plan = plan_chunks([len(s.pending) for s in running], self._n_batch)
        chunks = [(sequence, n) for sequence, n in zip(running, plan, strict=True) if n]
        if not chunks:
            return
        outputs = self._fill_batch(chunks)
        status = L.llama_decode(self._ctx, self._batch)
        if status != 0:  # 1: no room in the cache, 2: aborted, < 0: invalid batch or fatal
            self._fail([sequence for sequence, _ in chunks], f"llama_decode returned {status}", steps)
            return
        for sequence, n in chunks:
            sequence.cached += sequence.pending[:n]
            del sequence.pending[:n]
        for sequence, index in outputs:
            self._sample(sequence, index, steps)

    def _fill_batch(self, chunks: list[tuple[_Sequence, int]]) -> list[tuple[_Sequence, int]]:
        """Lay the chunks into the batch; return the (sequence, batch index) pairs that want logits."""
        batch, i, outputs = self._batch, 0, []
        for sequence, n in chunks:
            start = len(sequence.cached)
            for k, token in enumerate(sequence.pending[:n]):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, start + k, 1
                batch.seq_id[i][0] = sequence.id
                batch.logits[i] = n == len(sequence.pending) and k == n - 1  # a prompt's last token
                i += 1
            if n == len(sequence.pending):
                outputs.append((sequence, i - 1))
        batch.n_tokens = i
        return outputs

    def _sample(self, sequence: _Sequence, index: int, steps: list[Step]) -> None:
        job = sequence.job
        assert job is not None
        top_n = job.sampling.top_logprobs
        raw = self._logits(index) if top_n is not None else None  # before the samplers touch them
        token = L.llama_sampler_sample(sequence.sampler, self._ctx, index)
        if L.llama_vocab_is_eog(self._vocab, token):
            self._finish(sequence, "stop", steps)
            return
        logprobs = (token_logprob(raw, token, top_n),) if raw is not None and top_n is not None else ()
        sequence.generated += 1
        if sequence.generated >= job.max_tokens:
            self._finish(sequence, "length", steps, (token,), logprobs)
            return
        if len(sequence.cached) >= self.n_ctx and not self._shift(sequence):
            self._finish(sequence, "length", steps, (token,), logprobs)  # no room for its position
            return
        sequence.pending = [token]
        steps.append(
            Step(job.id, time.perf_counter_ns(), (token,), logprobs, prompt_cached=self._first(sequence))
        )

    def _shift(self, sequence: _Sequence) -> bool:
        """Make room in a full sequence by discarding half of what follows num_keep (if allowed)."""
        job = sequence.job
        if job is None or not job.shift or not L.llama_memory_can_shift(self._memory):
            return False
        n_past = len(sequence.cached)
        keep = max(0, min(job.num_keep, n_past))
        discard = shift_discard(n_past, keep)
        L.llama_memory_seq_rm(self._memory, sequence.id, keep, keep + discard)
        L.llama_memory_seq_add(self._memory, sequence.id, keep + discard, -1, -discard)
        sequence.cached = sequence.cached[:keep] + sequence.cached[keep + discard :]
        return True

    def _logits(self, index: int) -> npt.NDArray[np.float32]:
        pointer = L.llama_get_logits_ith(self._ctx, index)
        if not pointer:
            raise EngineError(f"no logits for batch index {index}")
        # A copy: the next llama_decode overwrites the buffer.
        return np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).copy()

    def _first(self, sequence: _Sequence) -> int | None:
        n, sequence.prompt_cached = sequence.prompt_cached, None
        return n

    def _finish(
        self,
        sequence: _Sequence,
        reason: FinishReason,
        steps: list[Step],
        tokens: tuple[int, ...] = (),
        logprobs: tuple[TokenLogprob, ...] = (),
    ) -> None:
        assert sequence.job is not None
        at = time.perf_counter_ns()
        steps.append(Step(sequence.job.id, at, tokens, logprobs, reason, prompt_cached=self._first(sequence)))
        _free_sampler(sequence)
        sequence.job, sequence.pending = None, []  # `cached` stays for prefix reuse

    def _fail(self, sequences: list[_Sequence], error: str, steps: list[Step]) -> None:
        for sequence in sequences:
            if sequence.job:
                steps.append(Step(sequence.job.id, time.perf_counter_ns(), finish="stop", error=error))
                _free_sampler(sequence)
                sequence.job, sequence.pending = None, []
                # Some ubatches may have landed before the failure: start this sequence afresh.
                L.llama_memory_seq_rm(self._memory, sequence.id, -1, -1)
                sequence.cached = []

    # ---- embeddings (loop thread, between steps)

    def _embed_one(self, tokens: list[int]) -> list[float]:
        if not tokens or len(tokens) > self.n_ctx:
            raise InvalidJob("the input length exceeds the context length" if tokens else "empty input")
        context = self._embedding_context()
        L.llama_memory_clear(L.llama_get_memory(context), True)
        batch = L.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            batch.n_tokens = len(tokens)
            run = L.llama_encode if L.llama_model_has_encoder(self._model) else L.llama_decode
            if run(context, batch) != 0:
                raise EngineError("llama.cpp failed to compute the embedding")
            pointer = L.llama_get_embeddings_seq(context, 0)
            if not pointer:
                raise EngineError("llama.cpp returned no embedding")
            return list(
                ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))[: L.llama_model_n_embd(self._model)]
            )
        finally:
            L.llama_batch_free(batch)

    def _embedding_context(self) -> Any:
        if self._embedder is None:
            params = L.llama_context_default_params()
            params.n_ctx = params.n_batch = params.n_ubatch = self.n_ctx
            params.n_seq_max = 1
            params.embeddings = True
            # An embedding model pools as its file says; a completion model has no pooling of
            # its own, so its token states are averaged.
            pooled = any(key.endswith(".pooling_type") for key in self.metadata)
            params.pooling_type = L.LLAMA_POOLING_TYPE_UNSPECIFIED if pooled else L.LLAMA_POOLING_TYPE_MEAN
            params.n_threads = params.n_threads_batch = max(self._threads, 1)
            context = L.llama_init_from_model(self._model, params)
            if not context:
                raise EngineError("llama.cpp could not create an embedding context")
            self._embedder = context
        return self._embedder


def _free_sampler(sequence: _Sequence) -> None:
    if sequence.sampler is not None:
        L.llama_sampler_free(sequence.sampler)
        sequence.sampler = None
