"""Which tenant an API key belongs to: a job, its files and its series are the tenant's alone.

The key file is the serving layer's (serving.auth: llmrack's key store of named keys per tenant, or the older
one-key-per-line file, whose keys are all of tenant "default"), re-read when it changes. `tenant_for` is the one
place that maps a presented key to a tenant.
"""

from __future__ import annotations

from pathlib import Path

from serving.auth import DEFAULT_TENANT, ApiKeys, KeyFileError

__all__ = ["DEFAULT_TENANT", "KeyFileError", "Tenants"]


class Tenants:
    def __init__(self, keys: ApiKeys | None) -> None:
        self._keys = keys

    @classmethod
    def from_file(cls, path: Path | None) -> Tenants:
        """No file: no keys asked for, every request is of tenant "default" (a test, one user's own box)."""
        return cls(ApiKeys.from_file(path) if path is not None else None)

    def tenant_for(self, authorization: str | None) -> str | None:
        """The tenant of `Bearer <key>`, or None for a missing or unknown key."""
        if self._keys is None:
            return DEFAULT_TENANT
        caller = self._keys.identify(authorization)
        return caller.tenant if caller is not None else None
