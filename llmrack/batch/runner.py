"""Works the jobs: every pending line is sent once at the pace the rack allows and its answer stored at once.

One asyncio task per running job; all jobs share one `Pace`, so together they never take more of the rack than
it has free. A (re)started service picks up every job that had not ended, from its lines still `pending`.

Only the holder of the store's runner lease works jobs (`Lease`): with several services on one store, the others
serve the API and stand by, and one of them takes over the jobs, from their pending lines, once the active one's
lease has expired (it died or lost the database). The holder renews every `tick_s`; it sends no line once its own
clock says the lease may have expired (the lease's end on its monotonic clock, counted from before the renewal
was sent, comes before the database's), and the database stores an answer only from the lease's holder.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx

from llmrack.batch.pace import Pace
from llmrack.batch.protocol import error_line, output_line
from llmrack.batch.settings import DEFAULT_LEASE_S
from llmrack.batch.store import PendingLine, Store, new_id
from llmrack.batch.upstream import RETRY_STATUSES, Upstream

log = logging.getLogger("llmrack.batch")


def default_holder(port: int) -> str:
    """This service's name on the lease: the same after a restart on this host and port, so a restarted service
    takes its jobs back at once instead of waiting for its own old lease to expire."""
    return f"{socket.gethostname()}:{port}"


class LeaseLost(Exception):
    """The runner lease may have expired: this service sends no more lines."""


class Lease:
    """The store's runner lease as seen by one service."""

    def __init__(self, store: Store, holder: str, ttl_s: float = DEFAULT_LEASE_S) -> None:
        if ttl_s <= 0:
            raise ValueError("the lease must last more than 0 s")
        self.store = store
        self.holder = holder
        self.ttl_s = ttl_s
        self._until = 0.0  # monotonic

    def held(self) -> bool:
        return time.monotonic() < self._until

    def renew(self) -> bool:
        """Take or renew the lease; on a database error the lease runs out at the end already known."""
        sent = time.monotonic()
        try:
            got = self.store.hold_lease(self.holder, self.ttl_s)
        except Exception as exc:
            log.warning("cannot renew the runner lease: %s", exc)
            return self.held()
        # 10 % short of the database's end: clocks that run slightly apart still never overlap.
        self._until = sent + 0.9 * self.ttl_s if got else 0.0
        return got

    def release(self) -> None:
        if self.held():
            self._until = 0.0
            try:
                self.store.release_lease(self.holder)
            except Exception as exc:
                log.warning("cannot release the runner lease (it ends by expiry): %s", exc)


class Runner:
    def __init__(self, store: Store, upstream: Upstream, pace: Pace, priority: int, retry_for_s: float,
                 queue_poll_s: float = 2.0, on_retry: Callable[[str], None] = lambda reason: None,
                 lease: Lease | None = None) -> None:
        self.store = store
        self.upstream = upstream
        self.pace = pace
        self.priority = priority
        self.retry_for_s = retry_for_s
        self.queue_poll_s = queue_poll_s
        self.on_retry = on_retry
        self.lease = lease or Lease(store, default_holder(0))
        # Renew well inside the lease, and look for jobs created or cancelled on another service about once a second.
        self.tick_s = min(1.0, self.lease.ttl_s / 4)
        self.active = False
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None
        self._lead: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the lease if it is free (a restarted service resumes its jobs before it serves), else stand by."""
        await self._tick()
        if not self.active:
            log.info("standing by: the runner lease is held by %s", self.store.lease_holder())
        self._lead = asyncio.create_task(self._leading())
        if self.upstream.prometheus:
            self._watch = asyncio.create_task(self._watch_queue())

    async def stop(self) -> None:
        tasks = list(self._jobs.values()) + [t for t in (self._watch, self._lead) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Lines in flight were cancelled: a standby may take over at once.
        self.lease.release()

    async def _leading(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            await self._tick()

    async def _tick(self) -> None:
        self.lease.renew()
        if self.lease.held():
            if not self.active:
                log.info("runner lease taken by %s: working the store's jobs", self.lease.holder)
                self.active = True
            try:
                await self._sync()
            except Exception:
                log.exception("cannot read the store's jobs")
        elif self.active:
            log.warning("runner lease lost by %s: stopping every job (a standby takes them over)", self.lease.holder)
            self.active = False
            tasks = list(self._jobs.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _sync(self) -> None:
        """What the store says against what runs here: jobs created or cancelled on any service, jobs that had not
        ended when the last holder stopped."""
        for batch_id, status in self.store.active_batches():
            if status == "cancelling":
                task = self._jobs.pop(batch_id, None)
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                self.store.finish(batch_id, "cancelled")
            elif batch_id in self._jobs:
                continue
            elif status == "finalizing":
                self.store.finish(batch_id, "completed")
            else:
                log.info("working %s", batch_id)
                self.launch(batch_id)

    def launch(self, batch_id: str) -> None:
        """Work a job here if this service holds the lease; otherwise the holder picks it up at its next tick."""
        if self.active and batch_id not in self._jobs:
            self._jobs[batch_id] = asyncio.create_task(self._run(batch_id), name=batch_id)

    async def cancel(self, batch_id: str) -> None:
        """Stop sending at once; lines that already have an answer stay in the output. On a standby the job is
        marked cancelling and the holder stops it at its next tick."""
        if not self.store.set_status(batch_id, "cancelling"):
            return
        if not self.active:
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
                    if not self.lease.held():
                        await self.pace.release()
                        raise LeaseLost
                    if expires is not None and time.time() >= expires:
                        await self.pace.release()
                        expired = True
                        break
                    group.create_task(self._line(batch_id, line))
            if expired:
                self.store.expire(batch_id)
                log.info("%s expired", batch_id)
            elif self.store.set_status(batch_id, "finalizing", only_from="in_progress"):
                self.store.finish(batch_id, "completed")
                log.info("%s completed", batch_id)
        except* LeaseLost:
            log.warning("%s stopped: the runner lease may have expired", batch_id)
        except* Exception:
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
            if not self.lease.held():
                raise LeaseLost
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
                                      int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                                      holder=self.lease.holder)
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
                    f"no answer from the rack after retrying for {self.retry_for_s:.0f} s; last: {problem}"),
                    holder=self.lease.holder)
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
