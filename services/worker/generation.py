"""One generation on a worker: engine steps in, Ollama's reply messages out.

The engine reports token ids; here they become text (incremental UTF-8, so a
character split across tokens comes out whole), stop strings end the answer
(neither the stop nor what follows is sent), thinking and tool calls are split
off by the model's output parser, and the timing statistics are kept from the
engine's own step times. Nothing here does I/O, so it is tested directly.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Literal, Protocol

from services.protocol import Chunk, Done, Logprob, Options, TokenLogprob, ToolCall
from services.worker.engines.base import Job, Sampling, Step
from services.worker.engines.base import TokenLogprob as EngineLogprob
from services.worker.output import OutputParser, Parsed
from services.worker.stops import StopMatcher

DoneReason = Literal["stop", "length", "cancel"]
UNBOUNDED_FACTOR = 10  # num_predict -1: at most 10 × num_ctx tokens (Ollama caps it so)


class Detokenizer(Protocol):
    def token_bytes(self, token: int) -> bytes: ...


def sampling_for(
    options: Options, format: str | dict[str, object] | None, top_logprobs: int | None
) -> Sampling:
    """The engine's sampling settings from a request's effective options (defaults filled in)."""
    assert options.temperature is not None and options.seed is not None  # DEFAULT_OPTIONS sets all
    return Sampling(
        temperature=options.temperature,
        top_k=options.top_k or 0,
        top_p=options.top_p if options.top_p is not None else 1.0,
        min_p=options.min_p or 0.0,
        typical_p=options.typical_p if options.typical_p is not None else 1.0,
        repeat_penalty=options.repeat_penalty if options.repeat_penalty is not None else 1.0,
        repeat_last_n=options.repeat_last_n if options.repeat_last_n is not None else 64,
        presence_penalty=options.presence_penalty or 0.0,
        frequency_penalty=options.frequency_penalty or 0.0,
        seed=options.seed,
        format=format,
        top_logprobs=top_logprobs,
    )


def max_tokens(num_predict: int, num_ctx: int, prompt_len: int) -> tuple[int, bool]:
    """(token limit, whether a full context may shift) for Ollama's num_predict:
    n > 0 is n tokens; -2 fills the context and stops; other negatives mean "until done",
    capped at 10 × num_ctx as Ollama does."""
    if num_predict > 0:
        return num_predict, True
    if num_predict == -2:
        return max(num_ctx - prompt_len, 0), False
    return UNBOUNDED_FACTOR * num_ctx, True


@dataclass
class Generation:
    """The state of one request's generation, fed the engine's steps in order."""

    job: Job
    submitted_ns: int
    detokenizer: Detokenizer
    parser: OutputParser
    stops: StopMatcher
    keep_context: bool = False  # generate (not raw): return prompt + answer tokens as `context`
    reason: DoneReason | None = None
    error: str | None = None
    eval_count: int = 0
    chunks: int = 0  # reply chunks made so far: they are numbered 1, 2, …
    first_ns: int = 0
    last_ns: int = 0
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    _answer: list[int] = field(default_factory=list)
    _pending: Parsed = field(default_factory=Parsed)
    _logprobs: list[Logprob] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.reason is not None

    def take(self, step: Step) -> None:
        """Apply one engine step. After a stop string the rest is ignored (the caller cancels)."""
        if self.finished:
            return
        self.first_ns = self.first_ns or step.at_ns
        self.last_ns = step.at_ns
        self.eval_count += len(step.tokens)
        self._answer.extend(step.tokens)
        self._logprobs.extend(self._logprob(lp) for lp in step.logprobs)
        raw = self._decoder.decode(b"".join(self.detokenizer.token_bytes(t) for t in step.tokens))
        text, hit_stop = self.stops.feed(raw)
        self._pending.add(self.parser.add(text))
        reason = self._reason(step, hit_stop)
        if reason is None:
            return
        if reason != "stop" or step.finish == "stop":  # ended by the engine: flush what is held
            tail, _ = self.stops.feed(self._decoder.decode(b"", final=True))
            self._pending.add(self.parser.add(tail + self.stops.flush()))
        self._pending.add(self.parser.flush())
        self.reason = reason

    def _reason(self, step: Step, hit_stop: bool) -> DoneReason | None:
        if step.error is not None:
            self.error = step.error
            return "stop"
        if hit_stop:
            return "stop"
        return step.finish

    def chunk(self) -> Chunk | None:
        """What was produced since the last call, as one reply message (None if nothing)."""
        parsed, self._pending = self._pending, Parsed()
        logprobs, self._logprobs = self._logprobs, []
        if not (parsed.content or parsed.thinking or parsed.tool_calls or logprobs):
            return None
        self.chunks += 1
        return Chunk(
            seq=self.chunks,
            text=parsed.content,
            thinking=parsed.thinking,
            tool_calls=[ToolCall.model_validate(c) for c in parsed.tool_calls] or None,
            logprobs=logprobs or None,
        )

    def done(self) -> Done:
        assert self.reason is not None
        first = self.first_ns or self.last_ns or self.submitted_ns
        return Done(
            done_reason=self.reason,
            chunks=self.chunks,
            prompt_eval_count=len(self.job.prompt),
            prompt_eval_duration=max(first - self.submitted_ns, 0),
            eval_count=self.eval_count,
            eval_duration=max(self.last_ns - first, 0),
            context=[*self.job.prompt, *self._answer] if self.keep_context else None,
        )

    def _logprob(self, lp: EngineLogprob) -> Logprob:
        return Logprob(
            **self._token(lp.token, lp.logprob).model_dump(),
            top_logprobs=[self._token(t, p) for t, p in lp.top] or None,
        )

    def _token(self, token: int, logprob: float) -> TokenLogprob:
        data = self.detokenizer.token_bytes(token)
        return TokenLogprob(token=data.decode("utf-8", errors="replace"), logprob=logprob, bytes=list(data))
