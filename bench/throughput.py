"""Generation throughput through the whole stack (gateway → JetStream → scheduler → worker).

Target: tokens/s as the final chunk reports it, and end-to-end time to first
token, on the bundled SmolLM2-135M with llama.cpp on CPU. Prints the figures and
writes them as JSON to bench/results/throughput.json.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import httpx

from bench.stack import MODEL, running_stack

RUNS = 5
BODY = {"model": MODEL, "prompt": "Why is the sky blue?", "options": {"num_predict": 128, "seed": 1}}


def main() -> None:
    rates, first_tokens = [], []
    with running_stack() as url:
        for _ in range(RUNS):
            started = time.perf_counter()
            first = None
            with httpx.stream("POST", f"{url}/api/generate", json=BODY, timeout=120) as r:
                for line in r.iter_lines():
                    first = first or time.perf_counter() - started
                    final = json.loads(line)
            rates.append(final["eval_count"] / final["eval_duration"] * 1e9)
            first_tokens.append(first or 0.0)
    result = {
        "model": MODEL,
        "runs": RUNS,
        "tokens_per_second_median": round(statistics.median(rates), 1),
        "time_to_first_token_ms_median": round(statistics.median(first_tokens) * 1000, 1),
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
