"""Every OLLAMA_* / HERD_* / NATS_URL setting, parsed in one place with Ollama's defaults.

Valid values parse exactly as Ollama's `envconfig` does. Where Ollama silently
falls back to a default on a bad value, herd refuses to start instead and names
the variable and the forms it accepts: a typo in a server setting should not
quietly become a different configuration.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from services.protocol.durations import parse_go_duration

log = logging.getLogger("herd.config")

DEFAULT_PORT = 11434
DEFAULT_ORIGINS = (
    "http://localhost",
    "https://localhost",
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1",
    "https://127.0.0.1",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://0.0.0.0",
    "https://0.0.0.0",
    "http://0.0.0.0:*",
    "https://0.0.0.0:*",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)
KV_CACHE_TYPES = ("", "f16", "q8_0", "q4_0")
ENGINES = ("auto", "llamacpp", "exllamav2", "simulated")
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class ConfigError(ValueError):
    """A setting has a value herd cannot use; the message names it and the accepted forms."""

    def __init__(self, name: str, value: str, accepted: str) -> None:
        super().__init__(f"{name}={value!r} is not valid: expected {accepted}")
        self.name = name


@dataclass(frozen=True)
class Host:
    """Where the HTTP API listens (OLLAMA_HOST), split the way `envconfig.Host()` splits it."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def connectable_url(self) -> str:
        """The address a client on this machine dials (0.0.0.0 → 127.0.0.1, [::] → [::1])."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return Host(self.scheme, host, self.port, self.path).url


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one herd process."""

    host: Host = field(default_factory=lambda: Host("http", "127.0.0.1", DEFAULT_PORT))
    models: Path = field(default_factory=lambda: Path.home() / ".ollama" / "models")
    keep_alive: float = 300.0
    max_queue: int = 512
    num_parallel: int = 1
    max_loaded_models: int = 0
    context_length: int = 2048
    flash_attention: bool | None = None
    kv_cache_type: str = ""
    origins: tuple[str, ...] = DEFAULT_ORIGINS
    load_timeout: float = 300.0
    debug: bool = False
    nats_url: str | None = None
    nats_server: str | None = None
    data_dir: Path = field(default_factory=lambda: Path.home() / ".herd")
    worker_id: str = field(default_factory=lambda: _default_worker_id())
    engine: str = "auto"
    heartbeat_interval: float = 2.0
    queue_ack_wait: float = 30.0
    idle_timeout: float = 300.0

    def loaded_models_limit(self, gpu_count: int) -> int:
        """OLLAMA_MAX_LOADED_MODELS, with 0 meaning Ollama's automatic 3 per GPU (3 on CPU)."""
        return self.max_loaded_models or 3 * max(gpu_count, 1)

    def summary(self) -> dict[str, object]:
        """Effective values for the start-up log, with credentials redacted."""
        values = asdict(self)
        values["host"] = self.host.url
        values["nats_url"] = _redact_url(self.nats_url) if self.nats_url else None
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from `env` (default: the process environment)."""
    env = os.environ if env is None else env

    def var(name: str) -> str:
        return env.get(name, "").strip().strip("\"'")

    defaults = Settings()
    return Settings(
        host=parse_host(var("OLLAMA_HOST")),
        models=Path(var("OLLAMA_MODELS")).expanduser() if var("OLLAMA_MODELS") else defaults.models,
        keep_alive=_duration("OLLAMA_KEEP_ALIVE", var("OLLAMA_KEEP_ALIVE"), defaults.keep_alive),
        max_queue=_uint("OLLAMA_MAX_QUEUE", var("OLLAMA_MAX_QUEUE"), defaults.max_queue, low=1),
        num_parallel=_uint(
            "OLLAMA_NUM_PARALLEL", var("OLLAMA_NUM_PARALLEL"), defaults.num_parallel, low=1
        ),
        max_loaded_models=_uint(
            "OLLAMA_MAX_LOADED_MODELS", var("OLLAMA_MAX_LOADED_MODELS"), defaults.max_loaded_models
        ),
        context_length=_uint(
            "OLLAMA_CONTEXT_LENGTH", var("OLLAMA_CONTEXT_LENGTH"), defaults.context_length, low=1
        ),
        flash_attention=_bool("OLLAMA_FLASH_ATTENTION", var("OLLAMA_FLASH_ATTENTION")),
        kv_cache_type=_choice("OLLAMA_KV_CACHE_TYPE", var("OLLAMA_KV_CACHE_TYPE"), KV_CACHE_TYPES),
        origins=tuple(o.strip() for o in var("OLLAMA_ORIGINS").split(",") if o.strip())
        + DEFAULT_ORIGINS,
        load_timeout=_duration("OLLAMA_LOAD_TIMEOUT", var("OLLAMA_LOAD_TIMEOUT"), 300.0),
        debug=bool(_bool("OLLAMA_DEBUG", var("OLLAMA_DEBUG"))),
        nats_url=var("NATS_URL") or None,
        nats_server=var("HERD_NATS_SERVER") or None,
        data_dir=Path(var("HERD_DATA_DIR")).expanduser() if var("HERD_DATA_DIR") else defaults.data_dir,
        worker_id=_worker_id(var("HERD_WORKER_ID")) or defaults.worker_id,
        engine=_choice("HERD_ENGINE", var("HERD_ENGINE") or "auto", ENGINES),
        heartbeat_interval=_seconds("HERD_HEARTBEAT_INTERVAL", var("HERD_HEARTBEAT_INTERVAL"), 2.0),
        queue_ack_wait=_seconds("HERD_QUEUE_ACK_WAIT", var("HERD_QUEUE_ACK_WAIT"), 30.0),
        idle_timeout=_seconds("HERD_IDLE_TIMEOUT", var("HERD_IDLE_TIMEOUT"), 300.0),
    )


def parse_host(value: str) -> Host:
    """Parse OLLAMA_HOST as `envconfig.Host()` does, rejecting ports it would only warn about."""
    value = value.strip().strip("\"'")
    if value == "ollama.com":
        return Host("https", "ollama.com", 443)
    scheme, default_port = "http", DEFAULT_PORT
    if "://" in value:
        scheme, value = value.split("://", 1)
        default_port = {"http": 80, "https": 443}.get(scheme)
        if default_port is None:
            raise ConfigError("OLLAMA_HOST", value, "[http://|https://]host[:port][/path]")
    hostport, slash, path = value.partition("/")
    path = slash + path if slash else ""
    host, port_text = _split_host_port(hostport)
    if port_text is None:
        host = hostport.strip("[]") if hostport else "127.0.0.1"
        return Host(scheme, host, default_port, path)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError("OLLAMA_HOST", value, "a port between 0 and 65535")
    return Host(scheme, host, int(port_text), path)


def _split_host_port(hostport: str) -> tuple[str, str | None]:
    """Go's net.SplitHostPort: succeed only for `host:port` and `[v6]:port`."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end != -1 and hostport[end + 1 : end + 2] == ":":
            return hostport[1:end], hostport[end + 2 :]
        return "", None
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        return host, port
    return "", None


