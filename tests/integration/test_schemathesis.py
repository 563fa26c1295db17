"""Schemathesis over the gateway's OpenAPI document, against a real stack over HTTP.

Every operation in /openapi.json gets generated cases: ones that fit the document (positive) and,
where there is a JSON body, ones that break it (negative). No answer may be a 5xx the document
does not intend, and every error body must be JSON in its API's flavour. Generated model names are
mostly unknown or invalid (a 404 or a 400); so that generations run too, half the positive cases of
the routes that generate (or show) name the stack's model instead, with their length capped: the
fuzz is of the gateway, not of how long the model talks. Pulls and pushes of valid names reach for a
remote registry that cannot be reached (no network): they must fail at once, not hang. Shrinking is
off and the seed fixed, so a run is the same every time and each failure is reported as found.
"""

from __future__ import annotations

import hashlib
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode

from services.gateway.errors import QUEUE_FULL
from tests.stack import MODEL, Stack
from tests.watch import DEADLINE

SEED = 20240607
EXAMPLES = 35  # per operation and mode: about 1,200 cases in all
MIN_CASES = 1_000
QUEUED_ROUTES = (
    "/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/v1/chat/completions",
    "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses",
)  # fmt: skip
# The only 5xx the gateway means to answer, each declared in the document (route: status, text;
# None: any text). A full queue (OLLAMA_MAX_QUEUE) is load shedding, on every route that queues; a
# pull or push whose remote registry cannot be reached (here: no network at all) is a 503 too. Any
# other 5xx (a service not answering, a crash, a bug) is a failure against a healthy stack.
INTENDED_5XX: dict[str, tuple[int, str | None]] = {
    **{path: (503, QUEUE_FULL) for path in QUEUED_ROUTES},
    "/api/pull": (503, None),
    "/api/push": (503, None),
}
# Half the positive cases of these routes name something that exists or is well formed: the
# stack's model (its answer capped through the fields named, None: options.num_predict), or for
# pull a valid name that no registry can be asked for. Delete and create keep their generated
# names, so the model stays in the store.
VALID_NAMES: dict[str, tuple[str, str]] = {
    "/api/pull": ("model", "fuzz/absent:latest"),
    "/api/push": ("model", MODEL),
    "/api/copy": ("source", MODEL),
}
REAL_MODEL_ROUTES: dict[str, tuple[str, ...] | None] = {
    "/api/generate": None,
    "/api/chat": None,
    "/api/embed": (),
    "/api/embeddings": (),
    "/api/show": (),
    "/v1/chat/completions": ("max_tokens", "max_completion_tokens"),
    "/v1/completions": ("max_tokens",),
    "/v1/embeddings": (),
    "/v1/messages": ("max_tokens",),
    "/v1/responses": ("max_output_tokens",),
}
MAX_TOKENS = 4
WELL_FORMED_DIGEST = "sha256:" + hashlib.sha256(b"fuzz").hexdigest()


def test_no_unintended_server_errors(stack: Stack) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 29
    findings: list[str] = []
    cases = 0
    for operation in operations:
        json_body = any(body.media_type == "application/json" for body in operation.body)
        for mode in (
            (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if json_body else (GenerationMode.POSITIVE,)
        ):
            ran, found = _fuzz(operation, mode)
            cases += ran
            findings += found
    assert not findings, f"{len(findings)} of {cases} cases failed:\n" + "\n".join(findings[:20])
    assert cases >= MIN_CASES


def _fuzz(operation: schemathesis.APIOperation, mode: GenerationMode) -> tuple[int, list[str]]:
    """Run `operation`'s generated cases: how many ran, and what was wrong."""
    findings: list[str] = []
    cases = 0

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        phases=[Phase.explicit, Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), real=st.booleans())
    def run(case: Case, real: bool) -> None:
        nonlocal cases
        if real and mode is GenerationMode.POSITIVE:
            _name_something(case)
        cases += 1
        problem = _problem(case)
        if problem is not None:
            findings.append(f"{operation.label} ({mode}): {problem}\n    {case.as_curl_command()}")

    run()
    return cases, findings


def _name_something(case: Case) -> None:
    """A name that exists or is valid in place of the generated one; an answer capped at MAX_TOKENS."""
    path = case.operation.path
    if path == "/v1/models/{name}":
        case.path_parameters = {"name": MODEL}
        return
    if path == "/api/blobs/{digest}":  # so that an upload goes through to the store (and mismatches)
        case.path_parameters = {"digest": WELL_FORMED_DIGEST}
        return
    if not isinstance(case.body, dict):
        return
    body: dict[str, Any] = case.body
    if path in VALID_NAMES:
        field, name = VALID_NAMES[path]
        body[field] = name
        body.pop("name", None)  # the deprecated alias would be read when `model` is empty
        return
    if path not in REAL_MODEL_ROUTES:
        return
    body["model"] = MODEL
    limits = REAL_MODEL_ROUTES[path]
    if limits is None:
        options = body.get("options")
        options = options if isinstance(options, dict) else {}
        options["num_predict"] = _capped(options.get("num_predict"))
        body["options"] = options
    elif limits:
        for field in limits:
            if field == limits[0] or field in body:
                body[field] = _capped(body.get(field))


def _capped(value: Any) -> int:
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_TOKENS
        else MAX_TOKENS
    )


def _problem(case: Case) -> str | None:
    """What is wrong with the gateway's answer to `case`, or None."""
    try:
        response = case.call(timeout=DEADLINE)
    except Exception as exc:  # a hang or a dropped connection is a finding too
        return f"no answer: {exc!r}"
    status = response.status_code
    if status >= 500 and not _intended(case, status, _error_message(case.operation.path, response)):
        return f"{status} {response.text[:300]}"
    if status >= 400 and case.method != "HEAD":
        if _error_message(case.operation.path, response) is None:
            return f"{status} not an error in this API's flavour: {response.text[:300]}"
    return None


def _intended(case: Case, status: int, message: str | None) -> bool:
    """Whether a 5xx is one the gateway means to answer here, and the document says so."""
    declared = str(status) in case.operation.definition.raw.get("responses", {})
    intended_status, text = INTENDED_5XX.get(case.operation.path, (0, None))
    return declared and status == intended_status and message is not None and text in (None, message)


def _error_message(path: str, response: schemathesis.Response) -> str | None:
    """The message of an error body in the flavour the path's API uses, or None if it is not one:
    Anthropic's under /v1/messages, OpenAI's elsewhere under /v1/, Ollama's everywhere else."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if path.startswith("/v1/messages"):
        error = body.get("error")
        if (
            body.get("type") != "error"
            or not isinstance(error, dict)
            or not isinstance(error.get("type"), str)
        ):
            return None
        message = error.get("message")
    elif path.startswith("/v1/"):
        error = body.get("error")
        if not isinstance(error, dict) or not isinstance(error.get("type"), str):
            return None
        message = error.get("message")
    else:
        if set(body) != {"error"}:
            return None
        message = body["error"]
    return message if isinstance(message, str) else None
