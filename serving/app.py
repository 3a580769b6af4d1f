"""The app factory: lifespan (load + warm the model; release it in finally), routers, one error shape.

The OpenAPI document is served at /openapi.json (as vLLM does, without the API key: it describes the public
OpenAI surface and nothing of the deployment) and lists, per operation, every status the server answers, each
error in the OpenAI error shape (serving.protocol.ERROR_DESCRIPTIONS).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmrack import __version__
from serving.protocol import APIError, ErrorInfo, ErrorResponse
from serving.routers import health, openai
from serving.settings import ServingSettings, get_settings
from serving.state import ServerState

log = logging.getLogger("serving")

# The largest request body accepted (413 above it, checked by Content-Length and while a chunked body arrives, so a
# client cannot make the server buffer an unbounded body). A prompt filling a 1M-token context is ~4 MB of text.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _error(status: int, info: ErrorInfo, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=info).model_dump(), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # The top-level field, as OpenAI reports it (pydantic adds union branch names such as "prompt.str").
    param = loc[0] if loc else None
    # Only pydantic's message and the field path: never echo the input back (it may hold a prompt or a secret).
    return (f"{param}: {first.get('msg', 'invalid value')}" if param else str(first.get("msg", "invalid request")),
            param)


def _too_large(state: ServerState) -> JSONResponse:
    state.metrics.failed(413)
    return _error(413, ErrorInfo(message=f"the request body is larger than {MAX_REQUEST_BYTES} bytes",
                                 type="invalid_request_error", code="request_too_large"))


class _BodyLimit:
    """413 in the error shape for a body above max_bytes: by Content-Length before anything is read, and by
    counting a chunked body as it arrives (the endpoint's body read then fails with a 413 HTTPException).

    Starlette's own RequestBodyLimitMiddleware (FastAPI's max_body_size) answers text/plain over any response
    the app sends, so the OpenAI error shape would be lost.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, state: ServerState) -> None:
        self.app, self.max_bytes, self.state = app, max_bytes, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(self.state)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise StarletteHTTPException(413)
            return message

        await self.app(scope, limited, send)


def create_app(settings: ServingSettings | None = None, state: ServerState | None = None) -> FastAPI:
    settings = settings or get_settings()
    state = state or ServerState(settings)
    if not state.keys.enabled:
        log.warning("NO API KEYS: this server is UNAUTHENTICATED; anyone who reaches it can use it "
                    "(pass --api-key-file FILE)")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncio

        loading = asyncio.create_task(state.load())
        try:
            yield
        finally:
            if not loading.done():
                await asyncio.wait({loading})
            state.shutdown()

    app = FastAPI(title="llmrack serving", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.add_middleware(_BodyLimit, max_bytes=MAX_REQUEST_BYTES, state=state)
    app.state.llm = state
    app.include_router(health.router)
    app.include_router(openai.router)

    # Probes are not requests: a load balancer asks /ready every few seconds while a node loads, and counted as
    # failed requests those 503s would show every restart as errors (a canary judged just after its restart would
    # be rolled back for them).
    probes = frozenset(getattr(route, "path", "") for route in health.router.routes)

    def count_failure(request: Request, status: int) -> None:
        if request.url.path not in probes:
            state.metrics.failed(status)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        if exc.status >= 400:
            count_failure(request, exc.status)
        return _error(exc.status, exc.info, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI says 422; OpenAI clients expect 400 with the error shape.
        message, param = _validation_message(exc)
        state.metrics.failed(400)
        return _error(400, ErrorInfo(message=message, type="invalid_request_error", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 413:
            return _too_large(state)
        return _error(exc.status_code, ErrorInfo(message=str(exc.detail), type=kind), headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback here; the client only learns that it failed.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        count_failure(request, 500)
        return _error(500, ErrorInfo(message="internal server error", type="internal_error"))

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, made true to the server: no 422 (answered as 400), bearer auth on /v1."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                          description="OpenAI-compatible serving by llmrack; every error is {\"error\": {...}}")
        for path, operations in doc["paths"].items():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                if path.startswith("/v1/"):
                    operation["security"] = [{"bearer": []}]
        schemas = doc.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        doc.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "a key from the server's --api-key-file"}}
        app.openapi_schema = doc
    return app.openapi_schema
