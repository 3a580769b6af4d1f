"""Scan results recorded by image digest, and the gate decision every rollout path asks before it runs an image.

Layout (CONTRACTS.md): `<dir>/scan-results/<digest-hex>.json` holding
{"digest", "status": "passed"|"failed"|"unscanned", "policy", "scanned_at", "blocking": [...]}.
A digest with no result is unscanned. The Ansible serving role (through `llmrack image check-gate`) and
the Pulumi serving component call `gate_decision`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from llmrack.scan.oci import DIGEST_RE

RESULTS_SUBDIR = "scan-results"


class ScanStatus(StrEnum):
    passed = "passed"
    failed = "failed"
    unscanned = "unscanned"


class ScanResult(BaseModel):
    digest: str = Field(pattern=DIGEST_RE.pattern)
    status: ScanStatus
    policy: str | None = None
    scanned_at: dt.datetime
    blocking: list[dict[str, Any]] = []
    clair: str | None = None
    reason: str = ""


def results_path(results_dir: Path, digest: str) -> Path:
    """Accept either `<dir>` or `<dir>/scan-results` as results_dir."""
    base = Path(results_dir)
    if base.name != RESULTS_SUBDIR:
        base = base / RESULTS_SUBDIR
    return base / f"{digest.split(':', 1)[-1]}.json"


def read_result(digest: str, results_dir: Path) -> ScanResult | None:
    path = results_path(results_dir, digest)
    if not path.is_file():
        return None
    return ScanResult.model_validate_json(path.read_bytes())


def record_result(results_dir: Path, result: ScanResult, *, keep_existing_verdict: bool = False) -> Path:
    """Write the result atomically. With keep_existing_verdict, an "unscanned" never hides an earlier verdict."""
    path = results_path(results_dir, result.digest)
    if keep_existing_verdict and result.status is ScanStatus.unscanned and path.is_file():
        try:
            if read_result(result.digest, results_dir) is not None:
                return path
        except (ValidationError, ValueError):
            pass  # a corrupt record is replaced
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(result.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)
    return path


def gate_decision(digest: str, results_dir: Path, allow_unscanned: bool) -> tuple[bool, str]:
    """(ok, reason): may an image with this digest run? Fails closed on anything unexpected."""
    if not DIGEST_RE.match(digest or ""):
        return False, f"refused: {digest!r} is not an image digest (sha256:<64 hex>)"
    try:
        result = read_result(digest, results_dir)
    except (ValidationError, ValueError, OSError) as exc:
        return False, f"refused: the scan result for {digest} is unreadable ({str(exc).splitlines()[0]})"
    if result is not None and result.digest != digest:
        return False, f"refused: the scan result filed under {digest} is for {result.digest}"
    if result is None or result.status is ScanStatus.unscanned:
        why = "no scan result" if result is None else f"recorded unscanned ({result.reason or 'no Clair'})"
        if allow_unscanned:
            return True, (f"WARNING: {digest} has never passed a vulnerability scan ({why}); "
                          "allowed only because this environment allows unscanned images")
        return False, f"refused: {digest} has not been scanned ({why}) and this environment refuses unscanned images"
    if result.status is ScanStatus.failed:
        ids = ", ".join(sorted({str(b.get("id")) for b in result.blocking})) or "see the scan report"
        return False, f"refused: {digest} failed the vulnerability gate on {result.scanned_at:%Y-%m-%d} ({ids})"
    return True, f"passed the vulnerability gate on {result.scanned_at:%Y-%m-%d} (policy {result.policy})"


def dump_decision(digest: str, ok: bool, reason: str) -> str:
    return json.dumps({"digest": digest, "ok": ok, "reason": reason})
