"""How many batch requests may be in flight: additive increase while the rack keeps up, halve on 429/503.

The limit grows by about one request per round trip while answers come back fine and the engines' queues are
empty (queue depth from Prometheus, when given), shrinks by half when the rack answers 429/503 (and pauses for its
Retry-After), and shrinks by a quarter whenever requests are seen waiting: then online traffic is already queueing
and batch lines must not add to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class Pace:
    def __init__(self, max_inflight: int, start: int = 2, queue_target: float = 0.0) -> None:
        if max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.max_inflight = max_inflight
        self.limit = float(min(start, max_inflight))
        self.queue_target = queue_target
        self.inflight = 0
        self.queue_ok = True
        self._paused_until = 0.0
        self._changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._changed:
            while True:
                pause = self._paused_until - time.monotonic()
                if pause <= 0 and self.inflight < int(self.limit):
                    self.inflight += 1
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=max(pause, 0.05) if pause > 0 else None)

    async def release(self) -> None:
        async with self._changed:
            self.inflight -= 1
            self._changed.notify_all()

    async def on_success(self) -> None:
        if self.queue_ok and self.limit < self.max_inflight:
            async with self._changed:
                self.limit = min(float(self.max_inflight), self.limit + 1.0 / self.limit)
                self._changed.notify_all()

    async def on_overload(self, retry_after: float | None) -> None:
        async with self._changed:
            self.limit = max(1.0, self.limit / 2)
            self._paused_until = max(self._paused_until, time.monotonic() + (retry_after or 1.0))

    async def on_queue_depth(self, waiting: float) -> None:
        self.queue_ok = waiting <= self.queue_target
        if not self.queue_ok:
            async with self._changed:
                self.limit = max(1.0, self.limit * 0.75)
