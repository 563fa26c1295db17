"""The gateway's error tree and its one mapping to HTTP: `{"error": "..."}` with a status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from services.gateway import measure
from services.gateway.error_bodies import error_body
from services.gateway.guard import MAX_BODY, BodyTooLarge
from services.protocol.messages import ErrorCode
from services.telemetry import log_event

log = logging.getLogger("corral.gateway")

QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"


class ApiError(Exception):
    """A request that ends with an Ollama-style error body."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class QueueFull(ApiError):
    status = 503

    def __init__(self) -> None:
        super().__init__(QUEUE_FULL)


class ClientGone(ApiError):
    """The client went away while its request waited (Ollama answers 499)."""

    status = 499

    def __init__(self) -> None:
        super().__init__("request canceled")


class Unavailable(ApiError):
    """A service behind the gateway did not answer."""

    status = 503


# The wire's error codes as HTTP statuses: the one place they become statuses.
STATUS: dict[ErrorCode, int] = {
    "invalid": 400,
    "not_found": 404,
    "too_large": 413,
    "unavailable": 503,
    "internal": 500,
}


def failure(message: str, code: ErrorCode) -> ApiError:
    """An error a service reported, as the ApiError the gateway answers with."""
    return ApiError(message, STATUS[code])


def error_response(request: Request, status: int, message: str) -> JSONResponse:
    """An error as the route's API flavour words it (error_bodies), counted by status and
    logged as one `error_response` line: method, path, status and the error text, never the
    body. An exception no handler maps is not answered here: uvicorn logs its traceback."""
    path = request.url.path
    measure.failed_response(status)
    level = logging.ERROR if status >= 500 else logging.INFO
    log_event(log, "error_response", level, method=request.method, path=path, status=status, error=message)
    return JSONResponse(error_body(status, message, path), status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status, exc.message)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, _: BodyTooLarge) -> JSONResponse:
        return error_response(request, 413, f"request body too large: at most {MAX_BODY} bytes")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, str(exc.detail).lower())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = str(exc.errors()[0].get("msg", "invalid request"))
        return error_response(request, 400, message)
