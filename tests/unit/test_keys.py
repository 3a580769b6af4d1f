"""The key store and `llmrack keys`: keys are shown once, stored only as hashes, revocable and rotatable by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmrack.keys import KEY_PREFIX, KeyStore, KeyStoreError, TenantLimits, digest, haproxy_map, load, parse, save

ROOT = Path(__file__).resolve().parents[2]


def llmrack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, cwd=ROOT,
                          check=False, timeout=60)


def test_create_list_revoke_rotate_through_the_cli(tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    made = llmrack("keys", "create", "ci-bot", "--tenant", "search", "--requests-per-minute", "120",
                   "--max-concurrent", "4", "--store", str(store))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 43
    assert "only time it is shown" in made.stderr
    text = store.read_text()
    assert key not in text and digest(key) in text  # the hash, never the key
    assert store.stat().st_mode & 0o777 == 0o640
    other = llmrack("keys", "create", "notebook", "--tenant", "research", "--store", str(store)).stdout.strip()

    listed = json.loads(llmrack("keys", "list", "--json", "--store", str(store)).stdout)
    assert [(r["name"], r["tenant"], r["requests_per_minute"], r["max_concurrent"]) for r in listed] == [
        ("ci-bot", "search", 120, 4), ("notebook", "research", 0, 0)]
    assert key not in json.dumps(listed) and other not in json.dumps(listed)

    rotated = llmrack("keys", "rotate", "ci-bot", "--store", str(store))
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert new_key != key
    loaded = load(store)
    active = {k.name: k for k in loaded.active()}
    assert active["ci-bot"].sha256 == digest(new_key) and active["ci-bot"].tenant == "search"
    assert loaded.limits("search") == TenantLimits(120, 4)  # rotation keeps the tenant's limits

    revoked = llmrack("keys", "revoke", active["notebook"].id, "--store", str(store))
    assert revoked.returncode == 0 and revoked.stdout == ""
    assert [k.name for k in load(store).active()] == ["ci-bot"]
    everything = json.loads(llmrack("keys", "list", "--revoked", "--json", "--store", str(store)).stdout)
    assert sum(1 for r in everything if r["revoked"]) == 2


@pytest.mark.parametrize(("args", "says"), [
    (["create", "Bad Name", "--tenant", "t"], "is not valid: use 1-63 lower-case"),
    (["create", "ok", "--tenant", "UPPER"], "tenant 'UPPER' is not valid"),
    (["revoke", "nobody"], "no active key with id or name 'nobody'"),
    (["rotate", "nobody"], "see `llmrack keys list`"),
])
def test_mistakes_exit_2_with_the_fix(tmp_path: Path, args: list[str], says: str) -> None:
    result = llmrack("keys", *args, "--store", str(tmp_path / "keys.json"))
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr


def test_a_damaged_store_is_named_not_a_traceback(tmp_path: Path) -> None:
    store = tmp_path / "keys.json"
    store.write_text('{"format": "something-else"}')
    result = llmrack("keys", "list", "--store", str(store))
    assert result.returncode == 2 and "is not an llmrack key store" in result.stderr
    store.write_text("{not json")
    result = llmrack("keys", "create", "a", "--tenant", "t", "--store", str(store))
    assert result.returncode == 2 and "is not JSON" in result.stderr and "Traceback" not in result.stderr


def test_a_second_active_key_of_one_name_is_refused() -> None:
    store = KeyStore(tenants={}, keys=[])
    store.create("svc", "team")
    with pytest.raises(KeyStoreError, match="already named 'svc'"):
        store.create("svc", "team")


def test_the_gateway_map_holds_active_keys_with_their_tenant_limits(tmp_path: Path) -> None:
    store = KeyStore(tenants={}, keys=[])
    a, key_a = store.create("a", "alpha", TenantLimits(requests_per_minute=60, max_concurrent=2))
    b, _ = store.create("b", "beta")
    store.revoke("b")
    save(store, tmp_path / "k.json")
    again = parse((tmp_path / "k.json").read_text())
    assert haproxy_map(again) == f"{digest(key_a)} alpha:{a.id}:60:2\n"
    assert b.sha256 not in haproxy_map(again)
