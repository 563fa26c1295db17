"""The gateway's /metrics merges every process's metrics into one valid exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from services.gateway.scrape import exposition
from services.protocol import MetricsSnapshot

WORKER_TEXT = """# HELP corral_worker_tokens_total Tokens processed
# TYPE corral_worker_tokens_total counter
corral_worker_tokens_total{corral_worker_id="w1",gen_ai_token_type="output"} 12.0
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 20.0
"""
SCHEDULER_TEXT = """# HELP corral_queue_wait_seconds Time waiting
# TYPE corral_queue_wait_seconds histogram
corral_queue_wait_seconds_bucket{le="0.1"} 1.0
corral_queue_wait_seconds_bucket{le="+Inf"} 2.0
corral_queue_wait_seconds_count 2.0
corral_queue_wait_seconds_sum 0.7
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 31.0
"""


def test_families_of_one_name_merge_and_every_sample_names_its_process() -> None:
    text = exposition(
        [
            MetricsSnapshot(service="corral-worker", instance="h-1", text=WORKER_TEXT),
            MetricsSnapshot(service="corral-scheduler", instance="h-2", text=SCHEDULER_TEXT),
        ]
    ).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert text.count("# TYPE process_open_fds gauge") == 1
    fds = {s.labels["service_name"]: s.value for s in families["process_open_fds"].samples}
    assert fds == {"corral-worker": 20.0, "corral-scheduler": 31.0}
    tokens = families["corral_worker_tokens"]
    assert tokens.type == "counter"
    assert tokens.samples[0].labels == {
        "corral_worker_id": "w1",
        "gen_ai_token_type": "output",
        "service_name": "corral-worker",
        "service_instance_id": "h-1",
    }
    wait = families["corral_queue_wait_seconds"]
    assert wait.type == "histogram"
    assert {s.name for s in wait.samples} == {
        "corral_queue_wait_seconds_bucket",
        "corral_queue_wait_seconds_count",
        "corral_queue_wait_seconds_sum",
    }
    assert all(s.labels["service_instance_id"] == "h-2" for s in wait.samples)


def test_no_snapshot_is_an_empty_exposition() -> None:
    assert exposition([]) == b""
