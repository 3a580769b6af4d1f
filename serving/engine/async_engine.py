"""Bridge between the engine thread and asyncio: one queue per request, one loop wake-up per engine step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from serving.engine.core import Engine
from serving.engine.sampling import SamplingParams
from serving.engine.sequence import RequestOutput


def _merge(a: RequestOutput, b: RequestOutput) -> RequestOutput:
    return RequestOutput(
        request_id=a.request_id,
        delta_text=a.delta_text + b.delta_text,
        new_token_ids=a.new_token_ids + b.new_token_ids,
        prompt_tokens=b.prompt_tokens,
        completion_tokens=b.completion_tokens,
        finished=b.finished,
        finish_reason=b.finish_reason,
        error=b.error,
    )


class AsyncEngine:
    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self._queues: dict[str, asyncio.Queue[RequestOutput]] = {}
        engine.on_outputs = self._from_engine_thread

    def _from_engine_thread(self, outputs: list[RequestOutput]) -> None:
        # One call_soon_threadsafe per step (not per token): waking the event loop costs a syscall.
        self.loop.call_soon_threadsafe(self._dispatch, outputs)

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            queue = self._queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    def submit(self, prompt_ids: list[int], params: SamplingParams, request_id: str, priority: int = 0) -> None:
        """Queue the request now (so QueueFullError/PromptTooLongError surface before any response starts)."""
        self._queues[request_id] = asyncio.Queue()
        try:
            self.engine.submit(prompt_ids, params, request_id, priority)
        except Exception:
            del self._queues[request_id]
            raise

    async def stream(self, request_id: str) -> AsyncIterator[RequestOutput]:
        """Outputs of a submitted request until it finishes; leaving early (client gone) aborts it in the engine."""
        queue = self._queues[request_id]
        finished = False
        try:
            while not finished:
                out = await queue.get()
                # When the client or the loop fell behind, several steps' outputs are waiting: send them as one
                # chunk (one socket write) instead of one per token, so a slow consumer cannot slow the rest.
                while not out.finished and not queue.empty():
                    out = _merge(out, queue.get_nowait())
                finished = out.finished
                yield out
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self.engine.abort(request_id)
