"""Bridge between the engine thread and asyncio: one queue per request, one loop wake-up per engine step."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from serving.engine.core import Engine
from serving.engine.sampling import SamplingParams
from serving.engine.sequence import RequestOutput


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

    def submit(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> None:
        """Queue the request now (so QueueFullError/PromptTooLongError surface before any response starts)."""
        self._queues[request_id] = asyncio.Queue()
        try:
            self.engine.submit(prompt_ids, params, request_id)
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
                finished = out.finished
                yield out
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self.engine.abort(request_id)
