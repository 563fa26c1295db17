"""A generation fed engine steps: text, stop strings, split characters, statistics, context."""

from __future__ import annotations

import pytest

from services.protocol import DEFAULT_OPTIONS, Options
from services.worker.engines.base import Job, Step, TokenLogprob
from services.worker.generation import Generation, max_tokens, sampling_for
from services.worker.output import PlainParser
from services.worker.stops import StopMatcher

# A toy vocabulary: token ids stand for these bytes ("é" is split over two tokens).
VOCAB = {1: b"Hel", 2: b"lo", 3: b" wor", 4: b"ld", 5: b"\xc3", 6: b"\xa9", 7: b"!", 8: b"\n"}


class Vocab:
    def token_bytes(self, token: int) -> bytes:
        return VOCAB[token]


def generation(stops: list[str] | None = None, keep_context: bool = False) -> Generation:
    job = Job("j", [100, 101, 102], sampling_for(DEFAULT_OPTIONS, None, None), max_tokens=50)
    return Generation(job, 1_000, Vocab(), PlainParser(), StopMatcher(stops or []), keep_context=keep_context)


def step(at: int, *tokens: int, finish: str | None = None, error: str | None = None) -> Step:
    return Step("j", at, tokens, finish=finish, error=error)  # type: ignore[arg-type]


def text(g: Generation) -> str:
    chunk = g.chunk()
    return chunk.text if chunk else ""


def test_text_statistics_and_context() -> None:
    g = generation(keep_context=True)
    g.take(step(3_000, 1))
    g.take(step(4_000, 2, 3))
    assert text(g) == "Hello wor"
    g.take(step(6_000, 4, finish="length"))
    assert text(g) == "ld" and g.finished
    done = g.done()
    assert (done.done_reason, done.eval_count, done.prompt_eval_count) == ("length", 4, 3)
    assert (done.prompt_eval_duration, done.eval_duration) == (2_000, 3_000)
    assert done.context == [100, 101, 102, 1, 2, 3, 4]


def test_chunks_are_numbered_and_done_counts_them() -> None:
    g = generation()
    g.take(step(2, 1))
    first = g.chunk()
    g.take(step(3, 5))  # half a character: no chunk, no number used
    assert g.chunk() is None
    g.take(step(4, 6, 7, finish="stop"))
    second = g.chunk()
    assert first is not None and second is not None
    assert (first.seq, second.seq, g.done().chunks) == (1, 2, 2)


def test_a_character_split_over_tokens_comes_out_whole() -> None:
    g = generation()
    g.take(step(2, 5))
    assert g.chunk() is None
    g.take(step(3, 6, finish="stop"))
    assert text(g) == "é"


def test_stop_string_ends_the_answer_and_hides_itself() -> None:
    g = generation(stops=["world"])
    g.take(step(2, 1, 2, 3))
    assert text(g) == "Hello "  # " wor" may begin the stop: held back
    g.take(step(3, 4, 7))
    assert text(g) == "" and g.finished and g.done().done_reason == "stop"
    g.take(step(4, 8))  # the engine's later steps are ignored
    assert g.chunk() is None


def test_held_text_is_released_when_the_engine_stops() -> None:
    g = generation(stops=["world!"])
    g.take(step(2, 1, 2, 3, 4))
    assert text(g) == "Hello "
    g.take(step(3, finish="stop"))
    assert text(g) == "world"


def test_an_engine_error_ends_the_generation() -> None:
    g = generation()
    g.take(step(2, finish="stop", error="llama_decode returned -3"))
    assert g.finished and g.error == "llama_decode returned -3"


def test_no_context_unless_asked() -> None:
    g = generation()
    g.take(step(2, 1, finish="stop"))
    assert g.done().context is None


def test_logprobs_carry_token_text_and_bytes() -> None:
    g = generation()
    g.take(Step("j", 2, (1,), (TokenLogprob(1, -0.5, ((1, -0.5), (2, -1.5))),)))
    chunk = g.chunk()
    assert chunk is not None and chunk.logprobs is not None
    first = chunk.logprobs[0]
    assert (first.token, first.logprob, first.bytes) == ("Hel", -0.5, list(b"Hel"))
    assert [t.token for t in first.top_logprobs or []] == ["Hel", "lo"]


@pytest.mark.parametrize(
    ("num_predict", "prompt", "limit"),
    [(10, 5, (10, True)), (-1, 5, (20480, True)), (-2, 5, (2043, False)), (0, 5, (20480, True))],
    ids=["n", "unbounded", "fill-context", "zero"],
)
def test_max_tokens(num_predict: int, prompt: int, limit: tuple[int, bool]) -> None:
    assert max_tokens(num_predict, 2048, prompt) == limit


def test_sampling_takes_every_option() -> None:
    options = DEFAULT_OPTIONS.merged(Options(temperature=0.2, seed=7, top_k=5), None)
    sampling = sampling_for(options, "json", 3)
    assert (sampling.temperature, sampling.seed, sampling.top_k, sampling.top_p) == (0.2, 7, 5, 0.9)
    assert sampling.format == "json" and sampling.top_logprobs == 3
