"""Keys from the key store on a real server: caller by key, tenant usage series, reload without a restart."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmrack.contracts import metrics as names
from llmrack.keys import KeyStore, TenantLimits, load, save
from tests.serving.conftest import ThreadServer


@pytest.fixture(scope="module")
def keyed(qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadServer, Path, dict]]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    store = KeyStore(tenants={}, keys=[])
    _, alpha = store.create("alpha-svc", "alpha", TenantLimits(60, 2))
    _, beta = store.create("beta-svc", "beta")
    save(store, path)
    with ThreadServer(qwen2_dir, api_key_file=path, max_num_seqs=4, max_model_len=512) as srv:
        srv.state.keys._recheck_s = 0.2  # the test waits for a reload; production rechecks every second
        yield srv, path, {"alpha": alpha, "beta": beta}


def _complete(url: str, key: str, max_tokens: int) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": "tiny-qwen2", "prompt": "the rack", "max_tokens": max_tokens,
                            "ignore_eos": True})


def _tenant_samples(url: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("llmrack_tenant_"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{")[0]
            tenant = series.split('tenant="')[1].split('"')[0]
            out[(name, tenant)] = float(value)
    return out


def test_usage_is_counted_per_tenant_never_per_key(keyed: tuple[ThreadServer, Path, dict]) -> None:
    srv, _, keys = keyed
    before = _tenant_samples(srv.url)
    # Both tenants' series exist from the start (at 0 before any request), so Prometheus sees the whole increase.
    assert before[(names.counter_series(names.TENANT_REQUESTS), "beta")] == 0
    sent = {"alpha": [], "beta": []}  # (prompt tokens, completion tokens) per request, from the responses
    for tenant, n, max_tokens in (("alpha", 3, 5), ("beta", 2, 7)):
        for _ in range(n):
            r = _complete(srv.url, keys[tenant], max_tokens)
            assert r.status_code == 200, r.text
            usage = r.json()["usage"]
            sent[tenant].append((usage["prompt_tokens"], usage["completion_tokens"]))
    after = _tenant_samples(srv.url)
    for tenant, rows in sent.items():
        def grew(name: str, tenant: str = tenant) -> float:
            key = (names.counter_series(name), tenant)
            return after[key] - before.get(key, 0)
        assert grew(names.TENANT_REQUESTS) == len(rows)
        assert grew(names.TENANT_PROMPT_TOKENS) == sum(p for p, _ in rows)
        assert grew(names.TENANT_GENERATION_TOKENS) == sum(c for _, c in rows)
    text = httpx.get(f"{srv.url}/metrics").text
    assert keys["alpha"] not in text and keys["beta"] not in text and "the rack" not in text


def test_a_revoked_key_is_refused_and_a_new_one_admitted_without_a_restart(
        keyed: tuple[ThreadServer, Path, dict]) -> None:
    srv, path, keys = keyed
    engine = srv.state.engine
    store = load(path)
    store.revoke("beta-svc")
    _, gamma = store.create("gamma-svc", "gamma")
    save(store, path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))  # an mtime that differs even on coarse clocks
    deadline = time.monotonic() + 5
    while _complete(srv.url, keys["beta"], 1).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key is still accepted after 5 s"
        time.sleep(0.1)
    assert _complete(srv.url, gamma, 2).status_code == 200
    assert _complete(srv.url, keys["alpha"], 2).status_code == 200
    assert srv.state.engine is engine  # same engine: nothing restarted


def test_a_damaged_file_keeps_the_keys_it_had(keyed: tuple[ThreadServer, Path, dict]) -> None:
    srv, path, keys = keyed
    good = path.read_text()
    # What a reader can see of a file copied in place: empty, then half of it.
    for seen in ("", good[: len(good) // 2]):
        path.write_text(seen)
        time.sleep(0.5)
        assert _complete(srv.url, keys["alpha"], 1).status_code == 200
    path.write_text(good)
