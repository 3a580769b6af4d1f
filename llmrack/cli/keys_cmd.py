"""`llmrack keys create|list|revoke|rotate`: named API keys per tenant, stored as hashes (thin over llmrack.keys).

The key itself is printed once, to stdout, by create and rotate; everything else goes to stderr. Distribute the
store with `ansible-playbook playbooks/keys.yml` (nodes reload it, the gateway's map is updated in place).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from llmrack.cli.output import emit_json, info, stdout
from llmrack.errors import UsageError
from llmrack.keys import KeyStore, KeyStoreError, TenantLimits, load, save

app = typer.Typer(help="API keys: named, per tenant, with the tenant's limits; stored as SHA-256 hashes.",
                  no_args_is_help=True)

STORE = typer.Option(..., "--store", envvar="LLMRACK_KEYS_FILE",
                     help="the key store file (JSON of hashes; created by the first `keys create`)")
NEXT = "distribute it: ansible-playbook -i INVENTORY playbooks/keys.yml (nodes and gateway, no restart)"


def _load(path: Path) -> KeyStore:
    try:
        return load(path)
    except KeyStoreError as exc:
        raise UsageError(str(exc)) from None


def _save(store: KeyStore, path: Path) -> None:
    try:
        save(store, path)
    except KeyStoreError as exc:
        raise UsageError(str(exc)) from None


@app.command("create")
def create(
    name: str = typer.Argument(..., help="the key's name, e.g. the team's service that holds it"),
    tenant: str = typer.Option(..., "--tenant", help="who the key's usage is counted and limited for"),
    requests_per_minute: int = typer.Option(None, "--requests-per-minute", min=0,
                                            help="the tenant's request rate limit at the gateway (0: none)"),
    max_concurrent: int = typer.Option(None, "--max-concurrent", min=0,
                                       help="the tenant's concurrent-request limit at the gateway (0: none)"),
    store_path: Path = STORE,
) -> None:
    """Create a key; prints it once (stdout). Setting a limit sets it for the whole tenant."""
    store = _load(store_path)
    limits = None
    if requests_per_minute is not None or max_concurrent is not None:
        old = store.limits(tenant)
        limits = TenantLimits(
            requests_per_minute=old.requests_per_minute if requests_per_minute is None else requests_per_minute,
            max_concurrent=old.max_concurrent if max_concurrent is None else max_concurrent)
    try:
        record, key = store.create(name, tenant, limits)
    except KeyStoreError as exc:
        raise UsageError(str(exc)) from None
    _save(store, store_path)
    print(key)
    info(f"created key {record.name} ({record.id}) for tenant {record.tenant}; this is the only time it is shown")
    info(NEXT)


@app.command("list")
def list_keys(
    store_path: Path = STORE,
    show_revoked: bool = typer.Option(False, "--revoked", help="also list revoked keys"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Keys and their tenants' limits (never a key: the store has none)."""
    store = _load(store_path)
    rows = [k for k in store.keys if show_revoked or k.active]
    if as_json:
        emit_json([{"id": k.id, "name": k.name, "tenant": k.tenant, "created": k.created, "revoked": k.revoked,
                    "requests_per_minute": store.limits(k.tenant).requests_per_minute,
                    "max_concurrent": store.limits(k.tenant).max_concurrent} for k in rows])
        return
    table = Table(title=f"API keys in {store_path}")
    for col in ("id", "name", "tenant", "created", "state", "requests/min", "max concurrent"):
        table.add_column(col)
    for k in rows:
        lim = store.limits(k.tenant)
        table.add_row(k.id, k.name, k.tenant, k.created, "active" if k.active else f"revoked {k.revoked}",
                      str(lim.requests_per_minute or "-"), str(lim.max_concurrent or "-"))
    stdout.print(table)


@app.command("revoke")
def revoke(ref: str = typer.Argument(..., help="the key's id or name"), store_path: Path = STORE) -> None:
    """Revoke a key: once distributed, it gets 401 at the gateway and on every node."""
    store = _load(store_path)
    try:
        record = store.revoke(ref)
    except KeyStoreError as exc:
        raise UsageError(str(exc)) from None
    _save(store, store_path)
    info(f"revoked key {record.name} ({record.id}) of tenant {record.tenant}")
    info(NEXT)


@app.command("rotate")
def rotate(ref: str = typer.Argument(..., help="the key's id or name"), store_path: Path = STORE) -> None:
    """Replace a key by a new one of the same name and tenant (printed once); the old one is revoked."""
    store = _load(store_path)
    try:
        old, new, key = store.rotate(ref)
    except KeyStoreError as exc:
        raise UsageError(str(exc)) from None
    _save(store, store_path)
    print(key)
    info(f"rotated {old.name}: {old.id} revoked, {new.id} created for tenant {new.tenant}; "
         "the new key is shown only now")
    info(NEXT)
