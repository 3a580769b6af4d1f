"""Real servers' per-request token histograms and latencies, judged by llmrack's canary judge and drift report.

Each window is what Prometheus' increase() would give: the difference of two scrapes of the server's /metrics.
A canary made slower on purpose (one sequence at a time, so concurrent requests queue) is rolled back; a healthy
canary (the stable settings) is promoted; a synthetic shift of prompt lengths (8 -> 300 tokens) is a major drift
of prompt lengths and none of output lengths.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmrack.contracts import metrics as names
from llmrack.observe.canary import CanaryThresholds, VariantStats, Verdict, judge
from llmrack.observe.drift import compare
from llmrack.observe.histogram import Band, Histogram
from tests.serving.conftest import ThreadServer

REQUESTS = 48
MAX_TOKENS = 32
# Thresholds as a spec would set them for this machine: two cores shared with other jobs make latencies swing
# run to run, so p99s under one second count as equal and only a doubling counts as worse.
THRESHOLDS = CanaryThresholds(min_requests=REQUESTS, latency_floor_seconds=1.0, max_ttft_p99_ratio=2.0,
                              max_itl_p99_ratio=2.0)


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name -> {labels: value} of one /metrics scrape."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


class Window:
    """Two scrapes of one server: what happened in between, as increase() over that window would say."""

    def __init__(self, before: dict[str, dict[tuple[tuple[str, str], ...], float]],
                 after: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> None:
        self.before, self.after = before, after

    def total(self, sample: str, **match: str) -> float:
        def pick(scrape: dict[str, dict[tuple[tuple[str, str], ...], float]]) -> float:
            return sum(v for labels, v in scrape.get(sample, {}).items()
                       if all(dict(labels).get(k) == want for k, want in match.items()))
        return pick(self.after) - pick(self.before)

    def histogram(self, name: str) -> Histogram:
        buckets: dict[float, float] = {}
        for labels, value in self.after.get(f"{name}_bucket", {}).items():
            before = self.before.get(f"{name}_bucket", {}).get(labels, 0.0)
            buckets[float(dict(labels)["le"])] = buckets.get(float(dict(labels)["le"]), 0.0) + value - before
        return Histogram.from_buckets(buckets)

    def stats(self) -> VariantStats:
        failed = sum(self.total(names.counter_series(names.REQUEST_FAILURE), status=str(code))
                     for code in range(500, 600))
        finished = self.total(names.counter_series(names.REQUEST_SUCCESS))
        return VariantStats(requests=finished + failed, errors=failed,
                            ttft=self.histogram(names.TIME_TO_FIRST_TOKEN),
                            itl=self.histogram(names.INTER_TOKEN_LATENCY),
                            output_tokens=self.histogram(names.REQUEST_GENERATION_TOKENS))


def load(urls: list[str], prompt_len: int, requests: int = REQUESTS) -> list[Window]:
    """`requests` completions sent at once to each server in `urls` (all servers at the same time, as a canary and
    stable serve side by side), each `prompt_len` prompt tokens and MAX_TOKENS generated. One window per server."""
    before = [scrape(url) for url in urls]
    body = {"model": "tiny", "prompt": [5] * prompt_len, "max_tokens": MAX_TOKENS, "ignore_eos": True,
            "temperature": 0}

    def one(url: str) -> int:
        return httpx.post(f"{url}/v1/completions", json=body, timeout=300).status_code

    with ThreadPoolExecutor(requests * len(urls)) as pool:
        codes = list(pool.map(one, [url for _ in range(requests) for url in urls]))
    assert codes == [200] * (requests * len(urls)), codes
    return [Window(b, scrape(url)) for b, url in zip(before, urls, strict=True)]


def _server(model: Path, max_num_seqs: int) -> ThreadServer:
    return ThreadServer(model, served_model_name="tiny", max_num_seqs=max_num_seqs, max_model_len=1024,
                        max_queue=64)


def test_token_histograms_and_finish_reasons_count_each_request(qwen2_dir: Path) -> None:
    with _server(qwen2_dir, REQUESTS) as srv:
        [window] = load([srv.url], prompt_len=30, requests=4)
    prompt = window.histogram(names.REQUEST_PROMPT_TOKENS)
    generated = window.histogram(names.REQUEST_GENERATION_TOKENS)
    assert prompt.count == generated.count == 4
    # 30 prompt tokens land in the (20, 50] bucket, 32 generated in (20, 50]: vLLM's 1-2-5 buckets.
    assert dict(zip(prompt.bounds, prompt.counts(), strict=True))[50.0] == 4
    assert dict(zip(generated.bounds, generated.counts(), strict=True))[50.0] == 4
    assert window.total(names.counter_series(names.REQUEST_SUCCESS), finished_reason="length") == 4


def test_judge_rolls_back_a_slower_canary_and_promotes_a_healthy_one(qwen2_dir: Path) -> None:
    # Worse on purpose: one sequence at a time, so of REQUESTS sent together the last waits for all the others.
    with _server(qwen2_dir, REQUESTS) as stable_srv, _server(qwen2_dir, 1) as slow_srv, \
            _server(qwen2_dir, REQUESTS) as healthy_srv:
        # One at a time: three engines loaded at once in one test process would mostly measure each other.
        stable, slow, healthy = (load([srv.url], prompt_len=8)[0].stats()
                                 for srv in (stable_srv, slow_srv, healthy_srv))
    worse = judge(stable, slow, THRESHOLDS)
    good = judge(stable, healthy, THRESHOLDS)
    for name, j in (("slower canary", worse), ("healthy canary", good)):
        print(f"\n{name}: {j.verdict.name}: " + "; ".join(f"{r.check} {r.stable} vs {r.canary}" for r in j.rows))
    rows = {r.check: r for r in worse.rows}
    assert worse.verdict is Verdict.roll_back, worse
    assert rows["TTFT p99"].passed is False and rows["error rate"].passed is True
    assert rows["output length PSI"].passed is True  # same lengths: only the latency is worse
    # The reason, the one line a refused promote prints, names the failed check with its figures.
    ttft = rows["TTFT p99"]
    assert f"TTFT p99 {ttft.canary} against stable {ttft.stable} (limit {ttft.limit})" in worse.reason, worse.reason

    assert good.verdict is Verdict.promote, good

    # Less traffic than the spec asks for: no verdict either way.
    thin = judge(stable, healthy, CanaryThresholds(min_requests=REQUESTS + 1))
    assert thin.verdict is Verdict.cannot_judge and int(thin.verdict) == 2
    assert f"(stable {REQUESTS}, canary {REQUESTS})" in thin.reason, thin.reason


def test_drift_sees_a_shift_of_prompt_lengths_not_of_output_lengths(qwen2_dir: Path) -> None:
    with _server(qwen2_dir, REQUESTS) as srv:
        [baseline] = load([srv.url], prompt_len=8)
        [current] = load([srv.url], prompt_len=300)
    prompts = compare("prompt", baseline.histogram(names.REQUEST_PROMPT_TOKENS),
                      current.histogram(names.REQUEST_PROMPT_TOKENS))
    outputs = compare("generated", baseline.histogram(names.REQUEST_GENERATION_TOKENS),
                      current.histogram(names.REQUEST_GENERATION_TOKENS))
    print(f"\nprompt tokens PSI {prompts.psi:.2f} (p50 {prompts.baseline_p50} -> {prompts.current_p50}), "
          f"generated tokens PSI {outputs.psi:.3f}")
    assert prompts.band is Band.major and prompts.psi is not None and prompts.psi > 1, prompts
    assert (prompts.baseline_p50 or 0) <= 10 and (prompts.current_p50 or 0) > 200
    assert outputs.band is Band.none and outputs.psi is not None and math.isclose(outputs.psi, 0, abs_tol=1e-9)
