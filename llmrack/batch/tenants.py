"""Which tenant an API key belongs to: a job, its files and its series are the tenant's alone.

The key file is the serving layer's (one key per line, '#' starts a comment). A key has no name there, so its
tenant is named after a short digest of the key: stable across restarts, and it never shows the key itself.
`tenant_for` is the one place that maps a presented key to a tenant.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

# The tenant of every request when the service runs without a key file (a test, one user's own box).
OPEN_TENANT = "default"


class KeyFileError(ValueError):
    """The key file is missing, unreadable or holds no key."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Tenants:
    def __init__(self, keys: list[str]) -> None:
        # Only digests are kept, so no usable key stays in memory.
        self._by_digest = {_digest(k): f"key-{_digest(k).hex()[:12]}" for k in keys}

    @classmethod
    def from_file(cls, path: Path | None) -> Tenants:
        if path is None:
            return cls([])
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise KeyFileError(f"--api-key-file {path}: {exc.strerror}") from None
        keys = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not keys:
            raise KeyFileError(f"--api-key-file {path} holds no key (one per line; '#' starts a comment)")
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant of `Bearer <key>`, or None for a missing or unknown key; every known digest is compared in
        constant time, so timing reveals nothing about which key is close."""
        if not self._by_digest:
            return OPEN_TENANT
        scheme, _, token = (authorization or "").partition(" ")
        presented = _digest(token.strip())
        found: str | None = None
        for known, tenant in self._by_digest.items():
            if secrets.compare_digest(presented, known):
                found = tenant
        return found if scheme.lower() == "bearer" else None
