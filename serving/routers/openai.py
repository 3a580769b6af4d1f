"""The OpenAI-compatible endpoints: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from serving.protocol import (
    APIError,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelList,
    error_responses,
)
from serving.service import OpenAIService, Stream
from serving.state import ServerState


def require_api_key(request: Request) -> None:
    state: ServerState = request.app.state.llm
    if not state.keys.enabled:
        return
    caller = state.keys.identify(request.headers.get("authorization"))
    if caller is None:
        raise APIError(401, "a valid API key is required: send 'Authorization: Bearer <key>'",
                       "authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    # The tenant (never the key) travels with the request: usage is counted per tenant.
    request.state.tenant = caller.tenant


router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], responses=error_responses(401, 503))

# Every status a generation request can get besides 200 (401 and 503 come from the router).
_GENERATION_ERRORS = error_responses(400, 404, 413, 429, 500)


def _ok(model: type[BaseModel], stream_chunk: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """The 200 response: JSON, or with `"stream": true` Server-Sent Events of `data: <chunk JSON>` lines."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    if stream_chunk is not None:
        # Before OpenAPI 3.2, `schema` of an event stream describes one event.
        content["text/event-stream"] = {"schema": {
            "type": "object", "required": ["data"],
            "properties": {"data": {"type": "string", "description": f"a {stream_chunk.__name__} as JSON; the last "
                                                                     "event is [DONE]"}}}}
    return {200: {"model": model, "content": content, "description": "the result (streamed with stream=true)"}}


class _SSEResponse(StreamingResponse):
    """A stream whose cleanup runs however the response ends, even if the body was never started."""

    def __init__(self, stream: Stream) -> None:
        super().__init__(stream.lines, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._cleanup = stream.cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._cleanup()


def _service(request: Request) -> OpenAIService:
    return OpenAIService(request.app.state.llm, tenant=getattr(request.state, "tenant", None))


def _respond(result: Any) -> Response:
    if isinstance(result, Stream):
        return _SSEResponse(result)
    return JSONResponse(result.model_dump(mode="json"))


@router.get("/models", responses=_ok(ModelList))
async def models(request: Request) -> JSONResponse:
    return JSONResponse(_service(request).models().model_dump(mode="json"))


@router.post("/completions", responses={**_ok(CompletionResponse, CompletionResponse), **_GENERATION_ERRORS})
async def completions(body: CompletionRequest, request: Request) -> Response:
    return _respond(await _service(request).completion(body, request.is_disconnected))


@router.post("/chat/completions",
             responses={**_ok(ChatCompletionResponse, ChatCompletionChunk), **_GENERATION_ERRORS})
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return _respond(await _service(request).chat(body, request.is_disconnected))


