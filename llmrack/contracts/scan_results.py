"""Where an image's scan verdict is recorded, and what the record holds.

Layout: `<dir>/scan-results/<digest-hex>.json`, one file per image digest (`sha256:<64 hex>`; the file is named
by the hex part). `llmrack scan --results DIR` writes it (the lab records its own image as unscanned); the gate
every rollout path asks (llmrack.scan.gate.gate_decision, through `llmrack image check-gate` in the Ansible serving
role and directly in the Pulumi serving component) reads it. A results directory may be given as `<dir>` or as
`<dir>/scan-results`. The default results directory, relative to the project root, is `out/images/scan-results`.

Record (JSON)::

    {"digest": "sha256:...", "status": "passed" | "failed" | "unscanned", "policy": "...",
     "scanned_at": "<ISO 8601>", "blocking": [{...finding...}], "clair": "<url>", "reason": "..."}

A digest with no record is unscanned.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

RESULTS_SUBDIR = "scan-results"
DEFAULT_RESULTS_DIR = Path("out/images") / RESULTS_SUBDIR
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


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
    """The record of `digest` under results_dir (either `<dir>` or `<dir>/scan-results`)."""
    base = Path(results_dir)
    if base.name != RESULTS_SUBDIR:
        base = base / RESULTS_SUBDIR
    return base / f"{digest.split(':', 1)[-1]}.json"
