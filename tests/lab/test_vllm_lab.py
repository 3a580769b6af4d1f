"""vLLM as the rack's engine, in the lab: `llmrack lab up --engine vllm --tensor-parallel 2` builds the cpu-vllm
image, asks the scan gate, and serves the tiny model with vLLM-CPU on one node through the same site.yml as the
llmrack engine, two ranks on the node's two cores. Its greedy completions are token-identical to llmrack's engine
on the same weights, the validation suite's serving checks pass against it, and the lab's Prometheus scrapes its
`vllm:` metrics by the names the rule set records.

The module has a lab of its own (one node): vLLM's start-up (graph compilation) takes minutes on 2 cores, so it
is paid once here and every test reads the same converged node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from llmrack.contracts import metrics
from llmrack.lab import lab, serving_artifacts
from llmrack.lab.state import Profile
from serving.bench import engines
from serving.bench.serve_bench import _free_port, _Process
from tests.lab.conftest import running_lab
from tests.lab.hosts import host_of
from tests.lab.test_gateway import _wait_for_scrape

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time", "def main():\n    ", "<|im_start|>user"]
UNIT = "/etc/systemd/system/llmrack-serving.service"


@pytest.fixture(scope="module")
def vllm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.UpResult]:
    with running_lab(tmp_path_factory.mktemp("vllm-lab"), [Profile.sim_a100], engine="vllm",
                     tensor_parallel=2) as result:
        assert result.rc == 0, f"site.yml failed with the vLLM engine, see {result.log}"
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ANSIBLE_CONFIG", str(result.state.ansible_cfg))
            yield result


def _key(result: lab.UpResult) -> str:
    return serving_artifacts.api_key(result.state.lab_dir)


def _greedy(url: str, prompt: str, key: str | None = None) -> tuple[str, int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = httpx.post(f"{url}/v1/completions", timeout=120, headers=headers,
                      json={"model": serving_artifacts.SERVED_NAME, "prompt": prompt, "max_tokens": 24,
                            "temperature": 0})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return body["choices"][0]["text"], body["usage"]["completion_tokens"]


def test_cpu_vllm_image_is_gated_and_served_with_two_ranks(vllm_lab: lab.UpResult) -> None:
    # The gate was asked for this image's digest (the lab allows unscanned images, loudly).
    assert vllm_lab.gate and "never passed a vulnerability scan" in vllm_lab.gate, vllm_lab.gate
    node = vllm_lab.state.nodes[0]
    host = host_of(vllm_lab, node.name)
    unit = host.file(UNIT).content_string
    # The renderer's vLLM command: TP 2 from the spec, each rank bound to one of the node's two cores.
    assert "vllm serve" in unit or "serve /models/" in unit, unit
    assert "--tensor-parallel-size 2" in unit.replace("=", " "), unit
    assert "VLLM_CPU_OMP_THREADS_BIND=0|1" in unit, unit
    assert "api-key" not in unit.lower().replace("api-keys", ""), "an API key on the command line"
    # vLLM titles its rank processes VLLM::Worker_TP<rank> (setproctitle).
    ranks = sorted(line.strip() for line in host.check_output("ps -eo args").splitlines() if "Worker_TP" in line)
    assert ranks == ["VLLM::Worker_TP0", "VLLM::Worker_TP1"], ranks
    assert httpx.get(f"{node.serving_url}/health", timeout=10).status_code == 200
    # Keys are enforced by vLLM itself, from the file the role mounted.
    assert httpx.get(f"{node.serving_url}/v1/models", timeout=10).status_code == 401


def test_greedy_completions_identical_to_llmrack_engine(vllm_lab: lab.UpResult) -> None:
    """The same weights (the lab's tiny model) on llmrack's engine, started here on the host."""
    model = serving_artifacts.cache_dir(vllm_lab.state.lab_dir) / "models" / serving_artifacts.MODEL_NAME
    port = _free_port()
    argv, env, ready = engines.command("llmrack", model, port, 8, 512, None)
    ours = _Process([*argv, "--served-model-name", serving_artifacts.SERVED_NAME], port, env)
    try:
        ours.wait_ready(timeout=300, path=ready)
        node = vllm_lab.state.nodes[0]
        key = _key(vllm_lab)
        for prompt in PROMPTS:
            theirs = _greedy(node.serving_url, prompt, key)
            assert theirs[1] > 0
            assert theirs == _greedy(ours.url, prompt), prompt
    finally:
        ours.stop()


def test_validation_serving_checks_pass_against_vllm(vllm_lab: lab.UpResult) -> None:
    report = vllm_lab.state.lab_dir / "validation"
    rc = lab.validate(vllm_lab.state, report)
    checks = json.loads((report / "report.json").read_text())["checks"]
    serving = {c["check"]: c["status"] for c in checks if c["check"].startswith(("serving.", "model."))}
    assert rc == 0, (rc, [c for c in checks if c["status"] == "fail"])
    for check in ("serving.ready", "serving.api_key", "serving.completion"):
        assert serving.get(check) == "pass", serving


def test_prometheus_scrapes_the_engine_metrics(vllm_lab: lab.UpResult) -> None:
    node = vllm_lab.state.nodes[0]
    _greedy(node.serving_url, "traffic for the scrape", _key(vllm_lab))
    exposed = httpx.get(f"{node.serving_url}/metrics", timeout=30).text
    for name in metrics.VLLM_EQUIVALENTS:
        for _ours, theirs in metrics.vllm_series(name):
            assert f"\n{theirs}{{" in exposed, theirs
    prometheus = node.prometheus_url
    assert prometheus
    query = f'{metrics.counter_series(metrics.VLLM_REQUEST_SUCCESS)}{{job="serving"}} > 0'
    assert _wait_for_scrape(prometheus, query, "node", {node.name}) == {node.name}
