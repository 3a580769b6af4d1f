"""The rack's front door: one endpoint (HAProxy on node1) balancing both nodes, scraped by Prometheus, and a
full rolling release under a steady load of streaming and non-streaming requests through it: serving.yml rolls a
new release across every node and then back to the inventory's, draining each node at the gateway before its
restart; not one request fails and not one stream is cut short. Then `llmrack canary judge` and `llmrack drift`
read that traffic from the lab's Prometheus."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from llmrack.contracts import metrics
from llmrack.contracts.inventory import CANARY_GROUP, DEPLOYMENT_FILE, DEPLOYMENT_VAR
from llmrack.lab import lab, releases, serving_artifacts
from llmrack.observe.canary import CanaryThresholds, Verdict, judge_from_prometheus
from llmrack.observe.drift import drift
from llmrack.observe.engines import EngineName
from llmrack.observe.histogram import Band
from llmrack.observe.prometheus import Prometheus
from tests.lab.hosts import host_of
from tests.lab.test_rollout import HISTORY

pytestmark = [pytest.mark.lab, pytest.mark.slow]

MAX_TOKENS = 12


@dataclass
class Load:
    """Clients sending requests through the gateway back to back until stopped: half stream, half do not."""

    url: str
    key: str
    clients: int = 4
    results: list[tuple[str, str]] = field(default_factory=list)  # (kind, "ok" or what went wrong)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _request(self, client: httpx.Client, stream: bool) -> str:
        body: dict[str, object] = {"model": serving_artifacts.SERVED_NAME, "prompt": "The rack",
                                   "max_tokens": MAX_TOKENS, "ignore_eos": True, "temperature": 0, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if not stream:
            r = client.post("/v1/completions", json=body)
            if r.status_code != 200:
                return f"HTTP {r.status_code}: {r.text[:200]}"
            got = r.json()["usage"]["completion_tokens"]
            return "ok" if got == MAX_TOKENS else f"{got} of {MAX_TOKENS} tokens"
        chunks, done, reason, tokens = 0, False, None, None
        with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return f"HTTP {r.status_code}: {r.read()[:200]!r}"
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                chunk = json.loads(line[6:])
                if chunk["choices"]:
                    chunks += 1
                    reason = chunk["choices"][0]["finish_reason"] or reason
                elif chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
        # Complete: the last text chunk says why it ended, the usage chunk counts every token, then [DONE].
        if not done or reason != "length" or tokens != MAX_TOKENS:
            return (f"truncated stream: {chunks} chunks, finish_reason {reason}, {tokens} tokens, "
                    f"[DONE] {'seen' if done else 'missing'}")
        return "ok"

    def _run(self, stream: bool) -> None:
        kind = "stream" if stream else "plain"
        with httpx.Client(base_url=self.url, timeout=120, headers={"Authorization": f"Bearer {self.key}"}) as client:
            while not self._stop.is_set():
                try:
                    outcome = self._request(client, stream)
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                self.results.append((kind, outcome))

    def __enter__(self) -> Load:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)

    def failures(self) -> list[tuple[str, str]]:
        return [r for r in self.results if r[1] != "ok"]


def _prometheus(url: str, query: str) -> list[dict[str, object]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=10)
    r.raise_for_status()
    result: list[dict[str, object]] = r.json()["data"]["result"]
    return result


def _wait_for_scrape(prometheus: str, query: str, label: str, expected: set[str],
                     timeout: float = 90) -> set[str]:
    """Poll until the `label` values of `query`'s series are `expected` (Prometheus scrapes every 15 s)."""
    deadline = time.monotonic() + timeout
    got: set[str] = set()
    while time.monotonic() < deadline:
        got = {str(row["metric"][label]) for row in _prometheus(prometheus, query)}  # type: ignore[index]
        if got == expected:
            break
        time.sleep(2)
    return got


