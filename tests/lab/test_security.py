"""The rack's front door on the session lab (HAProxy on node1, from the gateway role): TLS 1.2/1.3 only with a chain
that verifies against the rack CA the play made, tenants' keys checked at the gateway and on the nodes, one tenant
flooding over its quota answered 429 + Retry-After while the other's requests all succeed (its p99 TTFT printed),
a key revoked under load refused within seconds by keys.yml with no restart and no failed request for valid keys,
and per-tenant usage counted by the nodes equal to what the clients were answered.

The lab's own key stays valid throughout (it is in the store, as tenant "lab"), and the nodes' keys file and the
gateway's config are put back at the end, so the other lab tests see the lab as it was.
"""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from llmrack.contracts import metrics as names
from llmrack.keys import KeyRecord, KeyStore, TenantLimits, digest, save
from llmrack.lab import lab, serving_artifacts
from tests.ansible.test_gateway_haproxy import _handshake
from tests.lab.hosts import host_of
from tests.lab.test_gateway import Load

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODE_KEYS_FILE = "/etc/llmrack/serving-api-keys"  # the serving role's serving_api_keys_file default


@dataclass
class Flood:
    """Threads sending short requests with one key as fast as they are answered; counts the answers' statuses."""

    url: str
    key: str
    threads: int = 6
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _running: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        body = {"model": serving_artifacts.SERVED_NAME, "prompt": "flood", "max_tokens": 4, "ignore_eos": True}
        with httpx.Client(base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {self.key}"}) as c:
            while not self._stop.is_set():
                r = c.post("/v1/completions", json=body)
                self.statuses[r.status_code] += 1
                if r.status_code == 429:
                    self.retry_after.add(r.headers.get("retry-after", ""))
                    # Still far over the quota, without spinning the lab's two cores on refusals.
                    time.sleep(0.05)

    def __enter__(self) -> Flood:
        self._running = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for t in self._running:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._running:
            t.join(timeout=120)


@dataclass
class FirstRefusal:
    """Asks the gateway with one key every 0.1 s and notes when it is first refused (401)."""

    url: str
    key: str
    at: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10, headers={"Authorization": f"Bearer {self.key}"}) as c:
            while not self._stop.is_set() and self.at is None:
                if c.get("/v1/models").status_code == 401:
                    self.at = time.monotonic()
                self._stop.wait(0.1)

    def after(self, start: float) -> float:
        return float("nan") if self.at is None else self.at - start

    def __enter__(self) -> FirstRefusal:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(15)


def _ttft(url: str, key: str, n: int) -> list[float]:
    """Seconds to the first streamed token of n requests in a row."""
    out = []
    body = {"model": serving_artifacts.SERVED_NAME, "prompt": "The rack", "max_tokens": 4, "ignore_eos": True,
            "stream": True}
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as c:
        for _ in range(n):
            start = time.perf_counter()
            with c.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200, r.read()[:200]
                first = None
                for line in r.iter_lines():  # read to the end: the request is complete before the next
                    if first is None and line.startswith("data: {"):
                        first = time.perf_counter() - start
                assert first is not None
                out.append(first)
    return out


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


