"""The batch service's settings: one typed object built by `llmrack batch serve` (or a test)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmrack.batch.protocol import BATCH_PRIORITY

DEFAULT_PORT = 8100
DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's own per-file limit for batch input
DEFAULT_MAX_INFLIGHT = 64
DEFAULT_RETRY_FOR_S = 600.0
# The runner lease (several services on one store): a standby takes the jobs over this long after the active one
# stopped renewing (died, or lost the database); a service stopped cleanly hands them over at once.
DEFAULT_LEASE_S = 15.0


@dataclass(frozen=True)
class BatchSettings:
    upstream: str
    state: Path | str  # a directory (SQLite) or a postgresql:// URL
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    api_key_file: Path | None = None
    upstream_api_key_file: Path | None = None
    upstream_ca_file: Path | None = None
    prometheus: str | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    priority: int = BATCH_PRIORITY
    retry_for_s: float = DEFAULT_RETRY_FOR_S
    lease_s: float = DEFAULT_LEASE_S
