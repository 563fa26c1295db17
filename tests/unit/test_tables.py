"""`corral list` / `corral ps` / `corral show` output, as ollama formats it (format/*.go, cmd/cmd.go,
tablewriter v0.0.5); expected texts are those of Ollama's cmd_test.go where it has them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral.showinfo import human_number, model_summary
from corral.tables import (
    human_bytes,
    human_duration,
    human_time,
    named,
    parse_time,
    processor,
    table,
    until,
)

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


def test_table_is_tablewriters_with_four_spaces_after_every_cell() -> None:
    """TestListHandler's expected text: the header's last cell is followed by one space."""
    rows = [
        ["model1", "sha256:abc12", "1.0 KB", "24 hours ago"],
        ["model2", "sha256:def45", "2.0 KB", "2 days ago"],
    ]
    assert table(rows, ["NAME", "ID", "SIZE", "MODIFIED"]) == (
        "NAME      ID              SIZE      MODIFIED     \n"
        "model1    sha256:abc12    1.0 KB    24 hours ago    \n"
        "model2    sha256:def45    2.0 KB    2 days ago      \n"
    )


def test_a_cell_wider_than_the_limit_wraps_and_the_row_below_is_filled() -> None:
    """tablewriter wraps at 30 columns with the least raggedness, and fills the other cells of the
    extra line with two spaces, even a column 0 wide."""
    text = "the quick brown fox jumps over the lazy dog again"
    first, rest = "the quick brown fox jumps over", "the lazy dog again"
    assert first + " " + rest == text and len(first) == 30
    lines = [
        f"    k      {first}    ",
        f"{'  '}    {'  ':3}    {rest:30}    ",  # the fillers: two spaces, padded to widths 0 and 3
        f"    key    {'v':30}    ",
    ]
    assert table([["", "k", text], ["", "key", "v"]]) == "".join(line + "\n" for line in lines)
    assert table([["", "a\nb"]]) == "    a    \n      b    \n"  # lines joined, then wrapped


@pytest.mark.parametrize(
    ("name", "prefix", "fold_case", "matched"),
    [("Mixed:1", "mixed", True, True), ("Mixed:1", "mixed", False, False), ("Mixed:1", "Mix", False, True),
     ("smollm2:135m", "", False, True), ("smollm2:135m", "llama", True, False)],
    ids=["list-folds-case", "ps-keeps-case", "ps-same-case", "no-prefix", "other-name"],
)  # fmt: skip
def test_name_filter(name: str, prefix: str, fold_case: bool, matched: bool) -> None:
    """`ollama list` lowercases both sides (ListHandler); `ollama ps` does not (ListRunningHandler)."""
    assert named(name, prefix, fold_case=fold_case) is matched


@pytest.mark.parametrize(
    ("count", "text"),
    [(999, "999"), (1500, "2K"), (135_000_000, "135M"), (133_700_000, "133.70M"), (8_000_000_000, "8B"),
     (1_500_000_000, "1.5B")],
)  # fmt: skip
def test_human_number(count: int, text: str) -> None:
    assert human_number(count) == text


DETAILS = {"family": "test", "parameter_size": "7B", "quantization_level": "FP16"}
MODEL_7B = (
    "  Model\n    architecture    test    \n    parameters      7B      \n    quantization    FP16    \n\n"
)
# Ollama's TestShowInfo, case by case: what /api/show answered, then what `ollama show` printed.
SHOW_CASES: list[tuple[dict[str, Any], bool, str]] = [
    ({"details": DETAILS}, False, MODEL_7B),
    ({"details": DETAILS,
      "model_info": {"general.architecture": "test", "general.parameter_count": 7e9,
                     "test.context_length": 0, "test.embedding_length": 0}},
     False,
     "  Model\n    architecture        test    \n    parameters          7B      \n"
     "    context length      0       \n    embedding length    0       \n"
     "    quantization        FP16    \n\n"),
    ({"details": {**DETAILS, "parameter_size": "8B"}, "parameters": "\n\t\t\tstop up",
      "model_info": {"general.architecture": "test", "general.parameter_count": 8e9, "some.true_bool": True,
                     "some.false_bool": False, "test.context_length": 1000, "test.embedding_length": 11434},
      "tensors": [{"name": "blk.0.attn_k.weight", "type": "BF16", "shape": [42, 3117]},
                  {"name": "blk.0.attn_q.weight", "type": "FP16", "shape": [3117, 42]}]},
     True,
     "  Model\n    architecture        test     \n    parameters          8B       \n"
     "    context length      1000     \n    embedding length    11434    \n"
     "    quantization        FP16     \n\n"
     "  Parameters\n    stop    up    \n\n"
     "  Metadata\n    general.architecture       test     \n    general.parameter_count    8e+09    \n"
     "    some.false_bool            false    \n    some.true_bool             true     \n"
     "    test.context_length        1000     \n    test.embedding_length      11434    \n\n"
     "  Tensors\n    blk.0.attn_k.weight    BF16    [42 3117]    \n"
     "    blk.0.attn_q.weight    FP16    [3117 42]    \n\n"),
    ({"details": DETAILS, "parameters": "\n\t\t\tstop never\n\t\t\tstop up\n\t\t\ttemperature 99"}, False,
     MODEL_7B + "  Parameters\n    stop           never    \n    stop           up       \n"
     "    temperature    99       \n\n"),
    ({"details": DETAILS,
      "projector_info": {"general.architecture": "clip", "general.parameter_count": 133_700_000,
                         "clip.vision.embedding_length": 0, "clip.vision.projection_dim": 0}},
     False,
     MODEL_7B + "  Projector\n    architecture        clip       \n    parameters          133.70M    \n"
     "    embedding length    0          \n    dimensions          0          \n\n"),
    ({"details": DETAILS, "system": "You are a pirate!\nAhoy, matey!\nWeigh anchor!\n\t\t\t"}, False,
     MODEL_7B + "  System\n    You are a pirate!    \n    Ahoy, matey!         \n"
     "    ...                  \n\n"),
    ({"details": DETAILS, "license": "MIT License\nCopyright (c) Ollama\n"}, False,
     MODEL_7B + "  License\n    MIT License             \n    Copyright (c) Ollama    \n\n"),
    ({"details": DETAILS, "capabilities": ["vision", "tools"]}, False,
     MODEL_7B + "  Capabilities\n    vision    \n    tools     \n\n"),
    ({"details": DETAILS, "model_info": {"general.architecture": "test"},
      "tensors": [{"name": "t", "type": "F32", "shape": [1]}]},
     False,
     MODEL_7B),
]  # fmt: skip
SHOW_IDS = ["bare-details", "bare-model-info", "verbose", "parameters", "projector", "system", "license",
            "capabilities", "not-verbose-no-metadata"]  # fmt: skip


@pytest.mark.parametrize(("shown", "verbose", "text"), SHOW_CASES, ids=SHOW_IDS)
def test_show_prints_ollamas_summary(shown: dict[str, Any], verbose: bool, text: str) -> None:
    assert model_summary(shown, verbose) == text


@pytest.mark.parametrize(
    ("value", "cell"),
    [(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "[<|endoftext|> ...+2 more]"),
     ([1, 1, 1, 1, 1, 1], "[1 1 1 ...+3 more]"), (["a", "b"], "[a b]"), ([], "[]"),
     (1e-05, "1e-05"), (10000.0, "10000"), (1_000_000, "1e+06"), (134_515_008, "1.34515008e+08"),
     (None, "<nil>"), ("gpt2", "gpt2")],
    ids=["tokens", "numbers", "short", "empty", "small", "whole-float", "million", "count", "null", "text"],
)  # fmt: skip
def test_metadata_values_as_go_prints_them(value: Any, cell: str) -> None:
    """showInfo: %g for numbers, arrays cut to 10 columns (the first item always shown)."""
    shown = {"details": DETAILS, "model_info": {"k": value}}
    assert f"  Metadata\n    k    {cell}    \n\n" in model_summary(shown, verbose=True)


def test_parse_time_takes_nanoseconds() -> None:
    assert parse_time("2026-01-01T00:00:00.123456789Z") == NOW + timedelta(microseconds=123456)
