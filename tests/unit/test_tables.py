"""`corral list` / `corral ps` columns, as ollama formats them (format/bytes.go, format/time.go)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.tables import human_bytes, human_duration, human_time, parse_time, processor, table, until

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("size", "text"),
    [(999, "999 B"), (1000, "1 KB"), (1500, "1.5 KB"), (98_000_000, "98 MB"), (5_100_000_000, "5.1 GB"),
     (42_300_000_000, "42 GB"), (2 * 1000**4, "2 TB")],
)  # fmt: skip
def test_human_bytes(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
     (240, "4 minutes"), (3600, "About an hour"), (5 * 3600, "5 hours"), (3 * 86400, "3 days"),
     (20 * 86400, "2 weeks"), (90 * 86400, "3 months"), (3 * 365 * 86400, "3 years")],
)  # fmt: skip
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_time_and_until() -> None:
    assert human_time(NOW + timedelta(minutes=4, seconds=30), NOW) == "4 minutes from now"
    assert human_time(NOW - timedelta(hours=2), NOW) == "2 hours ago"
    assert human_time(NOW + timedelta(days=365 * 292), NOW) == "Forever"
    assert human_time(None, NOW) == "Never"
    assert until(NOW - timedelta(seconds=1), NOW) == "Stopping..."


@pytest.mark.parametrize(
    ("size", "vram", "text"),
    [(100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 52, "48%/52% CPU/GPU"), (100, 200, "Unknown")],
)
def test_processor(size: int, vram: int, text: str) -> None:
    assert processor(size, vram) == text


def test_table_is_left_aligned_four_spaces_apart() -> None:
    assert table(["NAME", "ID"], [["a:1", "abc"], ["longer:2", "d"]]) == (
        "NAME        ID\na:1         abc\nlonger:2    d"
    )


def test_parse_time_takes_nanoseconds() -> None:
    assert parse_time("2026-01-01T00:00:00.123456789Z") == NOW + timedelta(microseconds=123456)
