"""Scan results recorded by image digest, and the gate decision every rollout path asks before it runs an image.

The layout and the record are the contract of llmrack.contracts.scan_results
(`<dir>/scan-results/<digest-hex>.json`); a digest with no result is unscanned. The Ansible serving role
(through `llmrack image check-gate`) and the Pulumi serving component call `gate_decision`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from llmrack.contracts.scan_results import DIGEST_RE, RESULTS_SUBDIR, ScanResult, ScanStatus, results_path

__all__ = ["RESULTS_SUBDIR", "ScanResult", "ScanStatus", "gate_decision", "read_result", "record_result",
           "results_path"]


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