def test_gateway_balances_every_node_and_is_scraped(lab_up: lab.UpResult) -> None:
    gateway = lab_up.state.gateway_url
    assert gateway, "the lab has no gateway"
    key = serving_artifacts.api_key(lab_up.state.lab_dir)
    auth = {"Authorization": f"Bearer {key}"}
    # Keys stay the nodes' business: the gateway passes the header through, and a request without one is refused.
    refused = httpx.post(f"{gateway}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 1},
                         timeout=30)
    assert refused.status_code == 401, refused.text
    with Load(gateway, key, clients=4) as load:
        time.sleep(8)
    assert load.results and not load.failures(), Counter(load.failures())
    models = httpx.get(f"{gateway}/v1/models", headers=auth, timeout=30)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == serving_artifacts.SERVED_NAME

    prometheus = lab_up.state.monitoring_node.prometheus_url  # type: ignore[union-attr]
    assert prometheus
    assert _wait_for_scrape(prometheus, 'up{job="gateway"} == 1', "node", {"node1"}) == {"node1"}
    # Both nodes answered requests through the one endpoint (least outstanding requests spreads them).
    names = {n.name for n in lab_up.state.nodes}
    served = _wait_for_scrape(prometheus, 'haproxy_server_http_responses_total{proxy="llmrack_serving",code="2xx"} > 0',
                              "server", names)
    assert served == names


def test_canary_promoted_on_the_judges_word_and_a_rolling_release_under_load_fail_nothing(
        lab_up: lab.UpResult, tmp_path: Path) -> None:
    """Under a steady load through the gateway: a new release goes to node2 alone as a canary; `serving.yml -e
    promote=true` is refused when the judge cannot judge (a spec asking for more canary requests than any window
    holds: nothing changes), then, on the lab spec's thresholds once the canary has its requests, promotes the
    release to node1; and a full rolling release returns both nodes to the inventory's release. Each restart
    drains the node at the gateway first: not one request fails."""
    lab_dir = lab_up.state.lab_dir
    gateway = lab_up.state.gateway_url
    assert gateway
    key = serving_artifacts.api_key(lab_dir)
    # Through the lab's registry, by digest, as a rack's release arrives.
    release = releases.make_release(lab_up.state, "gateway")
    digest, new_release = release.digest, release.extra_vars
    names = sorted(n.name for n in lab_up.state.nodes)
    stable, canary = names[0], names[-1]
    # The canary group, as a rack's inventory would name it; Prometheus labels its series variant="canary".
    canary_inventory = tmp_path / "canary.yml"
    canary_inventory.write_text(yaml.safe_dump({"all": {"children": {CANARY_GROUP: {"hosts": {canary: {}}}}}}))
    inventories = ["-i", str(lab_up.state.inventory), "-i", str(canary_inventory)]
    relabel = lab.provision(lab_dir, "site.yml", [*inventories, "--tags", "monitoring"])
    assert relabel.rc == 0, f"see {relabel.log}"

    def running(name: str) -> str:
        history = host_of(lab_up, name).file(HISTORY).content_string
        return str(json.loads(history)[0])

    try:
        inventory_release = running(stable)
        # The same spec asking for more canary requests than any window holds: the judge cannot judge (exit 2).
        spec = yaml.safe_load((lab_up.state.inventory.parent / DEPLOYMENT_FILE).read_text())
        spec[DEPLOYMENT_VAR]["canary"]["min_requests"] = 10**9
        unjudgeable = tmp_path / "unjudgeable.yml"
        unjudgeable.write_text(yaml.safe_dump(spec))
        runs: dict[str, lab.UpResult] = {}
        with Load(gateway, key, clients=4) as load:
            time.sleep(3)
            runs["canary"] = lab.provision(lab_dir, "serving.yml",
                                           [*inventories, "--limit", CANARY_GROUP, *new_release])
            runs["unjudged"] = lab.provision(
                lab_dir, "serving.yml", [*inventories, "-e", "promote=true", "-e", f"@{unjudgeable}", *new_release])
            assert running(canary) == digest and running(stable) == inventory_release
            # Two scrapes of the canary under load give the judge its requests (the lab spec: 50 per variant).
            scraped = _wait_for_scrape(
                lab_up.state.monitoring_node.prometheus_url or "",  # type: ignore[union-attr]
                f'{metrics.counter_series(metrics.REQUEST_SUCCESS)}{{variant="canary"}} > 60', "node", {canary},
                timeout=180)
            assert scraped == {canary}, f"Prometheus never saw 60 answers from the canary {canary} in 180 s"
            runs["promote"] = lab.provision(lab_dir, "serving.yml", [*inventories, "-e", "promote=true", *new_release])
            # And back to the inventory's release: a full rolling release of every node, still under load.
            runs["back"] = lab.provision(lab_dir, "serving.yml")
            time.sleep(3)

        kinds = Counter(kind for kind, _ in load.results)
        print(f"\ncanary, promote and rolling release under load: {len(load.results)} requests ({dict(kinds)}), "
              f"{len(load.failures())} failed; playbooks " + ", ".join(f"{k} {r.seconds['serving.yml']:.0f} s"
                                                                      for k, r in runs.items()))
        unjudged = runs["unjudged"]
        unjudged_log = unjudged.log.read_text() if unjudged.log else ""
        assert unjudged.rc != 0 and "llmrack canary judge: cannot_judge" in unjudged_log, f"see {unjudged.log}"
        assert all(c["changed"] == 0 for c in unjudged.recap.values()), unjudged.recap
        restarted = {"canary": [canary], "promote": [stable], "back": names}
        for what, hosts in restarted.items():
            run = runs[what]
            assert run.rc == 0, f"{what}: see {run.log}: " + " | ".join(t[:800] for t in run.failed_tasks)
            assert sorted(h for h, c in run.recap.items() if c["changed"] > 0) == hosts, (what, run.recap)
            # Each restarted node, one at a time, was drained at the gateway before its restart and taken back after
            # /ready; every node of the run passes the return task once (the others to stay in service).
            log = run.log.read_text() if run.log else ""
            assert log.count("Gateway | Wait until the requests the node holds have finished]") == len(hosts), run.log
            assert log.count("Gateway | Return the node to the gateway and wait until its health check passes]") == len(
                run.recap), run.log
        promote_log = runs["promote"].log.read_text() if runs["promote"].log else ""
        assert "Serving | Assert the judge says promote" in promote_log
        assert not load.failures(), Counter(load.failures())
        assert kinds["stream"] >= 20 and kinds["plain"] >= 20, kinds
        for node in lab_up.state.nodes:
            assert running(node.name) == inventory_release
            assert httpx.get(f"{node.serving_url}/ready", timeout=10).status_code == 200
    finally:
        # The lab's Prometheus back to one variant for the tests after this one, whatever happened above.
        assert lab.provision(lab_dir, "site.yml", ["--tags", "monitoring"]).rc == 0


