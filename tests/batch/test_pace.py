"""The pace: how many batch requests are in flight follows the rack (queue depth read from a real engine's
/metrics page, 429 halving, growth while answers come back)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from llmrack.batch.pace import Pace
from llmrack.batch.upstream import Upstream
from tests.serving.conftest import ThreadServer

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on a loop of its own: asyncio.run would leave the thread with no current loop, which breaks the Pulumi
    mocks of a later test in the same process (they ask asyncio.get_event_loop())."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_queue_depth_is_read_from_an_engine_s_metrics_page(upstream: ThreadServer) -> None:
    async def depths() -> tuple[float | None, float | None, float | None]:
        page = Upstream(upstream.url, None, f"{upstream.url}/metrics")
        nothing = Upstream(upstream.url, None, None)
        gone = Upstream(upstream.url, None, "http://127.0.0.1:9/metrics")
        try:
            return await page.queue_depth(), await nothing.queue_depth(), await gone.queue_depth()
        finally:
            for u in (page, nothing, gone):
                await u.close()

    idle, unset, unreachable = run(depths())
    assert idle == 0.0 and unset is None and unreachable is None
    assert httpx.get(f"{upstream.url}/metrics").status_code == 200


def test_the_limit_grows_on_answers_halves_on_429_and_shrinks_while_requests_wait() -> None:
    async def scenario() -> list[float]:
        pace = Pace(max_inflight=8, start=2)
        seen = [pace.limit]
        for _ in range(10):
            await pace.on_success()
        seen.append(pace.limit)
        await pace.on_overload(retry_after=0.01)
        seen.append(pace.limit)
        await pace.on_queue_depth(3)
        seen.append(pace.limit)
        for _ in range(10):
            await pace.on_success()  # no growth while requests wait in an engine's queue
        seen.append(pace.limit)
        await pace.on_queue_depth(0)
        await pace.on_success()
        seen.append(pace.limit)
        return seen

    start, grown, halved, shrunk, held, regrown = run(scenario())
    assert start == 2 and 2 < grown <= 8
    assert halved == grown / 2 and shrunk == halved * 0.75 and held == shrunk and regrown > held


def test_acquire_waits_for_a_free_slot_and_for_a_pause() -> None:
    async def scenario() -> tuple[bool, bool]:
        pace = Pace(max_inflight=1, start=1)
        await pace.acquire()
        blocked = asyncio.create_task(pace.acquire())
        await asyncio.sleep(0.05)
        waited = not blocked.done()
        await pace.release()
        await asyncio.wait_for(blocked, 1)
        await pace.release()
        await pace.on_overload(retry_after=0.2)  # a 429 with Retry-After pauses every sender
        paused = asyncio.create_task(pace.acquire())
        await asyncio.sleep(0.1)
        still_paused = not paused.done()
        await asyncio.wait_for(paused, 1)
        return waited, still_paused

    assert run(scenario()) == (True, True)
