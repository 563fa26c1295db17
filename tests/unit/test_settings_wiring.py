"""Each compose service receives exactly the settings its code reads, found by reading the code."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.config import SETTINGS_FIELDS, variable

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "scheduler", "worker", "registry")
# docker-compose.yml runs all four on host A; docker-compose.worker.yml one more worker on host B.
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.worker.yml")
SHARED = ("services/runtime.py", "services/telemetry.py")  # run in every service process
NOT_BEHAVIOUR = {"summary"}  # reads every field, for the start-up log only
# The simulated engine's settings: for scheduler tests and benchmarks, never for a container.
TEST_ONLY = {"CORRAL_SIM_DEVICES", "CORRAL_SIM_TOKENS_PER_SECOND"}


def _settings_attributes(path: Path) -> set[str]:
    """Attribute names read from any `…settings` expression in a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value).endswith("settings"):
            names.add(node.attr)
    return names


def _derived_fields() -> dict[str, set[str]]:
    """For each method or property of Settings, the fields it reads (`self.<field>`)."""
    tree = ast.parse((ROOT / "services" / "config.py").read_text())
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    derived = {}
    for method in settings.body:
        if isinstance(method, ast.FunctionDef) and not method.name.startswith("__"):
            derived[method.name] = {
                n.attr
                for n in ast.walk(method)
                if isinstance(n, ast.Attribute)
                and ast.unparse(n.value) == "self"
                and n.attr in SETTINGS_FIELDS
            }
    return derived


def variables_read(service: str) -> set[str]:
    paths = [*(ROOT / "services" / service).rglob("*.py"), *(ROOT / p for p in SHARED)]
    derived = _derived_fields()
    fields: set[str] = set()
    for path in paths:
        for name in _settings_attributes(path) - NOT_BEHAVIOUR:
            fields |= derived.get(name, {name} & set(SETTINGS_FIELDS))
    return {variable(f) for f in fields}


def _compose_services(file: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / file).read_text())["services"]
    return services


def compose_variables(service: str, file: str = "docker-compose.yml") -> set[str]:
    environment: dict[str, Any] = _compose_services(file)[service].get("environment") or {}
    known = {variable(name) for name in SETTINGS_FIELDS}
    return {name for name in environment if name in known}


WIRED = [
    (file, service) for file in COMPOSE_FILES for service in SERVICES if service in _compose_services(file)
]
WIRED_IDS = [f"{file}:{service}" for file, service in WIRED]


def test_every_compose_file_is_checked() -> None:
    """docker-compose.yml runs all four services; every other compose file runs some of them."""
    assert {path.name for path in ROOT.glob("docker-compose*.y*ml")} == set(COMPOSE_FILES)
    assert {service for file, service in WIRED if file == "docker-compose.yml"} == set(SERVICES)
    assert {file for file, _ in WIRED} == set(COMPOSE_FILES)


@pytest.mark.parametrize(("file", "service"), WIRED, ids=WIRED_IDS)
def test_compose_passes_every_setting_the_service_reads(file: str, service: str) -> None:
    assert variables_read(service) - TEST_ONLY - compose_variables(service, file) == set()


@pytest.mark.parametrize(("file", "service"), WIRED, ids=WIRED_IDS)
def test_compose_passes_no_setting_the_service_ignores(file: str, service: str) -> None:
    assert compose_variables(service, file) - variables_read(service) == set()


def test_the_reader_finds_known_reads() -> None:
    """The analysis itself: a derived setting maps to its field, a plain read to its variable."""
    assert "OLLAMA_CONTEXT_LENGTH" in variables_read("scheduler")
    assert "CORRAL_HEARTBEAT_INTERVAL" in variables_read("gateway")  # through settings.stale_after
    assert "NATS_URL" in variables_read("registry")  # through services/runtime.py
    assert "OLLAMA_CONTEXT_LENGTH" not in variables_read("worker")
