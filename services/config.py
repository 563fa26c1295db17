"""Every OLLAMA_* / CORRAL_* / NATS_URL setting, parsed in one place with Ollama's defaults.

Each setting is one field of `Settings`: its default, the variable it is read
from and the parser for that variable are written there and nowhere else.
Valid values parse exactly as Ollama's `envconfig` does. Where Ollama silently
falls back to a default on a bad value, corral refuses to start instead and
names the variable and the forms it accepts: a typo in a server setting should
not quietly become a different configuration.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from services.protocol.durations import parse_go_duration

log = logging.getLogger("corral.config")

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
# The schemes an origin without `*` must start with (gin-contrib/cors with AllowBrowserExtensions).
ORIGIN_SCHEMES = (
    "http://",
    "https://",
    "chrome-extension://",
    "safari-extension://",
    "moz-extension://",
    "ms-browser-extension://",
)
KV_CACHE_TYPES = ("", "f16", "q8_0", "q4_0")
# auto: every engine this host can run, each model on the one for its format (worker/engines/formats.py)
ENGINES = ("auto", "llamacpp", "exllamav2", "exllamav3", "simulated")
MODELS_PER_GPU = 3  # OLLAMA_MAX_LOADED_MODELS=0: Ollama's automatic limit, per GPU (and on CPU)
STALE_HEARTBEATS = 5  # a worker silent for this many heartbeat intervals is gone
MAX_STREAM_REPLICAS = 5  # nats-server keeps at most 5 copies of a stream
NO_LIMIT = 365 * 24 * 3600.0  # "forever" for a deadline: a year of seconds
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class ConfigError(ValueError):
    """A setting has a value corral cannot use; the message names it and the accepted forms."""

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


Parser = Callable[[str, str], Any]  # (variable name, non-empty value) -> parsed value


def _env(name: str, parse: Parser, default: Any = None, factory: Callable[[], Any] | None = None) -> Any:
    """A settings field read from variable `name`; its default applies when the variable is empty."""
    metadata = {"env": name, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def parse_host(value: str, name: str = "OLLAMA_HOST") -> Host:
    """Parse OLLAMA_HOST as `envconfig.Host()` does, rejecting ports it would only warn about."""
    value = value.strip().strip("\"'")
    if value == "ollama.com":
        return Host("https", "ollama.com", 443)
    scheme, default_port = "http", DEFAULT_PORT
    if "://" in value:
        scheme, value = value.split("://", 1)
        known = {"http": 80, "https": 443}.get(scheme)
        if known is None:
            raise ConfigError(name, value, "[http://|https://]host[:port][/path]")
        default_port = known
    hostport, slash, path = value.partition("/")
    path = slash + path if slash else ""
    host, port_text = _split_host_port(hostport)
    if port_text is None:
        host = hostport.strip("[]") if hostport else "127.0.0.1"
        return Host(scheme, host, default_port, path)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(name, value, "a port between 0 and 65535")
    return Host(scheme, host, int(port_text), path)


def _host(name: str, value: str) -> Host:
    return parse_host(value, name)


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


def _duration(name: str, value: str) -> float:
    """OLLAMA_KEEP_ALIVE rules: a Go duration, else whole seconds; negative means forever."""
    try:
        return parse_go_duration(value)
    except ValueError:
        pass
    if re.fullmatch(r"[+-]?\d+", value):
        seconds = float(int(value))
        return -1.0 if seconds < 0 else seconds
    raise ConfigError(name, value, 'a duration such as "5m", "1h30m", "-1" or whole seconds "300"')


def _seconds(name: str, value: str) -> float:
    """A positive duration: Go form ("2s", "500ms") or plain seconds ("0.5")."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = _duration(name, value)
    if not seconds > 0:
        raise ConfigError(name, value, "a positive duration such as 2s, 500ms or 0.5")
    return seconds


def _uint(low: int = 0) -> Parser:
    def parse(name: str, value: str) -> int:
        if not value.isdigit() or int(value) < low:
            raise ConfigError(name, value, f"a whole number ≥ {low}")
        return int(value)

    return parse


def _replicas(name: str, value: str) -> int:
    """Copies of a JetStream stream: 1 to 5, as nats-server allows (3 rides out one lost server)."""
    if not value.isdigit() or not 1 <= int(value) <= MAX_STREAM_REPLICAS:
        raise ConfigError(name, value, f"a whole number from 1 to {MAX_STREAM_REPLICAS}")
    return int(value)


def _bool(name: str, value: str) -> bool:
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    raise ConfigError(name, value, "1, true, 0 or false")


def _choice(allowed: tuple[str, ...]) -> Parser:
    def parse(name: str, value: str) -> str:
        if value not in allowed:
            raise ConfigError(name, value, "one of " + ", ".join(repr(a) for a in allowed if a))
        return value

    return parse


def _path(_: str, value: str) -> Path:
    return Path(value).expanduser()