def _duration(name: str, value: str, default: float) -> float:
    """OLLAMA_KEEP_ALIVE rules: a Go duration, else whole seconds; negative means forever."""
    if not value:
        return default
    try:
        return parse_go_duration(value)
    except ValueError:
        pass
    if re.fullmatch(r"[+-]?\d+", value):
        seconds = float(int(value))
        return -1.0 if seconds < 0 else seconds
    raise ConfigError(name, value, 'a duration such as "5m", "1h30m", "-1" or whole seconds "300"')


def _seconds(name: str, value: str, default: float) -> float:
    """A positive duration: Go form ("2s", "500ms") or plain seconds ("0.5")."""
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = _duration(name, value, default)
    if not seconds > 0:
        raise ConfigError(name, value, "a positive duration such as 2s, 500ms or 0.5")
    return seconds


def _uint(name: str, value: str, default: int, low: int = 0) -> int:
    if not value:
        return default
    if not value.isdigit() or int(value) < low:
        raise ConfigError(name, value, f"a whole number ≥ {low}")
    return int(value)


def _bool(name: str, value: str) -> bool | None:
    if not value:
        return None
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ConfigError(name, value, "1, true, 0 or false")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(name, value, "one of " + ", ".join(repr(a) for a in allowed if a))
    return value


def _worker_id(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise ConfigError("HERD_WORKER_ID", value, "letters, digits, '-' and '_' only")
    return value


def _default_worker_id() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "worker"


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = "***@" + parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def log_settings(settings: Settings, service: str) -> None:
    """One structured line at start-up with every effective value (as Ollama's `server config`)."""
    log.info("config", extra={"service": service, "settings": settings.summary()})
