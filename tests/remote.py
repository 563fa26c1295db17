"""Real remote-registry parts for tests: a registry v2 over TLS and an HTTP CONNECT proxy.

Nothing is mocked: the registry is Debian's `docker-registry` (distribution 2.8, the
protocol Ollama's registry speaks) and the proxy is Debian's `tinyproxy`, each run on a
free port under a temp dir. `scripts/apt-test-deps` (run by `make setup`) installs them;
where it could not, `missing_tools()` says why and the tests skip with that reason.

TLS trust is always explicit (the CA file or `TestCA.ssl_context()`): this machine sets
SSL_CERT_FILE and friends globally, so nothing here relies on the environment.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import trustme
import yaml

from tests.stack import free_port
from tests.watch import DEADLINE

REGISTRY_BINARY = "docker-registry"
PROXY_BINARY = "tinyproxy"
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def missing_tools() -> str | None:
    """Why the remote-registry tests cannot run here, or None when they can."""
    missing = [name for name in (REGISTRY_BINARY, PROXY_BINARY) if shutil.which(name) is None]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not installed (Debian packages docker-registry and tinyproxy;"
        " `make setup` installs them when run as root with apt-get)"
    )


class TestCA:
    """A throwaway certificate authority, its PEM bundle and a server certificate in `root`."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(self.ca_file)
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert_file = root / "server.pem"  # leaf first, then the chain
        self.key_file = root / "server.key"
        self.cert_file.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(self.key_file)

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting this CA alone (never the system's or SSL_CERT_FILE's)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


class _Process:
    """One server process in its own process group, its output appended to `log_file`."""

    name = "process"

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.log_file: Path | None = None

    def _launch(self, argv: list[str], root: Path, timeout: float, env: dict[str, str] | None = None) -> None:
        """Start `argv` and wait until it serves; stopped again if it does not."""
        self._spawn(argv, root, env)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    def _spawn(self, argv: list[str], root: Path, env: dict[str, str] | None = None) -> None:
        assert self.process is None, f"{self.name} already running"
        self.log_file = root / f"{self.name}.log"
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )

    def _wait_answering(self, get: Callable[[], httpx.Response], timeout: float) -> None:
        """Poll `get` until it answers 200; fail with the last answer and the log."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                response = get()
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text}"
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready: {last}\n{self.log()[-3000:]}")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited early ({self.process.returncode}):\n{self.log()[-3000:]}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after STOP_GRACE seconds; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(STOP_GRACE)
        _signal_group(process.pid, signal.SIGKILL)  # any child left behind in the group

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class DockerRegistry(_Process):
    """Debian's docker-registry (distribution 2.8) serving HTTPS on 127.0.0.1:<free port>."""

    name = "registry"

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self.storage: Path | None = None
        self.ca: TestCA | None = None

    @property
    def host(self) -> str:
        """`127.0.0.1:<port>`: the host part of a model name on this registry."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def start(self, root: Path, ca: TestCA, timeout: float = DEADLINE) -> Self:
        """Write the config under `root`, serve it, and wait until /v2/ answers 200 over TLS."""
        root.mkdir(parents=True, exist_ok=True)
        self.ca = ca
        self.port = self.port or free_port()  # a restart keeps the port
        self.storage = root / "storage"
        config = {
            "version": "0.1",
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.host,
                "secret": "corral-tests",  # else a warning and a random one per start
                "tls": {"certificate": str(ca.cert_file), "key": str(ca.key_file)},
            },
        }
        config_file = root / "config.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        # REGISTRY_* variables override the config file: keep the caller's out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self._launch([REGISTRY_BINARY, "serve", str(config_file)], root, timeout, env)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.ca is not None
        with httpx.Client(verify=self.ca.ssl_context(), trust_env=False, timeout=5) as client:
            self._wait_answering(lambda: client.get(f"{self.url}/v2/"), timeout)

    def blob_path(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob's bytes."""
        assert self.storage is not None, "registry not started"
        algorithm, _, hex_digest = digest.partition(":")
        return self.storage / "docker/registry/v2/blobs" / algorithm / hex_digest[:2] / hex_digest / "data"


class TinyProxy(_Process):
    """Debian's tinyproxy on 127.0.0.1:<free port>, allowing CONNECT to any port."""

    name = "tinyproxy"

    def __init__(self) -> None:
        super().__init__()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, root: Path, timeout: float = DEADLINE) -> Self:
        """Write the config under `root`, run it in the foreground, wait until it accepts."""
        root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()  # a restart keeps the port
        # No ConnectPort line at all: tinyproxy.conf(5) says all ports are then allowed
        # for CONNECT (any ConnectPort line restricts CONNECT to the ports listed).
        config = "\n".join(
            [
                f"Port {self.port}",
                "Listen 127.0.0.1",
                "Allow 127.0.0.1",
                "Timeout 600",
                "MaxClients 100",
                f'LogFile "{root / "tinyproxy-server.log"}"',
                "LogLevel Connect",
                "DisableViaHeader Yes",
                "",
            ]
        )
        config_file = root / "tinyproxy.conf"
        config_file.write_text(config)
        self._launch([PROXY_BINARY, "-d", "-c", str(config_file)], root, timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"tinyproxy not ready: {last}\n{self.log()[-3000:]}")

    def log(self) -> str:
        """tinyproxy's own log file, then whatever it printed."""
        own = self.log_file.with_name("tinyproxy-server.log") if self.log_file else None
        text = own.read_text(errors="replace") if own is not None and own.exists() else ""
        return text + super().log()
