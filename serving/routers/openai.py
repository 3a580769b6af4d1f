"""The OpenAI-compatible endpoints: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from serving.protocol import APIError, ChatCompletionRequest, CompletionRequest
from serving.service import OpenAIService, Stream
from serving.state import ServerState


def require_api_key(request: Request) -> None:
    state: ServerState = request.app.state.llm
    if not state.keys.check(request.headers.get("authorization")):
        raise APIError(401, "a valid API key is required: send 'Authorization: Bearer <key>'",
                       "authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


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
    return OpenAIService(request.app.state.llm)


def _respond(result: Any) -> Response:
    if isinstance(result, Stream):
        return _SSEResponse(result)
    return JSONResponse(result.model_dump(mode="json"))


@router.get("/models")
async def models(request: Request) -> JSONResponse:
    return JSONResponse(_service(request).models().model_dump(mode="json"))


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    return _respond(await _service(request).completion(body, request.is_disconnected))


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return _respond(await _service(request).chat(body, request.is_disconnected))