def _tenant_usage(url: str) -> dict[tuple[str, str], float]:
    """The node's per-tenant counters, straight from its /metrics."""
    out: dict[tuple[str, str], float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("llmrack_tenant_"):
            series, value = line.rsplit(" ", 1)
            out[(series.split("{")[0], series.split('tenant="')[1].split('"')[0])] = float(value)
    return out


# Run on a node: connect to each host:port at once; "open" (connected), "refused" (nothing listens: RST) or
# "dropped" (no answer within the timeout: what the firewall does to what it does not accept).
PROBE = """
import concurrent.futures, socket, sys
def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return "open"
    except socket.timeout:
        return "dropped"
    except OSError:
        return "refused"
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    print(" ".join(pool.map(probe, sys.argv[1:])))
"""


def _probe(result: lab.UpResult, node: str, targets: list[str]) -> dict[str, str]:
    out = host_of(result, node).run("python3 -c %s " + " ".join(["%s"] * len(targets)), PROBE, *targets)
    assert out.rc == 0, out.stderr
    return dict(zip(targets, out.stdout.split(), strict=True))


def test_ports_closed_to_other_nodes_open_to_gateway_and_prometheus(lab_up: lab.UpResult) -> None:
    """The firewall (site.yml, the lab's admin network is the host's side): node2 is neither the gateway nor
    Prometheus, so node1's serving port, exporter, HAProxy's stats/metrics port and SSH do not answer it, while the
    gateway's API does; node1 (gateway and Prometheus) reaches node2's serving port and exporter. The host, the
    admin network, reaches everything (every other lab test)."""
    state = lab_up.state
    gateway, other = state.nodes[0], state.nodes[1]
    assert gateway.gateway_port and gateway.monitoring, "node1 is the lab's gateway and Prometheus"
    closed = [f"{gateway.name}:{p}" for p in (8000, 9100, 8404, 22)]
    started = time.monotonic()
    from_other = _probe(lab_up, other.name, [*closed, f"{gateway.name}:8080"])
    from_gateway = _probe(lab_up, gateway.name, [f"{other.name}:8000", f"{other.name}:9100"])
    print(f"\nfrom {other.name}: {from_other}; from {gateway.name}: {from_gateway} "
          f"({time.monotonic() - started:.1f} s)")
    assert {t: from_other[t] for t in closed} == dict.fromkeys(closed, "dropped")
    assert from_other[f"{gateway.name}:8080"] == "open"
    assert set(from_gateway.values()) == {"open"}, from_gateway
    for node in state.nodes:
        table = host_of(lab_up, node.name).check_output("nft list table inet llmrack")
        assert "policy drop" in table and state.host_address and state.host_address in table, table
        if node is gateway:  # node2's probes were dropped, and counted
            assert int(table.split("counter packets ")[1].split()[0]) > 0, table


def test_prometheus_and_the_stats_page_ask_for_credentials(lab_up: lab.UpResult) -> None:
    """One pair of credentials from the lab's vault (llmrack_monitoring_user / _password): Prometheus' API refuses
    a request without them (401) and answers one with them, Prometheus scrapes itself with them, `llmrack usage`
    reads it with them from the environment (and without them exits 2 naming what to set), and HAProxy's stats
    page on node1's management address asks for them while its /metrics does not."""
    state = lab_up.state
    node1 = state.nodes[0]
    assert node1.prometheus_credentials and node1.prometheus_address and node1.address
    user, password = node1.prometheus_credentials.split(":", 1)
    query = f"{node1.prometheus_address}/api/v1/query"
    assert httpx.get(query, params={"query": "up"}, timeout=10).status_code == 401
    assert httpx.get(query, params={"query": "up"}, auth=(user, "wrong"), timeout=10).status_code == 401
    deadline = time.monotonic() + 40
    while True:  # a target is up at its first successful scrape (every 15 s)
        r = httpx.get(query, params={"query": 'up{job="prometheus"}'}, auth=(user, password), timeout=10)
        assert r.status_code == 200, r.text
        if [row["value"][1] for row in r.json()["data"]["result"]] == ["1"]:
            break
        assert time.monotonic() < deadline, f"Prometheus does not scrape itself with its credentials: {r.text}"
        time.sleep(2)

    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMRACK_PROMETHEUS")}
    usage = [sys.executable, "-m", "llmrack", "usage", "--prometheus", node1.prometheus_address, "--since", "1h",
             "--json"]
    refused = subprocess.run(usage, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "LLMRACK_PROMETHEUS_PASSWORD" in refused.stderr, refused.stderr
    answered = subprocess.run(usage, env={**env, "LLMRACK_PROMETHEUS_USER": user,
                                          "LLMRACK_PROMETHEUS_PASSWORD": password},
                              capture_output=True, text=True, timeout=60, check=False)
    assert answered.returncode == 0, answered.stderr

    # The stats page, from node1 itself (node2 is firewalled off the port); the uri module never logs the password.
    gateway = host_of(lab_up, node1.name)
    stats = f"http://{node1.address}:8404"
    assert gateway.ansible("uri", f"url={stats}/stats status_code=401", check=False)["status"] == 401
    assert gateway.ansible("uri", f"url={stats}/metrics", check=False)["status"] == 200
    ok = gateway.ansible("uri", f"url={stats}/stats url_username={user} url_password={password} "
                                "force_basic_auth=true", check=False)
    assert ok["status"] == 200, ok
    print("\nPrometheus: 401 without credentials, 200 with; stats page: 401 without, 200 with")


def test_front_door_tls_keys_quotas_revocation_and_usage(lab_up: lab.UpResult, tmp_path: Path) -> None:
    state = lab_up.state
    gateway = state.gateway_url
    assert gateway and gateway.startswith("https://")
    port = int(gateway.rsplit(":", 1)[1])
    lab_key = serving_artifacts.api_key(state.lab_dir)

    # --- TLS, from the host ---------------------------------------------------------------------------------
    assert _handshake(port, ssl.TLSVersion.TLSv1_3) is not None
    assert str(_handshake(port, ssl.TLSVersion.TLSv1_2)).startswith("ECDHE-")
    for old in (ssl.TLSVersion["TLSv1"], ssl.TLSVersion["TLSv1_1"]):
        assert _handshake(port, old, "ALL:@SECLEVEL=0") is None
    for weak in ("AES128-SHA", "AES256-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA"):
        assert _handshake(port, ssl.TLSVersion.TLSv1_2, weak) is None, weak
    verified = ssl.create_default_context(cafile=str(state.rack_ca))
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            verified.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        print(f"\nTLS: {tls.version()} {tls.cipher()[0]}; chain verified against {state.rack_ca}")  # type: ignore[index]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)

    # --- tenants: alpha unlimited, beta limited; the lab's key stays valid as tenant "lab" ---------------------
    store = KeyStore(tenants={"lab": TenantLimits()}, keys=[
        KeyRecord(id="klab0000", name="lab", tenant="lab", sha256=digest(lab_key), created="2026-12-07T00:00:00Z")])
    _, alpha = store.create("alpha-app", "alpha")
    _, alpha_old = store.create("alpha-old", "alpha")
    _, beta = store.create("beta-batch", "beta", TenantLimits(requests_per_minute=120, max_concurrent=2))
    store_file = tmp_path / "keys.json"
    save(store, store_file)
    extra = tmp_path / "keys-vars.yml"
    extra.write_text(yaml.safe_dump({"llmrack_keys_store": str(store_file)}))
    nodes = [n.name for n in state.nodes]
    for n in nodes:  # kept on the node, so no key crosses a command line
        assert host_of(lab_up, n).run("cp -p %s %s.before-test", NODE_KEYS_FILE, NODE_KEYS_FILE).rc == 0
    try:
        started = time.monotonic()
        gate = lab.provision(state.lab_dir, "site.yml", ["--tags", "gateway", "-e", f"@{extra}"])
        assert gate.rc == 0, f"see {gate.log}"
        keys = lab.provision(state.lab_dir, "keys.yml", ["-e", f"@{extra}"])
        assert keys.rc == 0, f"see {keys.log}"
        print(f"keys to nodes and gateway configured in {time.monotonic() - started:.0f} s")
        r = httpx.post(f"{gateway}/v1/completions", headers={"Authorization": "Bearer lrk-unknown"},
                       json={"model": "x", "prompt": "x"}, timeout=30)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        usage_before = {n.name: _tenant_usage(n.serving_url) for n in state.nodes}

        # --- beta floods over its quota while alpha works: alpha fails nothing ---------------------------------
        quiet = _ttft(gateway, alpha, 30)
        with Load(gateway, alpha, clients=2) as steady, Load(gateway, alpha_old, clients=1) as doomed, \
                Flood(gateway, beta, threads=6) as flood:
            time.sleep(5)
            busy = _ttft(gateway, alpha, 30)
            # --- revoke alpha-old under that load -----------------------------------------------------------------
            store.revoke("alpha-old")
            save(store, store_file)
            revoked_at = time.monotonic()
            with FirstRefusal(gateway, alpha_old) as first_401:
                applied = lab.provision(state.lab_dir, "keys.yml", ["-e", f"@{extra}"])
            assert applied.rc == 0, f"see {applied.log}"
            applied_after = time.monotonic() - revoked_at
            applied_index = len(doomed.results)  # the doomed key's requests answered when keys.yml returned
            deadline = time.monotonic() + 10
            while len(doomed.results) < applied_index + 4 or not all(
                    "HTTP 401" in o for _, o in doomed.results[-3:]):
                assert time.monotonic() < deadline, "the revoked key is still served 10 s after keys.yml"
                time.sleep(0.2)
            refused_after = time.monotonic() - revoked_at
        print(f"alpha TTFT p99: {_p99(quiet) * 1000:.0f} ms alone, {_p99(busy) * 1000:.0f} ms while beta floods "
              f"({sum(flood.statuses.values())} beta requests: {dict(flood.statuses)}); alpha under load: "
              f"{len(steady.results)} requests, {len(steady.failures())} failed; revoked key refused "
              f"{refused_after:.1f} s after revoke (keys.yml took {applied_after:.1f} s); the gateway refused it "
              f"first {first_401.after(revoked_at):.1f} s after revoke")
        # keys.yml takes the change to the gateways first: the revoked key was refused before the play returned.
        assert first_401.at is not None and first_401.at - revoked_at < applied_after
        assert steady.results and not steady.failures(), Counter(steady.failures())
        # The stated bound: alpha's p99 TTFT stays under the lab spec's 5 s latency floor while beta floods.
        assert _p99(busy) < 5.0
        assert flood.statuses[429] > 0 and flood.retry_after == {"1"}
        assert set(flood.statuses) <= {200, 429}, flood.statuses
        # The doomed key's requests were served until the revocation reached them and refused after: nothing else.
        # Every request passes the gateway, which keys.yml gives the new map first: once one request is refused,
        # every later one is (one client, so answers come in order), before the nodes even have the new store.
        outcomes = [o for _, o in doomed.results]
        assert all(o == "ok" or "HTTP 401" in o for o in outcomes), Counter(outcomes)
        first_refused = next(i for i, o in enumerate(outcomes) if "HTTP 401" in o)
        assert all("HTTP 401" in o for o in outcomes[first_refused:]), outcomes[first_refused:]
        assert all("HTTP 401" in o for o in outcomes[applied_index + 1:]), outcomes[applied_index:]

        # --- usage: what the nodes counted for alpha equals what the clients were answered ------------------
        time.sleep(1)
        usage_after = {n.name: _tenant_usage(n.serving_url) for n in state.nodes}
        counted = sum(usage_after[n].get((names.counter_series(names.TENANT_REQUESTS), "alpha"), 0)
                      - usage_before[n].get((names.counter_series(names.TENANT_REQUESTS), "alpha"), 0) for n in nodes)
        answered = 60 + len([o for _, o in steady.results if o == "ok"]) + outcomes.count("ok")
        print(f"usage: alpha requests counted by the nodes {counted:.0f}, answered to the clients {answered}")
        assert counted == answered
    finally:
        # Back as the lab had it: the nodes' own keys file (in place: the engine has it bind-mounted) and the
        # gateway without keys.
        for n in nodes:
            back = host_of(lab_up, n).run("cp %s.before-test %s && rm %s.before-test", NODE_KEYS_FILE,
                                          NODE_KEYS_FILE, NODE_KEYS_FILE)
            assert back.rc == 0, back.stderr
        restore = lab.provision(state.lab_dir, "site.yml", ["--tags", "gateway"])
        assert restore.rc == 0, f"see {restore.log}"
