"""Generation through the whole stack against raw llama-cpp-python, in one run, as ratios.

    P1  single-stream tok/s through the stack ÷ raw llama-cpp-python in-process   (target ≥ 0.97)
    P2  time to first token through the stack − raw, median, in ms                (target ≤ 5)
    P3  aggregate tok/s of 4 concurrent streams ÷ one stream, OLLAMA_NUM_PARALLEL=4 (target ≥ 1.33),
        both counted from sending the request(s) to the last token

Same GGUF (the bundled SmolLM2-135M), same prompt tokens, greedy, a fixed number of
tokens (counting never samples end-of-text). Each run gets a prompt of its own, so
neither side reuses a cached prefix. The raw side runs while the stack is idle, with
as many threads as the engine uses on a quiet machine. Prints JSON and writes it to
bench/results/generation.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass

import httpx
import llama_cpp

from bench.stack import MODEL, report, running_stack
from services.registry.bundled import bundled_gguf

RUNS = 5
TOKENS = 128
STREAMS = 4
CTX = 2048


def prompt(run: int) -> str:
    return f"Run {run}. 1, 2, 3, 4, 5, 6,"


@dataclass
class Timing:
    sent: float  # perf_counter when the request was sent, its first and its last token came
    first: float
    last: float
    tokens: int

    @property
    def ttft(self) -> float:
        return self.first - self.sent

    @property
    def rate(self) -> float:
        """Decoding speed: tokens/s between the first and the last token."""
        return (self.tokens - 1) / (self.last - self.first)

    @property
    def throughput(self) -> float:
        """Tokens/s from sending the request to its last token, prompt included."""
        return self.tokens / (self.last - self.sent)


def raw_run(llm: llama_cpp.Llama, text: str) -> Timing:
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token") == "true"  # as the stack tokenizes
    tokens = llm.tokenize(text.encode(), add_bos=add_bos, special=True)
    llm.reset()
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    for _ in llm.generate(tokens, temp=0.0, reset=True):
        count += 1
        last = time.perf_counter()
        first = first or last
        if count >= TOKENS:
            break
    return Timing(started, first, last, count)


def stack_run(http: httpx.Client, text: str) -> Timing:
    body = {"model": MODEL, "prompt": text, "raw": True, "options": {"num_predict": TOKENS, "temperature": 0}}
    started = time.perf_counter()
    first = last = 0.0
    count = 0
    with http.stream("POST", "/api/generate", json=body) as response:
        for line in response.iter_lines():
            chunk = json.loads(line)
            if chunk["done"]:
                count = chunk["eval_count"]
                break
            last = time.perf_counter()
            first = first or last
    return Timing(started, first, last, count)


def concurrent(clients: list[httpx.Client], base: int) -> tuple[float, int]:
    """Aggregate tok/s of STREAMS requests sent at once: all their tokens over the time from the
    first request sent to the last token of all."""
    results: list[Timing] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(stack_run(clients[i], prompt(base + i))))
        for i in range(STREAMS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    span = max(r.last for r in results) - min(r.sent for r in results)
    total = sum(r.tokens for r in results)
    return total / span, len(results)


def main() -> None:
    """`python -m bench.generation [threads]`: threads for both sides (default: every core, as the
    engine takes them on a quiet machine)."""
    cores = int(sys.argv[1]) if len(sys.argv) > 1 else os.cpu_count() or 1
    llm = llama_cpp.Llama(  # the engine's settings: every core, flash attention as llama.cpp decides
        model_path=str(bundled_gguf()),
        n_ctx=CTX,
        n_threads=cores,
        n_threads_batch=cores,
        flash_attn=True,
        verbose=False,
    )
    raw, stack, aggregate = [], [], []
    completed = 0
    with running_stack({"OLLAMA_NUM_PARALLEL": str(STREAMS), "CORRAL_ENGINE_THREADS": str(cores)}) as url:
        # One keep-alive connection per stream, as a client library holds it.
        clients = [httpx.Client(base_url=url, timeout=300) for _ in range(STREAMS)]
        stack_run(clients[0], prompt(-1))  # warm-up: the first request pays for imports and caches
        raw_run(llm, prompt(-2))
        for run in range(RUNS):
            raw.append(raw_run(llm, prompt(100 + run)))
            stack.append(stack_run(clients[0], prompt(200 + run)))
            rate, done = concurrent(clients, 300 + run * STREAMS)
            aggregate.append(rate)
            completed += done
        for http in clients:
            http.close()
    raw_rate = statistics.median(t.rate for t in raw)
    stack_rate = statistics.median(t.rate for t in stack)
    single_throughput = statistics.median(t.throughput for t in stack)
    result = {
        "model": MODEL,
        "runs": RUNS,
        "tokens": TOKENS,
        "threads": cores,
        "raw_tok_s": round(raw_rate, 1),
        "stack_tok_s": round(stack_rate, 1),
        "P1_stack_over_raw": round(stack_rate / raw_rate, 3),
        "raw_ttft_ms": round(statistics.median(t.ttft for t in raw) * 1000, 1),
        "stack_ttft_ms": round(statistics.median(t.ttft for t in stack) * 1000, 1),
        "P2_ttft_difference_ms": round(
            statistics.median(s.ttft - r.ttft for s, r in zip(stack, raw, strict=True)) * 1000, 1
        ),
        "single_throughput_tok_s": round(single_throughput, 1),
        "aggregate_tok_s": round(statistics.median(aggregate), 1),
        "P3_aggregate_over_single": round(statistics.median(aggregate) / single_throughput, 3),
        "P3_streams_completed": f"{completed}/{RUNS * STREAMS}",
        "load_average": os.getloadavg(),
    }
    report("generation", result)


if __name__ == "__main__":
    main()
