"""The HTTP surface: OpenAI's Files and Batches endpoints, /metrics and /health; the logic lives in the store,
the checks in `jsonl`, the work in the runner."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmrack.batch import jsonl
from llmrack.batch.metrics import BatchMetrics
from llmrack.batch.pace import Pace
from llmrack.batch.protocol import (
    COMPLETION_WINDOWS,
    ENDPOINTS,
    Batch,
    BatchAPIError,
    BatchList,
    CreateBatch,
    ErrorInfo,
    ErrorResponse,
    FileDeleted,
    FileList,
    FileObject,
)
from llmrack.batch.runner import Lease, Runner, default_holder
from llmrack.batch.settings import BatchSettings
from llmrack.batch.store import Store
from llmrack.batch.tenants import Tenants
from llmrack.batch.upstream import Upstream, UpstreamError

log = logging.getLogger("llmrack.batch")


def _error(status: int, info: ErrorInfo) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(ErrorResponse(error=info).model_dump(exclude_none=True), status_code=status, headers=headers)


def _read_key(settings: BatchSettings) -> str | None:
    if settings.upstream_api_key_file is None:
        return None
    keys = [ln.strip() for ln in settings.upstream_api_key_file.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
    return keys[0] if keys else None


def _tenant(request: Request) -> str:
    found = request.app.state.tenants.tenant_for(request.headers.get("authorization"))
    if found is None:
        raise BatchAPIError(401, "no or wrong API key: send 'Authorization: Bearer <key>'",
                            type="authentication_error", code="invalid_api_key")
    return str(found)


# Module level: FastAPI resolves the (string) annotations of the endpoints against this module's names.
Tenant = Annotated[str, Depends(_tenant)]


def create_app(settings: BatchSettings) -> FastAPI:
    tenants = Tenants.from_file(settings.api_key_file)
    store = Store(settings.state)
    pace = Pace(settings.max_inflight)
    upstream = Upstream(settings.upstream, _read_key(settings), settings.prometheus,
                        ca_file=settings.upstream_ca_file)
    runner = Runner(store, upstream, pace, settings.priority, settings.retry_for_s,
                    on_retry=lambda reason: metrics.retries.labels(reason).inc(),
                    lease=Lease(store, default_holder(settings.port), settings.lease_s))
    metrics = BatchMetrics(store, pace, runner)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runner.start()
        try:
            yield
        finally:
            await runner.stop()
            await upstream.close()
            store.close()

    app = FastAPI(title="llmrack batch", lifespan=lifespan)
    app.state.tenants = tenants

    @app.exception_handler(BatchAPIError)
    async def _api_error(request: Request, exc: BatchAPIError) -> JSONResponse:
        return _error(exc.status, exc.info)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        return _error(400, ErrorInfo(message=f"{param or 'body'}: {first['msg']}", param=param or None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, ErrorInfo(message=str(exc.detail), type="invalid_request_error"))

    def not_found(kind: str, ident: str) -> BatchAPIError:
        return BatchAPIError(404, f"no {kind} {ident!r} for this API key", code="not_found", param="id")

    async def served_models() -> set[str]:
        try:
            return await upstream.models()
        except UpstreamError as exc:
            raise BatchAPIError(503, f"{exc}; the models of a batch are checked against the rack's, retry when it "
                                     "answers", type="service_unavailable", code="upstream_unavailable") from None

    # ---- files --------------------------------------------------------------------------------------------------
    @app.post("/v1/files", response_model=FileObject)
    async def upload(who: Tenant, file: Annotated[UploadFile, File()],
                     purpose: Annotated[str, Form()]) -> FileObject:
        if purpose != "batch":
            raise BatchAPIError(400, f"purpose {purpose!r} is not supported here; use purpose=\"batch\"",
                                param="purpose", code="invalid_purpose")
        data = await file.read(settings.max_file_bytes + 1)
        lines = jsonl.parse(data, settings.max_file_bytes)
        jsonl.check_models(lines, await served_models())
        return store.add_file(who, file.filename or "batch.jsonl", purpose, data)

    @app.get("/v1/files", response_model=FileList)
    def list_files(who: Tenant, purpose: str | None = None) -> FileList:
        return FileList(data=store.list_files(who, purpose))

    @app.get("/v1/files/{file_id}", response_model=FileObject)
    def get_file(who: Tenant, file_id: str) -> FileObject:
        found = store.get_file(who, file_id)
        if found is None:
            raise not_found("file", file_id)
        return found

    @app.get("/v1/files/{file_id}/content")
    def file_content(who: Tenant, file_id: str) -> Response:
        content = store.file_content(who, file_id)
        if content is None:
            raise not_found("file", file_id)
        return Response(content, media_type="application/jsonl")

    @app.delete("/v1/files/{file_id}", response_model=FileDeleted)
    def delete_file(who: Tenant, file_id: str) -> FileDeleted:
        if not store.delete_file(who, file_id):
            raise not_found("file", file_id)
        return FileDeleted(id=file_id, deleted=True)

    # ---- batches ------------------------------------------------------------------------------------------------
    @app.post("/v1/batches", response_model=Batch)
    async def create_batch(who: Tenant, req: CreateBatch) -> Batch:
        if req.endpoint not in ENDPOINTS:
            raise BatchAPIError(400, f"endpoint {req.endpoint!r} is not supported; use one of {', '.join(ENDPOINTS)}",
                                param="endpoint", code="invalid_endpoint")
        if req.completion_window not in COMPLETION_WINDOWS:
            raise BatchAPIError(400, f"completion_window {req.completion_window!r} is not supported; use "
                                     f"{', '.join(COMPLETION_WINDOWS)}", param="completion_window")
        info = store.get_file(who, req.input_file_id)
        content = store.file_content(who, req.input_file_id)
        if info is None or content is None:
            raise not_found("file", req.input_file_id)
        if info.purpose != "batch":
            raise BatchAPIError(400, f"file {req.input_file_id!r} has purpose {info.purpose!r}; upload the input "
                                     "with purpose=\"batch\"", param="input_file_id", code="invalid_file")
        lines = jsonl.parse(content, settings.max_file_bytes)
        jsonl.check_endpoint(lines, req.endpoint)
        # Checked again: the rack may have changed models since the upload.
        jsonl.check_models(lines, await served_models())
        batch_id = store.add_batch(who, req.endpoint, req.input_file_id, req.completion_window, req.metadata, lines)
        runner.launch(batch_id)
        created = store.get_batch(who, batch_id)
        assert created is not None
        return created

    @app.get("/v1/batches", response_model=BatchList)
    def list_batches(who: Tenant, after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=100)] = 20) -> BatchList:
        data, more = store.list_batches(who, after, limit)
        return BatchList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                         has_more=more)

    @app.get("/v1/batches/{batch_id}", response_model=Batch)
    def get_batch(who: Tenant, batch_id: str) -> Batch:
        found = store.get_batch(who, batch_id)
        if found is None:
            raise not_found("batch", batch_id)
        return found

    @app.post("/v1/batches/{batch_id}/cancel", response_model=Batch)
    async def cancel_batch(who: Tenant, batch_id: str) -> Batch:
        if store.get_batch(who, batch_id) is None:
            raise not_found("batch", batch_id)
        await runner.cancel(batch_id)
        found = store.get_batch(who, batch_id)
        assert found is not None
        return found

    # ---- operations ---------------------------------------------------------------------------------------------
    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    def health() -> dict[str, str]:
        # Both answer the API; "active" holds the store's runner lease and sends the lines, "standby" waits for it.
        return {"status": "ok", "runner": "active" if runner.active else "standby"}

    return app