def test_canary_judge_and_drift_read_the_lab_prometheus(lab_up: lab.UpResult) -> None:
    """The judge's and the drift report's PromQL against the lab's real Prometheus, on the traffic the tests above
    sent through the gateway: node2 judged as if it were a canary of node1, the last minutes' traffic shape
    against the minutes before. Both nodes run the same release and got the same prompts."""
    prometheus = lab_up.state.monitoring_node.prometheus_url  # type: ignore[union-attr]
    assert prometheus
    serving = 'job="serving"'
    assert _wait_for_scrape(prometheus, f'{metrics.counter_series(metrics.REQUEST_SUCCESS)}{{{serving}}} > 0', "node",
                            {"node1", "node2"}) == {"node1", "node2"}
    thresholds = CanaryThresholds(window="15m", min_requests=10)
    judgement = judge_from_prometheus(Prometheus(prometheus), EngineName.llmrack, thresholds, serving,
                                      stable='node="node1"', canary='node="node2"')
    rows = {r.check: r for r in judgement.rows}
    print("\n" + "; ".join(f"{r.check}: {r.stable} vs {r.canary} ({r.passed})" for r in judgement.rows))
    assert judgement.verdict is not Verdict.cannot_judge, judgement
    assert rows["TTFT p99"].passed is not None and rows["ITL p99"].passed is not None
    # Same prompt, same max_tokens on both nodes: the output lengths cannot differ.
    assert rows["output length PSI"].passed is True

    report = drift(Prometheus(prometheus), EngineName.llmrack, current="3m", baseline="15m", selector=serving)
    by_name = {r.histogram: r for r in report.rows}
    assert all(r.current_requests > 0 for r in report.rows), report
    print("drift: " + "; ".join(f"{r.histogram}: PSI {r.psi} ({r.band})" for r in report.rows))
    # One prompt and one length all along: no shift in either histogram (when the baseline window has data).
    generated = by_name["generated tokens per request"]
    assert generated.psi is None or generated.band is Band.none, report
