"""The little of Prometheus' HTTP API llmrack reads: instant queries, and histograms over a window.

All queries are evaluated at one instant (`at`, default: now when the client is made), so the windows of one
judgement line up even when the queries take a while.

A Prometheus that asks for credentials (the inventory's llmrack_monitoring_user / llmrack_monitoring_password) gets
them from LLMRACK_PROMETHEUS_USER / LLMRACK_PROMETHEUS_PASSWORD, or from the URL (http://user:password@host:9090).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import time
from typing import Any

import httpx

from llmrack.contracts.inventory import MONITORING_USER_DEFAULT
from llmrack.errors import LlmrackError
from llmrack.observe.histogram import Histogram

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
USER_ENV = "LLMRACK_PROMETHEUS_USER"
PASSWORD_ENV = "LLMRACK_PROMETHEUS_PASSWORD"


class PrometheusError(LlmrackError):
    """Prometheus could not be asked (unreachable, refused the query): nothing can be judged."""


def check_duration(value: str, what: str) -> str:
    if not DURATION.match(value):
        raise LlmrackError(f"{what} {value!r} is not a Prometheus duration: use e.g. 30s, 10m, 1h, 7d")
    return value


class Prometheus:
    def __init__(self, url: str, *, at: float | None = None, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.at = time.time() if at is None else at
        self.timeout = timeout
        password = os.environ.get(PASSWORD_ENV)
        # Credentials in the URL (httpx sends them) win over the environment's.
        self.auth: httpx.BasicAuth | None = None
        if password and "@" not in self.url:
            self.auth = httpx.BasicAuth(os.environ.get(USER_ENV) or MONITORING_USER_DEFAULT, password)

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series."""
        try:
            r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr, "time": f"{self.at:.3f}"},
                          timeout=self.timeout, auth=self.auth)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}",
                                  hint="pass --prometheus with the URL of the Prometheus that scrapes the nodes") \
                from None
        if r.status_code == 401:
            raise PrometheusError(f"Prometheus at {self.url} asks for credentials"
                                  + (" and refused the ones given" if self.auth or "@" in self.url else ""),
                                  hint=f"set {USER_ENV} and {PASSWORD_ENV} (the inventory's llmrack_monitoring_user "
                                       "and llmrack_monitoring_password)")
        body: dict[str, Any] = {}
        with contextlib.suppress(ValueError):  # a proxy's HTML error page
            body = r.json()
        if r.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"Prometheus at {self.url} refused {expr!r}: "
                                  f"{body.get('error') or r.text[:200] or r.status_code}")
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(row["metric"], float(row["value"][1])) for row in data["result"]]

    def total(self, expr: str) -> float:
        """sum() of an expression; 0 when there is no series (nothing happened in the window)."""
        rows = self.query(f"sum({expr})")
        value = rows[0][1] if rows else 0.0
        return 0.0 if math.isnan(value) else value

    def histogram(self, name: str, selector: str, window: str, offset: str | None = None) -> Histogram:
        """Observations of histogram `name` (its _bucket series matching `selector`) during `window`, ending
        `offset` before the evaluation time."""
        shift = f" offset {offset}" if offset else ""
        rows = self.query(f"sum by (le) (increase({name}_bucket{{{selector}}}[{window}]{shift}))")
        buckets = {float(labels["le"]): value for labels, value in rows if "le" in labels and not math.isnan(value)}
        if not buckets:
            return Histogram((math.inf,), (0.0,))
        if math.inf not in buckets:
            raise PrometheusError(f"{name}_bucket has no +Inf bucket: not a Prometheus histogram")
        return Histogram.from_buckets(buckets)
