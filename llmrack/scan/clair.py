"""A small client for Clair v4's indexer and matcher HTTP API, with the retries a real Clair needs.

Behaviour it honours (quay/clair httptransport): POST /indexer/api/v1/index_report answers 201 with an
IndexReport; GET /indexer/api/v1/index_report/{hash} answers 200 or 404; GET
/matcher/api/v1/vulnerability_report/{hash} answers 200/201 with a report, or 202 with an empty body while
the matcher's updaters have not finished their first run; any endpoint may answer 429 when its
concurrency limit is hit; errors carry `{"code", "message"}`. Transient answers (429, 5xx, 202, connection
errors) are retried with capped exponential backoff until one overall deadline.
"""

from __future__ import annotations

import base64
import binascii
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import jwt
from pydantic import BaseModel, ValidationError

from llmrack.errors import LlmrackError, UsageError
from llmrack.scan.clair_types import (
    INDEX_ERROR,
    INDEX_FINISHED,
    ApiError,
    IndexReport,
    Manifest,
    VulnerabilityReport,
)

INDEX_PATH = "/indexer/api/v1/index_report"
REPORT_PATH = "/matcher/api/v1/vulnerability_report"
TRANSIENT = {429, 500, 502, 503, 504}

M = TypeVar("M", bound=BaseModel)


class ScanIncompleteError(LlmrackError):
    """The scan could not be completed: Clair unreachable, deadline passed, refused, or an unusable answer."""


def load_psk(value: str) -> bytes:
    """Clair's config holds the PSK base64-encoded (`auth.psk.key`); accept exactly that."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError("the Clair PSK must be base64, as in Clair's config (auth.psk.key)") from exc
    if not key:
        raise UsageError("the Clair PSK is empty")
    return key


class ClairClient:
    def __init__(
        self,
        base_url: str,
        *,
        psk: bytes | None = None,
        issuer: str = "clairctl",
        deadline_s: float = 900.0,
        request_timeout_s: float = 60.0,
        poll_interval_s: float = 1.0,
        max_backoff_s: float = 15.0,
        log: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise UsageError(f"--clair {base_url!r}: expected an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self._psk = psk
        self._issuer = issuer
        self._deadline = time.monotonic() + deadline_s
        self.deadline_s = deadline_s
        self._poll = poll_interval_s
        self._max_backoff = max_backoff_s
        self._log = log or (lambda _msg: None)
        self._http = httpx.Client(base_url=self.base_url, timeout=request_timeout_s, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ClairClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the three calls of a scan ---------------------------------------------------------------------

    def index(self, manifest: Manifest) -> IndexReport:
        resp = self._request("POST", INDEX_PATH, json=manifest.model_dump(exclude_none=True), ok={200, 201})
        return self._parse(resp, IndexReport, "index report")

    def wait_indexed(self, manifest_hash: str, report: IndexReport | None = None) -> IndexReport:
        """Poll the index report until Clair says IndexFinished (or IndexError, which ends the scan)."""
        while report is None or report.state not in (INDEX_FINISHED, INDEX_ERROR):
            if report is not None:
                self._log(f"Clair is indexing ({report.state})")
                self._sleep(self._poll, f"index report still in state {report.state}")
            resp = self._request("GET", f"{INDEX_PATH}/{manifest_hash}", ok={200})
            report = self._parse(resp, IndexReport, "index report")
        if report.state == INDEX_ERROR or not report.success:
            raise ScanIncompleteError(f"Clair could not index the image: {report.err or report.state}")
        return report

    def vulnerability_report(self, manifest_hash: str) -> VulnerabilityReport:
        waited = False
        while True:
            resp = self._request("GET", f"{REPORT_PATH}/{manifest_hash}", ok={200, 201, 202})
            if resp.status_code != 202:
                return self._parse(resp, VulnerabilityReport, "vulnerability report")
            # 202 + empty body: the matcher has not finished its first updater run yet.
            if not waited:
                self._log("Clair's matcher is not ready yet (updaters have not run); waiting")
                waited = True
            self._sleep(self._poll, "Clair's matcher stayed not ready (202: its updaters have not run)")

    # --- plumbing ------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._psk is not None:
            now = int(time.time())
            # Clair's PSK check (middleware/auth) wants HS256, an allowed issuer and valid exp/nbf.
            token = jwt.encode({"iss": self._issuer, "iat": now, "nbf": now, "exp": now + 300}, self._psk,
                               algorithm="HS256")
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _request(self, method: str, path: str, *, ok: set[int], json: Any = None) -> httpx.Response:
        attempt = 0
        last = "no answer"
        while True:
            attempt += 1
            try:
                resp = self._http.request(method, path, json=json, headers=self._headers())
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self._log(f"Clair {method} {path}: {last}; retrying")
                self._sleep(self._backoff(attempt), f"Clair at {self.base_url} unreachable ({last})")
                continue
            if resp.status_code in ok:
                return resp
            detail = _error_text(resp)
            if resp.status_code in TRANSIENT:
                last = f"{resp.status_code} {detail}"
                self._log(f"Clair {method} {path}: {last}; retrying")
                self._sleep(self._retry_after(resp) or self._backoff(attempt), f"Clair kept answering {last}")
                continue
            hint = None
            if resp.status_code in (401, 403):
                hint = "Clair wants a PSK-signed JWT: give --psk-file (the base64 key of Clair's auth.psk.key)"
            raise ScanIncompleteError(f"Clair {method} {path} answered {resp.status_code}: {detail}", hint=hint)

    def _parse(self, resp: httpx.Response, model: type[M], what: str) -> M:
        ctype = resp.headers.get("content-type", "")
        if "json" not in ctype:
            raise ScanIncompleteError(f"Clair sent a {what} that is not JSON (content-type {ctype or 'missing'})")
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(document)"
            raise ScanIncompleteError(
                f"Clair sent a malformed {what}: {where}: {first['msg']} ({exc.error_count()} problem(s))"
            ) from exc

    def _backoff(self, attempt: int) -> float:
        return float(min(self._max_backoff, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))

    @staticmethod
    def _retry_after(resp: httpx.Response) -> float | None:
        value = resp.headers.get("retry-after", "")
        return float(value) if value.isdigit() else None

    def _sleep(self, seconds: float, why: str) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ScanIncompleteError(f"deadline of {self.deadline_s:g}s passed: {why}")
        time.sleep(min(seconds, left))


def _error_text(resp: httpx.Response) -> str:
    if not resp.content:
        return "(empty body)"
    try:
        err = ApiError.model_validate_json(resp.content)
    except ValidationError:
        return resp.text[:200]
    return f"{err.code}: {err.message}" if err.message else err.code
