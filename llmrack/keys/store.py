"""The key store: named API keys, each of one tenant, kept only as SHA-256 digests in one JSON file.

This module owns the file's shape; the serving layer (serving/auth.py), the gateway's key map (rendered by
`haproxy_map`) and the Kubernetes keys Secret all read it through `parse`:

    {"format": "llmrack-keys/1",
     "tenants": {"<tenant>": {"requests_per_minute": 600, "max_concurrent": 8}},
     "keys": [{"id": "k3f9a0c1d", "name": "ci-bot", "tenant": "search", "sha256": "<64 hex>",
               "created": "2026-12-07T06:30:00Z", "revoked": null}]}

A key is `lrk-` + 43 URL-safe characters (256 random bits); it is shown once, by `create` and `rotate`, and
never written anywhere. SHA-256 (not a slow password hash) is enough for keys of that entropy, and it is what
HAProxy can compute per request (its sha2 converter) to look a key up in a map without ever holding it.
Limits belong to the tenant (the gateway's stick tables count per tenant); 0 means no limit. A revoked key
stays in the file, marked, so `keys list` shows who held what; readers skip it.

Only the standard library is imported: the serving layer and the Ansible filter plugins load this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT = "llmrack-keys/1"
KEY_PREFIX = "lrk-"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class KeyStoreError(ValueError):
    """The store file or an argument is wrong; the message names what and how to fix it."""


@dataclass(frozen=True)
class TenantLimits:
    requests_per_minute: int = 0  # 0: no limit
    max_concurrent: int = 0  # 0: no limit


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    tenant: str
    sha256: str
    created: str
    revoked: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None


@dataclass
class KeyStore:
    tenants: dict[str, TenantLimits]
    keys: list[KeyRecord]

    # --- reading ---------------------------------------------------------------------------------------------
    def active(self) -> list[KeyRecord]:
        return [k for k in self.keys if k.active]

    def find(self, ref: str) -> KeyRecord:
        """The active key whose id or name is `ref`."""
        hits = [k for k in self.active() if ref in (k.id, k.name)]
        if not hits:
            known = ", ".join(sorted(f"{k.name} ({k.id})" for k in self.active())) or "none"
            raise KeyStoreError(f"no active key with id or name {ref!r} (active keys: {known}); "
                                "see `llmrack keys list`")
        return hits[0]

    def limits(self, tenant: str) -> TenantLimits:
        return self.tenants.get(tenant, TenantLimits())

    # --- changing --------------------------------------------------------------------------------------------
    def create(self, name: str, tenant: str, limits: TenantLimits | None = None) -> tuple[KeyRecord, str]:
        """A new key; returns its record and the key itself (the only time it exists outside a client)."""
        _check_name("key name", name)
        _check_name("tenant", tenant)
        if any(k.name == name for k in self.active()):
            raise KeyStoreError(f"an active key is already named {name!r}: pick another name, or "
                                f"`llmrack keys rotate {name}` to replace it")
        if limits is not None:
            _check_limits(limits)
            self.tenants[tenant] = limits
        else:
            self.tenants.setdefault(tenant, TenantLimits())
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(id="k" + secrets.token_hex(4), name=name, tenant=tenant, sha256=digest(key),
                           created=_now())
        self.keys.append(record)
        return record, key

    def revoke(self, ref: str) -> KeyRecord:
        record = self.find(ref)
        revoked = replace(record, revoked=_now())
        self.keys[self.keys.index(record)] = revoked
        return revoked

    def rotate(self, ref: str) -> tuple[KeyRecord, KeyRecord, str]:
        """A new key for the same name and tenant; the old one is revoked. Returns (old, new, key)."""
        old = self.revoke(ref)
        new, key = self.create(old.name, old.tenant)
        return old, new, key

    # --- files -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT,
                "tenants": {t: asdict(lim) for t, lim in sorted(self.tenants.items())},
                "keys": [asdict(k) for k in self.keys]}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(what: str, value: str) -> None:
    if not NAME_RE.match(value):
        raise KeyStoreError(f"{what} {value!r} is not valid: use 1-63 lower-case letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")


def _check_limits(limits: TenantLimits) -> None:
    for field, value in asdict(limits).items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise KeyStoreError(f"{field} must be a whole number >= 0 (0: no limit), not {value!r}")


def parse(text: str, source: str = "key store") -> KeyStore:
    """A store from its JSON text; every error names the source and the field."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeyStoreError(f"{source} is not JSON ({exc}); it is written by `llmrack keys`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise KeyStoreError(f"{source} is not an llmrack key store (its \"format\" must be {FORMAT!r})")
    tenants: dict[str, TenantLimits] = {}
    raw_tenants = data.get("tenants") or {}
    if not isinstance(raw_tenants, dict):
        raise KeyStoreError(f"{source}: \"tenants\" must be an object of tenant -> limits")
    for tenant, raw in raw_tenants.items():
        try:
            limits = TenantLimits(**raw)
        except TypeError:
            raise KeyStoreError(f"{source}: tenant {tenant!r} limits must be "
                                "{\"requests_per_minute\": N, \"max_concurrent\": N}") from None
        _check_limits(limits)
        tenants[str(tenant)] = limits
    keys: list[KeyRecord] = []
    raw_keys = data.get("keys") or []
    if not isinstance(raw_keys, list):
        raise KeyStoreError(f"{source}: \"keys\" must be a list")
    for i, raw in enumerate(raw_keys):
        try:
            record = KeyRecord(**raw)
        except TypeError:
            raise KeyStoreError(f"{source}: keys[{i}] must have id, name, tenant, sha256, created, revoked") from None
        if not _HEX64.match(record.sha256):
            raise KeyStoreError(f"{source}: keys[{i}] ({record.name}) sha256 is not 64 lower-case hex digits")
        keys.append(record)
    return KeyStore(tenants=tenants, keys=keys)


def load(path: Path) -> KeyStore:
    """The store at `path`; an absent file is an empty store (the first `keys create` makes it)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return KeyStore(tenants={}, keys=[])
    except OSError as exc:
        raise KeyStoreError(f"cannot read the key store {path}: {exc.strerror}") from None
    return parse(text, str(path))


def save(store: KeyStore, path: Path) -> None:
    """Write atomically (a reader sees the old file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(store.dumps())
        # Hashes only, but who holds which key is still nobody else's business.
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeyStoreError(f"cannot write the key store {path}: {exc.strerror}") from None


def haproxy_map(store: KeyStore) -> str:
    """The gateway's key map: `<sha256 hex> <tenant>:<key id>:<requests/min>:<max concurrent>` per active key.

    ':' because neither a tenant nor a key id may hold one, and HAProxy's field() converter splits on it
    without the quoting a ',' would need inside a converter's arguments."""
    lines = []
    for k in sorted(store.active(), key=lambda r: r.sha256):
        lim = store.limits(k.tenant)
        lines.append(f"{k.sha256} {k.tenant}:{k.id}:{lim.requests_per_minute}:{lim.max_concurrent}")
    return "\n".join(lines) + ("\n" if lines else "")
