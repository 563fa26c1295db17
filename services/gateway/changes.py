"""The native routes that change the store: copy, delete, create, blobs (upload, ask), pull
and push."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.gateway.bodies import (
    RAW_BODY,
    REMOTE,
    CopyBody,
    CreateBody,
    DeleteBody,
    TransferBody,
    documented,
    parse_body,
    parse_messages,
    parse_parameters,
)
from services.gateway.errors import BadRequest, failure
from services.protocol import (
    CopyRequest,
    CreateModelRequest,
    DeleteRequest,
    Progress,
    Tracked,
    TransferRequest,
    subjects,
)

router = APIRouter()


@router.post("/api/copy", openapi_extra=documented(CopyBody))
async def copy(request: Request) -> Response:
    body = parse_body(await request.body(), CopyBody, "CopyRequest")
    await request.app.state.corral.change(CopyRequest(source=body.source, destination=body.destination))
    return Response(status_code=200)


@router.delete("/api/delete", openapi_extra=documented(DeleteBody))
async def delete(request: Request) -> Response:
    body = parse_body(await request.body(), DeleteBody, "DeleteRequest")
    await request.app.state.corral.change(DeleteRequest(name=body.model or body.name))
    return Response(status_code=200)


@router.post("/api/create", openapi_extra=documented(CreateBody))
async def create(request: Request) -> Response:
    """Ollama's CreateHandler: the statuses as NDJSON progress, or (stream false) the last."""
    body = parse_body(await request.body(), CreateBody, "CreateRequest")
    licenses = [body.license] if isinstance(body.license, str) else body.license or []
    job = CreateModelRequest(
        name=body.model or body.name,
        from_model=body.from_,
        files=body.files,
        adapters=body.adapters,
        draft_files=body.draft_files,
        template=body.template,
        system=body.system,
        license=licenses,
        parameters=parse_parameters(body.parameters),
        messages=parse_messages(body.messages or []),
        quantize=body.quantize or body.quantization,
        renderer=body.renderer,
        parser=body.parser,
        requires=body.requires,
    )
    return await _progress(request, subjects.REGISTRY_CREATE, job, body.stream)


@router.head("/api/blobs/{digest}")
async def head_blob(request: Request, digest: str) -> Response:
    await request.app.state.corral.head_blob(digest)
    return Response(status_code=200)


@router.post("/api/blobs/{digest}", openapi_extra=RAW_BODY)
async def upload_blob(request: Request, digest: str) -> Response:
    """The body is streamed to the registry as it arrives, never held whole: 201 when the blob
    was created, 200 when the store had it already."""
    created = await request.app.state.corral.upload_blob(digest, request.stream())
    return Response(status_code=201 if created else 200)


@router.post("/api/pull", openapi_extra=documented(TransferBody, REMOTE))
async def pull(request: Request) -> Response:
    body = parse_body(await request.body(), TransferBody, "PullRequest")
    job = TransferRequest(name=body.model or body.name, insecure=body.insecure)
    return await _progress(request, subjects.REGISTRY_PULL, job, body.stream)


@router.post("/api/push", openapi_extra=documented(TransferBody, REMOTE))
async def push(request: Request) -> Response:
    body = parse_body(await request.body(), TransferBody, "PushRequest")
    if not (body.model or body.name):
        raise BadRequest("model is required")
    job = TransferRequest(name=body.model or body.name, insecure=body.insecure)
    return await _progress(request, subjects.REGISTRY_PUSH, job, body.stream)


async def _progress(request: Request, subject: str, job: Tracked, stream: bool | None) -> Response:
    """A registry job's progress as Ollama's NDJSON (or, with stream false, the last status); an
    error before any progress is an HTTP error, one after it an `{"error": …}` line."""
    progress = request.app.state.corral.follow(subject, job)
    first = await anext(progress)
    if first.error is not None:
        raise failure(first.error, first.code)
    if stream is False:
        last = first
        async for step in progress:
            last = step
        if last.error is not None:
            raise failure(last.error, last.code)
        return JSONResponse({"status": last.status})
    return StreamingResponse(_lines(first, progress), media_type="application/x-ndjson")


async def _lines(first: Progress, rest: AsyncIterator[Progress]) -> AsyncIterator[bytes]:
    async for progress in _chain(first, rest):
        if progress.error is not None:
            yield (json.dumps({"error": progress.error}) + "\n").encode()
        else:
            fields = progress.model_dump(exclude_none=True, exclude={"done", "code", "error"})
            yield (json.dumps(fields) + "\n").encode()


async def _chain(first: Progress, rest: AsyncIterator[Progress]) -> AsyncIterator[Progress]:
    yield first
    async for progress in rest:
        yield progress
