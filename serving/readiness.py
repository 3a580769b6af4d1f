"""Wait until a serving endpoint answers its readiness path with 200: one loop for every caller that starts a
server (the benchmarks, the test fixtures, the lab's fault tests) instead of one per caller."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def wait_ready(url: str, timeout: float, *, path: str = "/ready", interval: float = 0.5,
               exited: Callable[[], str | None] = lambda: None) -> float:
    """Poll `url + path` until it answers 200; returns the seconds it took.

    `exited` is asked between polls: when the server's process has gone it returns why (its log tail), and the
    wait stops at once with that reason instead of running out the clock. A refused or reset connection, or a
    timeout of one poll, counts as "not yet" (a server binds its port only once it listens). Raises TimeoutError
    naming the URL when `timeout` seconds pass, RuntimeError when the process exited."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        gone = exited()
        if gone is not None:
            raise RuntimeError(f"{url}: the server exited before it was ready: {gone}")
        try:
            if httpx.get(f"{url}{path}", timeout=min(5.0, max(interval, 2.0))).status_code == 200:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{url}{path} did not answer 200 within {timeout:.0f} s")
