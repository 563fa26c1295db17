"""services.config against Ollama's own envconfig test tables, plus corral's strict refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import (
    DEFAULT_ORIGINS,
    SETTINGS_FIELDS,
    ConfigError,
    Settings,
    load_settings,
    nats_servers,
    parse_host,
    variable,
)

HOST_CASES = [
    ("", "http://127.0.0.1:11434"),
    ("1.2.3.4", "http://1.2.3.4:11434"),
    (":1234", "http://:1234"),
    ("1.2.3.4:1234", "http://1.2.3.4:1234"),
    ("example.com", "http://example.com:11434"),
    ("example.com:1234", "http://example.com:1234"),
    (":0", "http://:0"),
    ("[::1]", "http://[::1]:11434"),
    ("[::]", "http://[::]:11434"),
    ("::1", "http://[::1]:11434"),
    ("[::1]:1337", "http://[::1]:1337"),
    (" 1.2.3.4 ", "http://1.2.3.4:11434"),
    ('"1.2.3.4"', "http://1.2.3.4:11434"),
    ("'1.2.3.4'", "http://1.2.3.4:11434"),
    ("http://1.2.3.4", "http://1.2.3.4:80"),
    ("http://1.2.3.4:4321", "http://1.2.3.4:4321"),
    ("https://1.2.3.4", "https://1.2.3.4:443"),
    ("https://1.2.3.4:4321", "https://1.2.3.4:4321"),
    ("https://example.com/ollama", "https://example.com:443/ollama"),
    ("ollama.com", "https://ollama.com:443"),
]


@pytest.mark.parametrize(("value", "url"), HOST_CASES, ids=[c[0] or "empty" for c in HOST_CASES])
def test_ollama_host_forms(value: str, url: str) -> None:
    assert parse_host(value).url == url


@pytest.mark.parametrize("value", [":66000", ":-1", "ftp://host"], ids=["big-port", "neg", "ftp"])
def test_bad_ollama_host_stops_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="OLLAMA_HOST"):
        load_settings({"OLLAMA_HOST": value})


def test_connectable_url_maps_wildcards_to_loopback() -> None:
    assert parse_host("0.0.0.0:11434").connectable_url == "http://127.0.0.1:11434"
    assert parse_host("[::]:8080").connectable_url == "http://[::1]:8080"


KEEP_ALIVE_CASES = [
    ("", 300.0),
    ("1s", 1.0),
    ("1m", 60.0),
    ("1h", 3600.0),
    ("5m0s", 300.0),
    ("1h2m3s", 3723.0),
    ("0", 0.0),
    ("60", 60.0),
    ("120", 120.0),
    ("3600", 3600.0),
    ("-0", 0.0),
    ("-1", -1.0),
    ("-1m", -1.0),
    (" ", 300.0),
]


@pytest.mark.parametrize(("value", "seconds"), KEEP_ALIVE_CASES, ids=[repr(c[0]) for c in KEEP_ALIVE_CASES])
def test_ollama_keep_alive_table(value: str, seconds: float) -> None:
    assert load_settings({"OLLAMA_KEEP_ALIVE": value}).keep_alive == seconds


@pytest.mark.parametrize("value", ["???", "1d", "1y", "1w"])
def test_keep_alive_ollama_would_ignore_is_refused(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"OLLAMA_KEEP_ALIVE": value})
    assert "OLLAMA_KEEP_ALIVE" in str(info.value) and '"5m"' in str(info.value)


def test_defaults_are_ollamas() -> None:
    settings = load_settings({})
    assert settings.host.url == "http://127.0.0.1:11434"
    assert settings.models == Path.home() / ".ollama" / "models"
    assert (settings.max_queue, settings.num_parallel, settings.max_loaded_models) == (512, 1, 0)
    assert settings.context_length == 2048
    assert settings.flash_attention is None and settings.kv_cache_type == ""
    assert settings.origins == DEFAULT_ORIGINS
    assert settings.nats_url is None
    assert settings.loaded_models_limit(gpu_count=0) == 3
    assert settings.loaded_models_limit(gpu_count=2) == 6


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OLLAMA_MAX_QUEUE", "-1"),
        ("OLLAMA_MAX_QUEUE", "0x10"),
        ("OLLAMA_MAX_QUEUE", "0"),
        ("OLLAMA_NUM_PARALLEL", "two"),
        ("OLLAMA_MAX_LOADED_MODELS", "1.5"),
        ("OLLAMA_CONTEXT_LENGTH", "0o10"),
        ("OLLAMA_FLASH_ATTENTION", "random"),
        ("OLLAMA_NOHISTORY", "maybe"),
        ("OLLAMA_KV_CACHE_TYPE", "q5_1"),
        ("CORRAL_ENGINE", "tpu"),
        ("CORRAL_WORKER_ID", "a.b"),
        ("CORRAL_HEARTBEAT_INTERVAL", "0"),
        ("CORRAL_STREAM_REPLICAS", "0"),
        ("CORRAL_STREAM_REPLICAS", "6"),  # nats-server keeps at most 5 copies
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    assert info.value.name == name and "expected" in str(info.value)


def test_values_parse() -> None:
    settings = load_settings(
        {
            "OLLAMA_MODELS": "/srv/models",
            "OLLAMA_MAX_QUEUE": "4",
            "OLLAMA_NUM_PARALLEL": "2",
            "OLLAMA_CONTEXT_LENGTH": "8192",
            "OLLAMA_FLASH_ATTENTION": "1",
            "OLLAMA_KV_CACHE_TYPE": "q8_0",
            "OLLAMA_ORIGINS": "chrome-extension://*, moz-extension://*",
            "NATS_URL": "nats://user:secret@nats:4222",
        }
    )
    assert settings.models == Path("/srv/models")
    assert (settings.max_queue, settings.num_parallel, settings.context_length) == (4, 2, 8192)
    assert settings.flash_attention is True and settings.kv_cache_type == "q8_0"
    assert settings.origins[:2] == ("chrome-extension://*", "moz-extension://*")
    assert settings.origins[2:] == DEFAULT_ORIGINS
    assert "secret" not in str(settings.summary())


def test_a_nats_cluster_is_a_comma_separated_url_list_whose_credentials_are_redacted() -> None:
    settings = load_settings(
        {"NATS_URL": "nats://tok@a:4222, nats://tok@b:4222,nats://c:4222", "CORRAL_STREAM_REPLICAS": "3"}
    )
    servers = ["nats://tok@a:4222", "nats://tok@b:4222", "nats://c:4222"]
    assert nats_servers(settings.nats_url or "") == servers
    assert settings.summary()["nats_url"] == "nats://***@a:4222,nats://***@b:4222,nats://c:4222"
    assert (settings.stream_replicas, load_settings({}).stream_replicas) == (3, 1)


@pytest.mark.parametrize(
    ("env", "ok"),
    [
        ({"OLLAMA_KV_CACHE_TYPE": "q8_0"}, False),
        ({"OLLAMA_KV_CACHE_TYPE": "q4_0", "OLLAMA_FLASH_ATTENTION": "0"}, False),
        ({"OLLAMA_KV_CACHE_TYPE": "q8_0", "OLLAMA_FLASH_ATTENTION": "1"}, True),
        ({"OLLAMA_KV_CACHE_TYPE": "f16"}, True),
    ],
    ids=["q8-no-fa", "q4-fa-off", "q8-with-fa", "f16"],
)
def test_quantized_kv_cache_needs_flash_attention(env: dict[str, str], ok: bool) -> None:
    if ok:
        assert load_settings(env).kv_cache_type == env["OLLAMA_KV_CACHE_TYPE"]
    else:
        with pytest.raises(ConfigError, match="OLLAMA_KV_CACHE_TYPE"):
            load_settings(env)


def test_an_engine_corral_does_not_know_is_refused() -> None:
    """(An engine corral knows but this worker lacks is refused by the worker at start:
    tests/unit/test_model_formats.py.)"""
    with pytest.raises(ConfigError, match="CORRAL_ENGINE"):
        load_settings({"CORRAL_ENGINE": "vllm"})


@pytest.mark.parametrize(
    ("value", "deadline"),
    [("", 300.0), ("10s", 10.0), ("0", 365 * 24 * 3600.0), ("-1", 365 * 24 * 3600.0)],
    ids=["default", "10s", "0", "neg"],
)
def test_load_timeout_zero_or_negative_means_no_limit(value: str, deadline: float) -> None:
    assert load_settings({"OLLAMA_LOAD_TIMEOUT": value}).load_deadline == deadline


@pytest.mark.parametrize(
    ("value", "nohistory"), [("", False), ("1", True), ("true", True), ("0", False), ("'True'", True)]
)
def test_nohistory_is_a_go_bool(value: str, nohistory: bool) -> None:
    """OLLAMA_NOHISTORY: envconfig.Bool, quotes and spaces trimmed; unset is off."""
    assert load_settings({"OLLAMA_NOHISTORY": value}).nohistory is nohistory


def test_every_setting_has_one_variable_and_its_default_when_unset() -> None:
    assert load_settings({}) == Settings()
    variables = [variable(name) for name in SETTINGS_FIELDS]
    assert len(variables) == len(set(variables))
