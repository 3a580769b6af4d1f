"""Bearer API keys: read from a file (one per line), kept only as SHA-256 digests, compared in constant time."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path


class KeyFileError(ValueError):
    """The key file is missing, unreadable or holds no key."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, keys: list[str]) -> None:
        # Only digests stay in memory: a heap dump or a debug print never shows a usable key.
        self._digests = [_digest(k) for k in keys]

    @classmethod
    def from_file(cls, path: Path) -> ApiKeys:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise KeyFileError(f"--api-key-file {path}: {exc.strerror}") from None
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise KeyFileError(f"--api-key-file {path} holds no key (one per line; '#' starts a comment)")
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, authorization: str | None) -> bool:
        """True for `Bearer <key>` with a known key. Compares against every key, so timing reveals nothing."""
        if not self._digests:
            return True
        scheme, _, token = (authorization or "").partition(" ")
        presented = _digest(token.strip())
        ok = False
        for known in self._digests:
            ok |= secrets.compare_digest(presented, known)
        return ok and scheme.lower() == "bearer"
