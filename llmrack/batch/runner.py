"""Works the jobs: every pending line is sent once at the pace the rack allows and its answer stored at once.

One asyncio task per running job; all jobs share one `Pace`, so together they never take more of the rack than
it has free. A (re)started service picks up every job that had not ended, from its lines still `pending`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from llmrack.batch.pace import Pace
from llmrack.batch.protocol import error_line, output_line
from llmrack.batch.store import PendingLine, Store, new_id
from llmrack.batch.upstream import RETRY_STATUSES, Upstream

log = logging.getLogger("llmrack.batch")


class Runner:
    def __init__(self, store: Store, upstream: Upstream, pace: Pace, priority: int, retry_for_s: float,
                 queue_poll_s: float = 2.0, on_retry: Callable[[str], None] = lambda reason: None) -> None:
        self.store = store
        self.upstream = upstream
        self.pace = pace
        self.priority = priority
        self.retry_for_s = retry_for_s
        self.queue_poll_s = queue_poll_s
        self.on_retry = on_retry
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for batch_id, status in self.store.active_batches():
            if status == "cancelling":
                self.store.finish(batch_id, "cancelled")
            elif status == "finalizing":
                self.store.finish(batch_id, "completed")
            else:
                log.info("resuming %s", batch_id)
                self.launch(batch_id)
        if self.upstream.prometheus:
            self._watch = asyncio.create_task(self._watch_queue())

    async def stop(self) -> None:
        tasks = list(self._jobs.values()) + ([self._watch] if self._watch else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def launch(self, batch_id: str) -> None:
        self._jobs[batch_id] = asyncio.create_task(self._run(batch_id), name=batch_id)

    async def cancel(self, batch_id: str) -> None:
        """Stop sending at once; lines that already have an answer stay in the output."""
        if not self.store.set_status(batch_id, "cancelling"):
            return
        task = self._jobs.pop(batch_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.store.finish(batch_id, "cancelled")

    async def _run(self, batch_id: str) -> None:
        expires = self.store.expires_at(batch_id)
        expired = False
        try:
            async with asyncio.TaskGroup() as group:
                for line in self.store.pending_lines(batch_id):
                    await self.pace.acquire()
                    if expires is not None and time.time() >= expires:
                        await self.pace.release()
                        expired = True
                        break
                    group.create_task(self._line(batch_id, line))
            if expired:
                self.store.expire(batch_id)
                log.info("%s expired", batch_id)
            elif self.store.set_status(batch_id, "finalizing"):
                self.store.finish(batch_id, "completed")
                log.info("%s completed", batch_id)
        except Exception:
            # The job stays in_progress with its lines' state on disk; a restarted service resumes it.
            log.exception("%s stopped", batch_id)
        finally:
            if self._jobs.get(batch_id) is asyncio.current_task():
                del self._jobs[batch_id]

    async def _line(self, batch_id: str, line: PendingLine) -> None:
        try:
            await self._send(batch_id, line)
        finally:
            await self.pace.release()

    async def _send(self, batch_id: str, line: PendingLine) -> None:
        body: dict[str, Any] = dict(line.body)
        if self.priority:
            body["priority"] = self.priority
        line_id = new_id("batch_req_")
        deadline = time.monotonic() + self.retry_for_s
        delay = 0.5
        while True:
            problem: str
            try:
                answer = await self.upstream.send(line.url, body)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                retry_after = None
                reason = "transport"
            else:
                if answer.status not in RETRY_STATUSES:
                    ok = 200 <= answer.status < 300
                    usage = answer.body.get("usage") if ok and isinstance(answer.body, dict) else None
                    usage = usage if isinstance(usage, dict) else {}
                    self.store.record(batch_id, line.idx, ok,
                                      output_line(line_id, line.custom_id, answer.status, answer.request_id,
                                                  answer.body),
                                      int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
                    if ok:
                        await self.pace.on_success()
                    return
                problem = f"HTTP {answer.status}"
                retry_after = answer.retry_after
                reason = f"http_{answer.status}"
                await self.pace.on_overload(retry_after)
            if time.monotonic() + delay > deadline:
                self.store.record(batch_id, line.idx, False, error_line(
                    line_id, line.custom_id, "upstream_unavailable",
                    f"no answer from the rack after retrying for {self.retry_for_s:.0f} s; last: {problem}"))
                return
            self.on_retry(reason)
            # Give way: the rack is busy or a replica is away; the same line goes again after a pause.
            await asyncio.sleep(max(delay, retry_after or 0.0))
            delay = min(delay * 2, 10.0)

    async def _watch_queue(self) -> None:
        while True:
            waiting = await self.upstream.queue_depth()
            if waiting is not None:
                await self.pace.on_queue_depth(waiting)
            await asyncio.sleep(self.queue_poll_s)