def _text(_: str, value: str) -> str:
    return value


def _origins(name: str, value: str) -> tuple[str, ...]:
    """Extra CORS origins, put before Ollama's own list. Those Ollama refuses to start with
    (gin-contrib/cors: at most one `*`, else a scheme it knows) are refused here too."""
    origins = tuple(o.strip() for o in value.split(",") if o.strip())
    for origin in origins:
        if origin.count("*") > 1 or ("*" not in origin and not origin.startswith(ORIGIN_SCHEMES)):
            accepted = "origins with at most one '*', or starting with " + ", ".join(ORIGIN_SCHEMES)
            raise ConfigError(name, origin, accepted)
    return origins + DEFAULT_ORIGINS


def _worker_id(name: str, value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise ConfigError(name, value, "letters, digits, '-' and '_' only")
    return value


def _default_worker_id() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "worker"


_MEMORY_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_SIM_DEVICES_FORM = (
    'kind:size pairs such as "cpu:32GiB,cuda:24GiB" (kinds cpu and cuda, at most one cpu; '
    "sizes above 0 in bytes, KiB, MiB, GiB or TiB)"
)


def _memory(text: str) -> int | None:
    """Bytes: plain bytes or a number with a binary unit ("24GiB", "1.5GiB"); None if neither."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)", text.strip())
    if match is None or match.group(2) not in _MEMORY_UNITS:
        return None
    return int(Decimal(match.group(1)) * _MEMORY_UNITS[match.group(2)])


def _sim_devices(name: str, value: str) -> tuple[tuple[str, int], ...]:
    """The simulated engine's devices as (kind, bytes), in the order written."""
    devices = []
    for item in value.split(","):
        kind, _, size_text = item.strip().partition(":")
        size = _memory(size_text)
        if kind not in ("cpu", "cuda") or size is None or size <= 0:
            raise ConfigError(name, value, _SIM_DEVICES_FORM)
        devices.append((kind, size))
    if sum(kind == "cpu" for kind, _ in devices) > 1:
        raise ConfigError(name, value, _SIM_DEVICES_FORM)
    return tuple(devices)


def _rate(name: str, value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not (0 <= rate < float("inf")):
        raise ConfigError(name, value, "a number ≥ 0, such as 0 or 25.5")
    return rate


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one corral process: one field per variable."""

    host: Host = _env("OLLAMA_HOST", _host, Host("http", "127.0.0.1", DEFAULT_PORT))
    models: Path = _env("OLLAMA_MODELS", _path, factory=lambda: Path.home() / ".ollama" / "models")
    keep_alive: float = _env("OLLAMA_KEEP_ALIVE", _duration, 300.0)
    max_queue: int = _env("OLLAMA_MAX_QUEUE", _uint(low=1), 512)
    num_parallel: int = _env("OLLAMA_NUM_PARALLEL", _uint(low=1), 1)
    max_loaded_models: int = _env("OLLAMA_MAX_LOADED_MODELS", _uint(), 0)
    context_length: int = _env("OLLAMA_CONTEXT_LENGTH", _uint(low=1), 2048)
    flash_attention: bool | None = _env("OLLAMA_FLASH_ATTENTION", _bool, None)
    kv_cache_type: str = _env("OLLAMA_KV_CACHE_TYPE", _choice(KV_CACHE_TYPES), "")
    gpu_overhead: int = _env("OLLAMA_GPU_OVERHEAD", _uint(), 0)  # bytes of every GPU left alone
    sched_spread: bool = _env("OLLAMA_SCHED_SPREAD", _bool, False)  # always use every GPU
    max_replicas: int = _env("CORRAL_MAX_REPLICAS", _uint(), 0)  # instances of one model; 0: no limit
    origins: tuple[str, ...] = _env("OLLAMA_ORIGINS", _origins, DEFAULT_ORIGINS)
    load_timeout: float = _env("OLLAMA_LOAD_TIMEOUT", _duration, 300.0)  # 0 or negative: no limit
    debug: bool = _env("OLLAMA_DEBUG", _bool, False)
    noprune: bool = _env("OLLAMA_NOPRUNE", _bool, False)  # keep blobs no manifest uses any more
    # huggingface_hub's own variables: the Hub's address (a mirror, a private Hub), and its token.
    hf_endpoint: str = _env("HF_ENDPOINT", _text, "")
    hf_token: str = _env("HF_TOKEN", _text, "")
    nohistory: bool = _env("OLLAMA_NOHISTORY", _bool, False)  # `corral run` saves no REPL history
    nats_url: str | None = _env("NATS_URL", _text, None)
    nats_server: str | None = _env("CORRAL_NATS_SERVER", _text, None)
    data_dir: Path = _env("CORRAL_DATA_DIR", _path, factory=lambda: Path.home() / ".corral")
    worker_id: str = _env("CORRAL_WORKER_ID", _worker_id, factory=_default_worker_id)
    engine: str = _env("CORRAL_ENGINE", _choice(ENGINES), "auto")
    engine_threads: int = _env("CORRAL_ENGINE_THREADS", _uint(), 0)  # 0: every core, one fewer under load
    heartbeat_interval: float = _env("CORRAL_HEARTBEAT_INTERVAL", _seconds, 2.0)
    queue_ack_wait: float = _env("CORRAL_QUEUE_ACK_WAIT", _seconds, 30.0)
    # Copies of every JetStream stream and KV bucket corral keeps (at most the NATS cluster's size).
    stream_replicas: int = _env("CORRAL_STREAM_REPLICAS", _replicas, 1)
    idle_timeout: float = _env("CORRAL_IDLE_TIMEOUT", _seconds, 300.0)
    metrics: bool = _env("CORRAL_METRICS", _bool, False)  # the gateway serves /metrics (Prometheus)
    catalog: str = _env("CORRAL_CATALOG", _text, "")  # a SQLAlchemy URL; "": SQLite in CORRAL_DATA_DIR
    # The simulated engine (CORRAL_ENGINE=simulated, scheduler tests and benchmarks only): its
    # devices as (kind, bytes), and its speed in tokens/s per job (0: every job ends at once).
    sim_devices: tuple[tuple[str, int], ...] = _env("CORRAL_SIM_DEVICES", _sim_devices, (("cpu", 16 << 30),))
    sim_tokens_per_second: float = _env("CORRAL_SIM_TOKENS_PER_SECOND", _rate, 0.0)

    def __post_init__(self) -> None:
        if self.kv_cache_type not in ("", "f16") and not self.flash_attention:
            # Ollama quietly keeps f16 here; a quantized cache needs flash attention in llama.cpp.
            raise ConfigError(
                "OLLAMA_KV_CACHE_TYPE", self.kv_cache_type, "f16, or OLLAMA_FLASH_ATTENTION=1 with it"
            )

    def loaded_models_limit(self, gpu_count: int) -> int:
        """OLLAMA_MAX_LOADED_MODELS, with 0 meaning Ollama's automatic 3 per GPU (3 on CPU)."""
        return self.max_loaded_models or MODELS_PER_GPU * max(gpu_count, 1)

    @property
    def catalog_url(self) -> str:
        """The registry's catalog: CORRAL_CATALOG, else a SQLite file in CORRAL_DATA_DIR named
        after OLLAMA_MODELS (a catalog indexes one store: two stores never share a file)."""
        store = hashlib.sha256(str(self.models.resolve()).encode()).hexdigest()[:12]
        return self.catalog or f"sqlite:///{self.data_dir / f'catalog-{store}.db'}"

    @property
    def kv_cache(self) -> str:
        """The KV cache type in effect: OLLAMA_KV_CACHE_TYPE with flash attention (which a
        quantized cache needs), else f16 ("")."""
        return self.kv_cache_type if self.flash_attention else ""

    @property
    def load_deadline(self) -> float:
        """Seconds to wait for a load: OLLAMA_LOAD_TIMEOUT, where 0 or less means no limit (Ollama)."""
        return self.load_timeout if self.load_timeout > 0 else NO_LIMIT

    @property
    def stale_after(self) -> float:
        """Seconds of silence after which a worker counts as gone."""
        return STALE_HEARTBEATS * self.heartbeat_interval

    def summary(self) -> dict[str, object]:
        """Effective values for the start-up log, with credentials redacted."""
        values = asdict(self)
        values["host"] = self.host.url
        values["nats_url"] = redact_url(self.nats_url) if self.nats_url else None
        values["hf_token"] = "***" if self.hf_token else ""
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}


def variable(field_name: str) -> str:
    """The environment variable a settings field is read from."""
    return str(SETTINGS_FIELDS[field_name].metadata["env"])


SETTINGS_FIELDS = {f.name: f for f in fields(Settings)}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, spec in SETTINGS_FIELDS.items():
        variable_name = spec.metadata["env"]
        raw = env.get(variable_name, "").strip().strip("\"'")
        if raw:
            values[name] = spec.metadata["parse"](variable_name, raw)
    return Settings(**values)


def nats_servers(url: str) -> list[str]:
    """The servers NATS_URL names: one URL, or a NATS cluster's as a comma-separated list."""
    return [server.strip() for server in url.split(",") if server.strip()]


def redact_url(url: str) -> str:
    """`url` (or a comma-separated list of them) with credentials (user, password or token)
    replaced by ***, for logs and banners."""
    return ",".join(_redact_one(server) for server in nats_servers(url))


def _redact_one(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = "***@" + parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def log_settings(settings: Settings, service: str) -> None:
    """One structured line at start-up with every effective value (as Ollama's `server config`)."""
    log.info("config", extra={"fields": {"service": service, **settings.summary()}})
