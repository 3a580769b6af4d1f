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

import httpx
import pytest

from llmrack.contracts import metrics as names
from llmrack.lab import lab, serving_artifacts
from llmrack.observe.canary import CanaryThresholds, Verdict, judge_from_prometheus
from llmrack.observe.drift import drift
from llmrack.observe.engines import EngineName
from llmrack.observe.histogram import Band
from llmrack.observe.prometheus import Prometheus
from tests.lab.test_rollout import second_release

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


def test_rolling_release_under_load_fails_nothing(lab_up: lab.UpResult) -> None:
    lab_dir = lab_up.state.lab_dir
    gateway = lab_up.state.gateway_url
    assert gateway
    key = serving_artifacts.api_key(lab_dir)
    serving_dir = lab_dir / "mirror" / "serving"
    [archive] = [p for p in serving_dir.glob("*.oci.tar") if not p.name.startswith("release-")]
    digest = second_release(archive, serving_dir / "release-gateway.oci.tar", "release-gateway")
    new_release = ["-e", f"serving_image_digest={digest}",
                   "-e", "serving_image_archive_url=file:///srv/mirror/serving/release-gateway.oci.tar"]
    names = sorted(n.name for n in lab_up.state.nodes)

    with Load(gateway, key, clients=4) as load:
        time.sleep(3)
        rolled = lab.provision(lab_dir, "serving.yml", new_release)
        # And back to the inventory's release: a second full rolling release, still under load.
        back = lab.provision(lab_dir, "serving.yml")
        time.sleep(3)
    for run in (rolled, back):
        assert run.rc == 0, f"see {run.log}"
        assert sorted(h for h, c in run.recap.items() if c["changed"] > 0) == names, run.recap
        # Each node, one at a time, was drained at the gateway before its restart and taken back after /ready.
        log = run.log.read_text() if run.log else ""
        assert log.count("Gateway | Wait until the requests the node holds have finished]") == len(names), run.log
        assert log.count("Gateway | Return the node to the gateway and wait until its health check passes]") == len(
            names), run.log
    kinds = Counter(kind for kind, _ in load.results)
    print(f"\nrolling release under load: {len(load.results)} requests ({dict(kinds)}), "
          f"{len(load.failures())} failed; playbooks {rolled.seconds['serving.yml']:.0f} s + "
          f"{back.seconds['serving.yml']:.0f} s")
    assert not load.failures(), Counter(load.failures())
    assert kinds["stream"] >= 20 and kinds["plain"] >= 20, kinds
    for node in lab_up.state.nodes:
        assert httpx.get(f"{node.serving_url}/ready", timeout=10).status_code == 200


def test_canary_judge_and_drift_read_the_lab_prometheus(lab_up: lab.UpResult) -> None:
    """The judge's and the drift report's PromQL against the lab's real Prometheus, on the traffic the tests above
    sent through the gateway: node2 judged as if it were a canary of node1, the last minutes' traffic shape
    against the minutes before. Both nodes run the same release and got the same prompts."""
    prometheus = lab_up.state.monitoring_node.prometheus_url  # type: ignore[union-attr]
    assert prometheus
    serving = 'job="serving"'
    assert _wait_for_scrape(prometheus, f'{names.counter_series(names.REQUEST_SUCCESS)}{{{serving}}} > 0', "node",
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
