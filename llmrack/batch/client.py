"""A small client of the batch service for the `llmrack batch submit|status|results` commands, and the progress
arithmetic (lines done and failed, tokens/s, ETA) they show. Scripts use the `openai` client instead."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from llmrack.batch.protocol import TERMINAL, Batch
from llmrack.errors import LlmrackError, UsageError


class BatchServiceError(LlmrackError):
    """The service refused the request, or could not be reached."""


@dataclass(frozen=True)
class Progress:
    total: int
    completed: int
    failed: int
    tokens_per_s: float | None
    eta_s: float | None

    @property
    def done(self) -> int:
        return self.completed + self.failed


def progress(batch: Batch, now: float | None = None) -> Progress:
    """Where a job stands; rates are averaged since it started (it may have resumed after a restart)."""
    rc = batch.request_counts
    now = time.time() if now is None else now
    end = batch.completed_at or batch.cancelled_at or batch.failed_at or batch.expired_at or now
    elapsed = max(0.0, float(end) - float(batch.in_progress_at)) if batch.in_progress_at else 0.0
    done = rc.completed + rc.failed
    tokens_per_s = batch.usage.output_tokens / elapsed if batch.usage and elapsed > 0 else None
    eta = None
    if batch.status not in TERMINAL and done and elapsed > 0:
        eta = (rc.total - done) * elapsed / done
    return Progress(rc.total, rc.completed, rc.failed, tokens_per_s, eta)


class BatchClient:
    def __init__(self, url: str, api_key: str | None, timeout_s: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BatchServiceError(f"cannot reach the batch service at {self.url}: {exc}",
                                    hint="is `llmrack batch serve` running there? (--url or LLMRACK_BATCH_URL)"
                                    ) from None
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text[:300]
            error = UsageError if resp.status_code < 500 else BatchServiceError
            raise error(f"the batch service answered {resp.status_code}: {message}")
        return resp

    def submit(self, path: Path, endpoint: str | None, window: str) -> Batch:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}", hint="give the path of a batch input file (JSONL)") from None
        # Uploaded first: the service checks every line and names the first wrong one.
        uploaded = self._call("POST", "/v1/files", data={"purpose": "batch"},
                              files={"file": (path.name, data, "application/jsonl")}).json()
        if endpoint is None:
            endpoint = _first_url(data, path)
        created = self._call("POST", "/v1/batches", json={"input_file_id": uploaded["id"], "endpoint": endpoint,
                                                          "completion_window": window})
        return Batch.model_validate(created.json())

    def get(self, batch_id: str) -> Batch:
        return Batch.model_validate(self._call("GET", f"/v1/batches/{batch_id}").json())

    def content(self, file_id: str) -> bytes:
        return self._call("GET", f"/v1/files/{file_id}/content").content


def _first_url(data: bytes, path: Path) -> str:
    """The endpoint of a batch: its lines' url (the service checks that they all agree)."""
    for raw in data.splitlines():
        if raw.strip():
            try:
                url = json.loads(raw).get("url")
            except (ValueError, AttributeError):
                break
            if isinstance(url, str):
                return url
            break
    raise UsageError(f"{path}: the first line has no \"url\" to take the endpoint from",
                     hint="pass --endpoint /v1/chat/completions (or fix the file: one JSON request per line)")
