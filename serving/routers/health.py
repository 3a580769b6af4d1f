"""/health (alive), /ready (loaded, warmed, not draining), /metrics (Prometheus). Never behind auth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from serving.protocol import APIError, error_responses
from serving.state import ServerState

router = APIRouter()


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model: str


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.llm
    return state


@router.get("/health", responses={200: {"model": Health}, **error_responses(503)})
async def health(request: Request) -> JSONResponse:
    state = _state(request)
    if state.load_error:
        # The process is alive but will never serve: let the orchestrator restart it.
        raise APIError(503, f"the model failed to load: {state.load_error}", "service_unavailable",
                       code="load_failed")
    return JSONResponse({"status": "ok"})


@router.get("/ready", responses={200: {"model": Ready}, **error_responses(503)})
async def ready(request: Request) -> JSONResponse:
    state = _state(request)
    if state.draining:
        raise APIError(503, "draining", "service_unavailable", code="draining")
    if not state.ready:
        raise APIError(503, state.load_error or "loading", "service_unavailable", code="loading")
    return JSONResponse({"status": "ready", "model": state.name})


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text exposition format"}})
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
