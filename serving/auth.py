"""Bearer API keys: who is calling (key id and tenant), from a file of SHA-256 digests that is re-read when it changes.

The file is either llmrack's key store (llmrack.keys: named keys of tenants, hashes only, written by
`llmrack keys`) or, as before, one key per line ('#' starts a comment; every such key is of tenant "default").
Only digests stay in memory, so a heap dump or a debug print never shows a usable key; a presented key is hashed
and compared in constant time against every known digest.

Reload: at most once per `recheck_s` a request stats the file; a new mtime, size or inode means it is read again.
Adding, revoking or rotating a key therefore reaches a running server within that interval, with no restart and
nothing in flight failing (a request already admitted is not asked again). A file that cannot be read or parsed
while the server runs keeps the keys it had (logged, without any key): a half-copied file never locks every
client out, and a revocation is not lost either since the next good version is read on the next check.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmrack.keys import FORMAT, KeyStoreError, parse

log = logging.getLogger("serving")

DEFAULT_TENANT = "default"
RECHECK_S = 1.0


class KeyFileError(ValueError):
    """The key file is missing, unreadable or holds no key."""


@dataclass(frozen=True)
class Caller:
    key_id: str
    tenant: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _parse(text: str, source: str) -> dict[bytes, Caller]:
    if text.lstrip().startswith("{"):
        try:
            store = parse(text, source)
        except KeyStoreError as exc:
            raise KeyFileError(str(exc)) from None
        return {bytes.fromhex(k.sha256): Caller(k.id, k.tenant) for k in store.active()}
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    # A line-per-key file names no key: its id is the start of the key's digest (enough to tell keys apart in
    # a log, useless for recovering the key).
    return {_digest(k): Caller("k" + _digest(k).hex()[:8], DEFAULT_TENANT) for k in keys}


class ApiKeys:
    def __init__(self, keys: list[str], *, path: Path | None = None, recheck_s: float = RECHECK_S) -> None:
        self._known = _parse("\n".join(keys), "keys") if keys else {}
        self._path = path
        self._recheck_s = recheck_s
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        # Told the tenants after every (re)load: the metrics start each tenant's series at 0 before its first
        # request, so Prometheus sees the whole increase.
        self.on_reload: Callable[[set[str]], None] | None = None

    @classmethod
    def from_file(cls, path: Path, *, recheck_s: float = RECHECK_S) -> ApiKeys:
        keys = cls([], path=path, recheck_s=recheck_s)
        keys._stamp, keys._known = keys._read()
        return keys

    def _read(self) -> tuple[tuple[int, int, int], dict[bytes, Caller]]:
        assert self._path is not None
        try:
            st = os.stat(self._path)
            text = self._path.read_text()
        except OSError as exc:
            raise KeyFileError(f"--api-key-file {self._path}: {exc.strerror}") from None
        known = _parse(text, f"--api-key-file {self._path}")
        if not known and FORMAT not in text[:200]:
            # Empty is never a state to act on: a file being copied in place reads empty for a moment.
            raise KeyFileError(f"--api-key-file {self._path} holds no key (one per line, '#' starts a comment; "
                               "or a key store written by `llmrack keys create`)")
        return (st.st_mtime_ns, st.st_size, st.st_ino), known

    def _refresh(self) -> None:
        """Re-read the file when it changed since the last look (at most once per recheck interval)."""
        now = time.monotonic()
        if self._path is None or now < self._next_check:
            return
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + self._recheck_s
            try:
                st = os.stat(self._path)
            except OSError as exc:
                log.error("API key file %s: %s; keeping the %d keys read before", self._path, exc.strerror,
                          len(self._known))
                return
            if (st.st_mtime_ns, st.st_size, st.st_ino) == self._stamp:
                return
            try:
                self._stamp, self._known = self._read()
            except KeyFileError as exc:
                log.error("%s; keeping the %d keys read before", exc, len(self._known))
                return
            log.info("API keys reloaded from %s: %d active", self._path, len(self._known))
        if self.on_reload is not None:
            self.on_reload(self.tenants)

    @property
    def tenants(self) -> set[str]:
        return {c.tenant for c in self._known.values()}

    @property
    def enabled(self) -> bool:
        return bool(self._known) or self._path is not None

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller of `Bearer <key>` with a known key, else None. Compares against every digest, so the time
        taken says nothing about which key came close."""
        self._refresh()
        scheme, _, token = (authorization or "").partition(" ")
        presented = _digest(token.strip())
        found: Caller | None = None
        for known, caller in self._known.items():
            if secrets.compare_digest(presented, known):
                found = caller
        return found if scheme.lower() == "bearer" else None

    def check(self, authorization: str | None) -> bool:
        """True for a known key, or when the server has no keys at all (unauthenticated, warned at start)."""
        return not self.enabled or self.identify(authorization) is not None

