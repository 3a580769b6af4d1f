"""The OpenAI service: validation, tokenisation, limits, engine submission, response and stream shaping.

No HTTP here (the routers own that); everything a client can get wrong becomes an APIError with its status.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from serving.engine.async_engine import AsyncEngine
from serving.engine.core import EngineError
from serving.engine.sampling import SamplingParams
from serving.engine.sequence import FinishReason, RequestOutput
from serving.protocol import (
    APIError,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    SamplingFields,
    Usage,
    new_id,
    now,
)
from serving.state import ServerState

log = logging.getLogger("serving.api")

Disconnected = Callable[[], Awaitable[bool]]
ENGINE_FAILURE = "the request failed inside the engine"


class Stream:
    """A started streaming request: SSE lines to send, and a cleanup the response runs however it ends."""

    def __init__(self, lines: AsyncIterator[str], cleanup: Callable[[], None]) -> None:
        self.lines = lines
        self.cleanup = cleanup


def _sse(payload: str) -> str:
    return f"data: {payload}\n\n"


class _ChunkTemplate:
    """Renders one stream chunk per token without building a pydantic model each time (the hot path of SSE).

    The fixed part is rendered once by the pydantic model itself, so the output is byte-identical to
    `chunk.model_dump_json()`; only the text and the finish reason are spliced in.
    """

    TEXT, REASON = "\u0000TEXT\u0000", "\u0000REASON\u0000"

    def __init__(self, rendered: str) -> None:
        quoted_text, quoted_reason = json.dumps(self.TEXT), json.dumps(self.REASON)
        head, _, rest = rendered.partition(quoted_text)
        middle, _, tail = rest.partition(quoted_reason)
        self._parts = (f"data: {head}", middle, f"{tail}\n\n")

    def render(self, text: str, reason: str | None) -> str:
        head, middle, tail = self._parts
        return f"{head}{json.dumps(text, ensure_ascii=False)}{middle}{json.dumps(reason)}{tail}"


def _usage(out: RequestOutput) -> Usage:
    return Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                 total_tokens=out.prompt_tokens + out.completion_tokens)


def _finish(reason: FinishReason | None) -> str | None:
    return None if reason is None else reason.value


class OpenAIService:
    def __init__(self, state: ServerState, tenant: str | None = None) -> None:
        self.state = state
        self.tenant = tenant

    # ---- checks -----------------------------------------------------------------------------------------------
    def _engine(self) -> AsyncEngine:
        if self.state.draining:
            raise APIError(503, "the server is shutting down; retry on another replica", "service_unavailable",
                           code="draining")
        if not self.state.ready or self.state.aengine is None:
            raise APIError(503, "the model is still loading", "service_unavailable", code="loading")
        return self.state.aengine

    def _check_model(self, name: str) -> None:
        if name != self.state.name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {self.state.name!r}",
                           "invalid_request_error", param="model", code="model_not_found")

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.state.name, created=self.state.created,
                                         max_model_len=self.state.max_model_len)])

    # ---- prompts and parameters -------------------------------------------------------------------------------
    def _completion_prompt(self, req: CompletionRequest) -> list[int]:
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise APIError(400, "only one prompt per request is supported; send one request per prompt",
                               param="prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids: list[int] = self.state.tokenizer.encode(prompt)
        else:
            ids = [int(t) for t in prompt if isinstance(t, int)]
            if len(ids) != len(prompt):
                raise APIError(400, "a token prompt must be a list of integers", param="prompt")
            vocab = self.state.engine.vocab_size if self.state.engine else 0
            if any(t < 0 or t >= vocab for t in ids):
                raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        if not ids:
            raise APIError(400, "the prompt is empty", param="prompt")
        return ids

    def _chat_prompt(self, req: ChatCompletionRequest) -> list[int]:
        try:
            messages = [{"role": m.role, "content": m.text()} for m in req.messages]
            text = self.state.tokenizer.apply_chat_template(
                messages, add_generation_prompt=req.add_generation_prompt, tokenize=False
            )
        except Exception as exc:  # jinja errors from the model's own template, unsupported content parts
            raise APIError(400, f"the messages cannot be rendered with the chat template: {exc}",
                           param="messages") from None
        ids: list[int] = self.state.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def _params(self, req: SamplingFields, max_tokens: int | None, prompt_len: int) -> SamplingParams:
        limit = self.state.max_model_len
        if prompt_len >= limit:
            raise APIError(400, f"this model's maximum context length is {limit} tokens; the prompt has "
                                f"{prompt_len} tokens", param="prompt" if isinstance(req, CompletionRequest)
                           else "messages", code="context_length_exceeded")
        if max_tokens is None:
            max_tokens = limit - prompt_len
        elif prompt_len + max_tokens > limit:
            raise APIError(400, f"this model's maximum context length is {limit} tokens; you requested "
                                f"{prompt_len + max_tokens} ({prompt_len} in the prompt, {max_tokens} to generate)",
                           param="max_tokens", code="context_length_exceeded")
        try:
            return SamplingParams(
                max_tokens=max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                top_k=max(req.top_k, 0),
                seed=req.seed,
                stop=tuple(req.stop or ()),
                stop_token_ids=tuple(req.stop_token_ids or ()),
                ignore_eos=req.ignore_eos,
                min_tokens=req.min_tokens,
                skip_special_tokens=req.skip_special_tokens,
            )
        except ValueError as exc:
            raise APIError(400, str(exc)) from None

    def _submit(self, engine: AsyncEngine, prompt: list[int], params: SamplingParams, request_id: str,
                priority: int = 0) -> None:
        if self.tenant is not None:
            self.state.metrics.tag(request_id, self.tenant)
        try:
            engine.submit(prompt, params, request_id, priority)
        except EngineError as exc:
            self.state.metrics.untag(request_id)
            if exc.status == 429:
                raise APIError(429, str(exc), "rate_limit_error", code="queue_full",
                               headers={"Retry-After": "1"}) from None
            raise APIError(exc.status, str(exc)) from None
        self.state.inflight.add(request_id)

    # ---- endpoints --------------------------------------------------------------------------------------------
    async def completion(self, req: CompletionRequest, disconnected: Disconnected) -> CompletionResponse | Stream:
        engine = self._engine()
        self._check_model(req.model)
        prompt = self._completion_prompt(req)
        params = self._params(req, req.max_tokens, len(prompt))
        rid = new_id("cmpl")
        self._submit(engine, prompt, params, rid, req.priority)
        created = now()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._stream(engine, rid, self._completion_chunks(engine, rid, req.model, created, include_usage))
        text, last = await self._collect(engine, rid, disconnected)
        return CompletionResponse(
            id=rid, created=created, model=req.model,
            choices=[CompletionChoice(text=text, finish_reason=_finish(last.finish_reason))],
            usage=_usage(last),
        )

    async def chat(self, req: ChatCompletionRequest, disconnected: Disconnected) -> ChatCompletionResponse | Stream:
        engine = self._engine()
        self._check_model(req.model)
        prompt = self._chat_prompt(req)
        params = self._params(req, req.max_completion_tokens or req.max_tokens, len(prompt))
        rid = new_id("chatcmpl")
        self._submit(engine, prompt, params, rid, req.priority)
        created = now()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._stream(engine, rid, self._chat_chunks(engine, rid, req.model, created, include_usage))
        text, last = await self._collect(engine, rid, disconnected)
        return ChatCompletionResponse(
            id=rid, created=created, model=req.model,
            choices=[ChatChoice(message=ChatResponseMessage(content=text), finish_reason=_finish(last.finish_reason))],
            usage=_usage(last),
        )

    # ---- plumbing ---------------------------------------------------------------------------------------------
    def _done(self, rid: str) -> None:
        self.state.inflight.discard(rid)

    async def _collect(self, engine: AsyncEngine, rid: str, disconnected: Disconnected) -> tuple[str, RequestOutput]:
        """Gather a non-streaming result; a client that hangs up cancels its request in the engine."""
        parts: list[str] = []
        last: list[RequestOutput] = []

        async def gather() -> None:
            async for out in engine.stream(rid):
                parts.append(out.delta_text)
                last.append(out)

        task = asyncio.create_task(gather())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.5)
                if done:
                    break
                if await disconnected():
                    log.info("client went away: cancelling %s", rid)
                    task.cancel()
                    raise APIError(499, "client closed the request", "client_closed")
            task.result()
        finally:
            if not task.done():
                task.cancel()
            self._done(rid)
        out = last[-1]
        if out.finish_reason is FinishReason.error:
            raise APIError(500, ENGINE_FAILURE, "internal_error")
        return "".join(parts), out

    def _stream(self, engine: AsyncEngine, rid: str, lines: AsyncIterator[str]) -> Stream:
        def cleanup() -> None:
            if rid in self.state.inflight:
                engine.engine.abort(rid)  # no-op when it already finished
                self._done(rid)
        return Stream(lines, cleanup)

    def _completion_chunks(self, engine: AsyncEngine, rid: str, model: str, created: int,
                           include_usage: bool) -> AsyncIterator[str]:
        template = _ChunkTemplate(CompletionResponse(id=rid, created=created, model=model, choices=[
            CompletionChoice(text=_ChunkTemplate.TEXT, finish_reason=_ChunkTemplate.REASON)]).model_dump_json())

        def usage_chunk(usage: Usage) -> str:
            return CompletionResponse(id=rid, created=created, model=model, choices=[], usage=usage).model_dump_json()

        return self._chunks(engine, rid, template, usage_chunk if include_usage else None)

    def _chat_chunks(self, engine: AsyncEngine, rid: str, model: str, created: int,
                     include_usage: bool) -> AsyncIterator[str]:
        first = ChatCompletionChunk(id=rid, created=created, model=model, choices=[
            ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))]).model_dump_json()
        template = _ChunkTemplate(ChatCompletionChunk(id=rid, created=created, model=model, choices=[
            ChatChunkChoice(delta=ChatDelta(content=_ChunkTemplate.TEXT), finish_reason=_ChunkTemplate.REASON)
        ]).model_dump_json())

        def usage_chunk(usage: Usage) -> str:
            return ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=usage).model_dump_json()

        return self._chunks(engine, rid, template, usage_chunk if include_usage else None, first)

    async def _chunks(self, engine: AsyncEngine, rid: str, template: _ChunkTemplate,
                      usage_chunk: Callable[[Usage], str] | None, first: str | None = None) -> AsyncIterator[str]:
        """SSE lines of one request, completions and chat alike: an optional opening chunk, one chunk per
        output, the usage chunk when asked for, then [DONE]; the request is released however it ends."""
        last = None
        try:
            if first is not None:
                yield _sse(first)
            async for out in engine.stream(rid):
                last = out
                if out.finish_reason is FinishReason.error:
                    yield _sse(ErrorResponse.model_validate({"error": {"message": ENGINE_FAILURE,
                                                                       "type": "internal_error"}}).model_dump_json())
                    break
                if out.delta_text or out.new_token_ids or out.finished:
                    yield template.render(out.delta_text, _finish(out.finish_reason))
            if usage_chunk is not None and last is not None:
                yield _sse(usage_chunk(_usage(last)))
            yield "data: [DONE]\n\n"
        finally:
            self._done(rid)
