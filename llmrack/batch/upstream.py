"""The batch service's side of the rack: the OpenAI API it sends lines to, and the queue depth it watches.

`--upstream` is the gateway (or one node); `--prometheus` is either a Prometheus server (its HTTP query API) or
one engine's own /metrics page (a URL ending in /metrics), read for the requests waiting in the engines' queues.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmrack.batch.protocol import PRIORITY_HEADER, PRIORITY_HEADER_VALUE
from llmrack.contracts.metrics import NUM_REQUESTS_WAITING, VLLM_NUM_REQUESTS_WAITING

# Statuses that say "the rack is busy or briefly away", not "this line is wrong": the line is sent again later.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class UpstreamError(Exception):
    """The upstream could not be asked (down, unreachable, or an answer that is not the API's)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    request_id: str | None
    retry_after: float | None


class Upstream:
    def __init__(self, url: str, api_key: str | None, prometheus: str | None, timeout_s: float = 600.0,
                 ca_file: Path | None = None) -> None:
        headers = {PRIORITY_HEADER: PRIORITY_HEADER_VALUE}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # One pooled client for every line: connection set-up stays off the per-request path.
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, verify=verify,
                                         timeout=httpx.Timeout(timeout_s, connect=10.0),
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))
        self.url = url
        self.prometheus = prometheus

    async def close(self) -> None:
        await self._client.aclose()

    async def models(self) -> set[str]:
        """The model ids the upstream serves (GET /v1/models)."""
        try:
            resp = await self._client.get("/v1/models", timeout=10.0)
            resp.raise_for_status()
            return {str(m["id"]) for m in resp.json()["data"]}
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"cannot list the models of {self.url}: {exc}") from None

    async def send(self, path: str, body: dict[str, Any]) -> Answer:
        """POST one request; transport failures raise httpx.HTTPError (the caller retries them)."""
        resp = await self._client.post(path, json=body)
        try:
            payload: Any = resp.json()
        except json.JSONDecodeError:
            payload = {"error": {"message": resp.text[:500], "type": "upstream_error"}}
        retry = resp.headers.get("retry-after")
        return Answer(status=resp.status_code, body=payload,
                      request_id=resp.headers.get("x-request-id") or (payload.get("id") if isinstance(payload, dict)
                                                                        else None),
                      retry_after=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None)

    async def queue_depth(self) -> float | None:
        """Requests waiting in the engines' queues, or None when there is no Prometheus URL or it did not answer."""
        if not self.prometheus:
            return None
        try:
            if self.prometheus.rstrip("/").endswith("/metrics"):
                resp = await self._client.get(self.prometheus, timeout=5.0)
                resp.raise_for_status()
                return _waiting_in_page(resp.text)
            resp = await self._client.get(f"{self.prometheus.rstrip('/')}/api/v1/query", timeout=5.0,
                                          params={"query": f"sum({NUM_REQUESTS_WAITING}) or vector(0)"})
            resp.raise_for_status()
            return float(resp.json()["data"]["result"][0]["value"][1])
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            return None


def _waiting_in_page(text: str) -> float:
    """Sum of the waiting-queue gauges (llmrack's and vLLM's names) on one exposition page."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name in (NUM_REQUESTS_WAITING, VLLM_NUM_REQUESTS_WAITING):
            total += sum(s.value for s in family.samples)
    return total
