"""The app factory: lifespan (load + warm the model; release it in finally), routers, one error shape."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.protocol import APIError, ErrorInfo, ErrorResponse
from serving.routers import health, openai
from serving.settings import ServingSettings, get_settings
from serving.state import ServerState

log = logging.getLogger("serving")


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

    app = FastAPI(title="llmrack serving", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.llm = state
    app.include_router(health.router)
    app.include_router(openai.router)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        if exc.status >= 400:
            state.metrics.failed(exc.status)
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
        return _error(exc.status_code, ErrorInfo(message=str(exc.detail), type=kind), headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its traceback here; the client only learns that it failed.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        state.metrics.failed(500)
        return _error(500, ErrorInfo(message="internal server error", type="internal_error"))

    return app
