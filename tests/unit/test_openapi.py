"""The gateway's OpenAPI document describes every route: its body, its path parameters."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import pytest
from fastapi import FastAPI, routing

from services.config import load_settings
from services.gateway.app import create_app
from services.gateway.bodies import QUEUED, REMOTE, ChatBody, CreateBody, documented

RAW_ROUTES = {("POST", "/api/blobs/{digest}")}  # the blob's bytes, not JSON
FORM_ROUTES = {("POST", "/v1/audio/transcriptions")}  # OpenAI's multipart form
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


Operation = tuple[str, str]  # method, path as the document writes it


@pytest.fixture(scope="module")
def app_and_document() -> tuple[list[Operation], dict[str, Any]]:
    app = create_app(load_settings({"CORRAL_METRICS": "1"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FastAPI warns of duplicate operation ids
        document = app.openapi()
    return _operations(app), document


def _operations(app: FastAPI) -> list[Operation]:
    """Every method of every route the app serves, bar FastAPI's own (/docs, /openapi.json).
    FastAPI ≥ 0.165 keeps included routers whole in `app.routes`: its iter_route_contexts
    flattens them."""
    flatten = getattr(routing, "iter_route_contexts", list)
    return sorted(
        (method, route.path_format)
        for route in flatten(app.routes)
        if getattr(route, "include_in_schema", False)
        for method in route.methods
    )


def test_every_write_route_documents_its_body(
    app_and_document: tuple[list[Operation], dict[str, Any]],
) -> None:
    routes, document = app_and_document
    writes = [(m, p) for m, p in routes if m in WRITES]
    assert len(writes) >= 16  # the native, OpenAI and Anthropic routes that take a body
    for method, path in writes:
        body = document["paths"][path][method.lower()].get("requestBody")
        assert body is not None, f"{method} {path} has no requestBody"
        assert body["required"] is True
        media = "application/octet-stream" if (method, path) in RAW_ROUTES else "application/json"
        media = "multipart/form-data" if (method, path) in FORM_ROUTES else media
        assert list(body["content"]) == [media], f"{method} {path}"
        schema = body["content"][media]["schema"]
        assert schema.get("type") in ("object", "string"), f"{method} {path}: {schema}"


def test_every_route_and_path_parameter_is_in_the_document(
    app_and_document: tuple[list[Operation], dict[str, Any]],
) -> None:
    routes, document = app_and_document
    for method, path in routes:
        operation = document["paths"][path][method.lower()]
        documented_names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert documented_names == set(re.findall(r"{(\w+)}", path)), f"{method} {path}"
    assert {"/api/blobs/{digest}", "/v1/models/{name}", "/api/queue/{client_id}", "/metrics"} <= set(
        document["paths"]
    )


def test_the_document_is_self_contained(app_and_document: tuple[list[Operation], dict[str, Any]]) -> None:
    """pydantic's `#/$defs/...` references would point into the OpenAPI document: they are inlined."""
    _, document = app_and_document
    text = json.dumps(document)
    assert "$defs" not in text
    for ref in re.findall(r'"\$ref": "([^"]+)"', text):
        name = ref.removeprefix("#/components/schemas/")
        assert name in document["components"]["schemas"], ref
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("path", "method", "why"),
    [
        ("/api/generate", "post", QUEUED),
        ("/v1/chat/completions", "post", QUEUED),
        ("/v1/messages", "post", QUEUED),
        ("/api/pull", "post", REMOTE),
    ],
    ids=["native", "openai", "anthropic", "pull"],
)
def test_intended_503s_are_documented(
    app_and_document: tuple[list[Operation], dict[str, Any]], path: str, method: str, why: str
) -> None:
    _, document = app_and_document
    assert document["paths"][path][method]["responses"]["503"] == {"description": why}
    assert "503" not in document["paths"]["/api/show"]["post"]["responses"]


def test_documented_inlines_nested_models() -> None:
    schema = documented(ChatBody)["requestBody"]["content"]["application/json"]["schema"]
    message = schema["properties"]["messages"]["anyOf"][0]["items"]
    calls = message["properties"]["tool_calls"]["anyOf"][0]["items"]
    assert calls["properties"]["function"]["properties"]["name"] == {
        "default": "",
        "title": "Name",
        "type": "string",
    }


def test_documented_uses_the_wire_names() -> None:
    schema = documented(CreateBody)["requestBody"]["content"]["application/json"]["schema"]
    assert "from" in schema["properties"]
    assert "from_" not in schema["properties"]
