"""llama.cpp on CPU (llama-cpp-python) for GGUF models.

Parallel slots are separate llama contexts over one memory-mapped file: the
weights are shared through the page cache, so each extra slot costs only its
KV cache. The module is imported only when the worker uses this engine.
"""

from __future__ import annotations

import codecs
import os
import queue
import random
import time
from collections.abc import Callable

import llama_cpp

from services.protocol import Device, GenerationRequest, Options
from services.worker.chat_template import generate_messages, render_chat
from services.worker.devices import cpu_device
from services.worker.engines.base import DoneReason, EngineError, GenerationStats, LoadSpec
from services.worker.stops import StopMatcher

_KV_TYPES = {"f16": None, "": None, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}


def engine_threads(cores: int | None = None) -> int:
    """Threads for llama.cpp: every core but one, which stays with the services and NATS.

    llama.cpp's threads meet at a barrier after every layer, so one thread that
    shares its core with a busy process stalls them all: on 2 cores with the
    other one busy, 2 threads ran at a tenth of the speed of 1 (5.8 vs 75 tok/s).
    """
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1)


class LlamaCppEngine:
    name = "llamacpp"

    def devices(self) -> list[Device]:
        return [cpu_device()]

    def load(self, spec: LoadSpec) -> LlamaCppModel:
        if not spec.path.is_file():
            raise EngineError(f"model file {spec.path.name} is missing from the store")
        kv_type = _KV_TYPES[spec.kv_cache_type] if spec.flash_attention else None
        try:
            contexts = [
                llama_cpp.Llama(
                    model_path=str(spec.path),
                    n_ctx=spec.num_ctx,
                    n_threads=engine_threads(),
                    use_mmap=True,
                    flash_attn=bool(spec.flash_attention),
                    type_k=kv_type,
                    type_v=kv_type,
                    verbose=False,
                )
                for _ in range(spec.slots)
            ]
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"llama.cpp failed to load model: {exc}") from exc
        return LlamaCppModel(contexts, size=spec.path.stat().st_size)


class LlamaCppModel:
    size_vram = 0

    def __init__(self, contexts: list[llama_cpp.Llama], size: int) -> None:
        self.size = size
        self._free: queue.SimpleQueue[llama_cpp.Llama] = queue.SimpleQueue()
        for context in contexts:
            self._free.put(context)
        first = contexts[0]
        self._template = first.metadata.get("tokenizer.chat_template")
        self._bos = _token_text(first, first.token_bos())
        self._eos = _token_text(first, first.token_eos())
        self._contexts = contexts

    def prompt_for(self, request: GenerationRequest) -> str:
        if request.kind == "generate" and (request.raw or not self._template):
            return request.prompt
        if request.kind == "chat":
            messages = request.messages
        else:
            messages = generate_messages(request.prompt, request.system)
        if not self._template:
            return "\n".join(m.content for m in messages)
        return render_chat(self._template, messages, bos_token=self._bos, eos_token=self._eos)

    def generate(
        self,
        prompt: str,
        options: Options,
        emit: Callable[[str], None],
        cancelled: Callable[[], bool],
    ) -> GenerationStats:
        llm = self._free.get()
        try:
            return _generate(llm, prompt, options, emit, cancelled)
        finally:
            self._free.put(llm)

    def close(self) -> None:
        for context in self._contexts:
            context.close()
        self._contexts.clear()


def _generate(
    llm: llama_cpp.Llama,
    prompt: str,
    options: Options,
    emit: Callable[[str], None],
    cancelled: Callable[[], bool],
) -> GenerationStats:
    n_ctx = llm.n_ctx()
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    if len(tokens) >= n_ctx:  # keep the start token and the most recent half of the window
        tokens = tokens[:1] + tokens[-(n_ctx // 2) :]
    limit = options.num_predict if options.num_predict > 0 else n_ctx
    if options.seed >= 0:
        # A seeded request must repeat exactly: evaluate the whole prompt afresh rather than
        # reuse a cached prefix, whose logits can differ in the last bits.
        llm.reset()  # type: ignore[no-untyped-call]
        llm.set_seed(options.seed)
    else:
        llm.set_seed(random.randrange(2**31))
    stops = StopMatcher(options.stop)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    started = time.perf_counter_ns()
    first_token_at = 0
    count = 0
    reason: DoneReason = "length"
    for token in llm.generate(
        tokens,
        top_k=options.top_k,
        top_p=options.top_p,
        min_p=options.min_p,
        typical_p=options.typical_p,
        temp=options.temperature,
        repeat_penalty=options.repeat_penalty,
        frequency_penalty=options.frequency_penalty,
        presence_penalty=options.presence_penalty,
    ):
        if not first_token_at:
            first_token_at = time.perf_counter_ns()
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            reason = "stop"
            break
        count += 1
        text, hit_stop = stops.feed(decoder.decode(llm.detokenize([token], special=False)))
        if text:
            emit(text)
        if hit_stop:
            reason = "stop"
            break
        if cancelled():
            reason = "cancel"
            break
        if count >= limit or len(tokens) + count >= n_ctx:
            break
    if reason != "stop":
        tail = stops.flush() + decoder.decode(b"", final=True)
        if tail:
            emit(tail)
    finished = time.perf_counter_ns()
    first_token_at = first_token_at or finished
    return GenerationStats(
        done_reason=reason,
        prompt_eval_count=len(tokens),
        prompt_eval_duration=first_token_at - started,
        eval_count=count,
        eval_duration=finished - first_token_at,
    )


def _token_text(llm: llama_cpp.Llama, token: int) -> str:
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")
