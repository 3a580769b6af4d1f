"""The rack in a box, for real: nodes converged by site.yml over SSH, checked with testinfra and HTTP."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrack.lab import lab, serving_artifacts
from llmrack.lab.state import Profile
from tests.lab.conftest import llmrack
from tests.lab.hosts import host_of, node_of

pytestmark = pytest.mark.lab


def test_site_converges_every_node(lab_up: lab.UpResult) -> None:
    assert lab_up.rc == 0, f"site.yml failed, see {lab_up.log}"
    assert sorted(lab_up.recap) == sorted(n.name for n in lab_up.state.nodes)
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in lab_up.recap.values()), lab_up.recap


def test_status_reports_inventory_and_serving_urls(lab_up: lab.UpResult) -> None:
    status = lab.status(lab_up.state.lab_dir)
    assert status["inventory"] == str(lab_up.state.inventory)
    assert [(n["name"], n["running"]) for n in status["nodes"]] == [(n.name, True) for n in lab_up.state.nodes]
    assert all(n["serving_url"].startswith("http://127.0.0.1:") for n in status["nodes"])


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_containerd_and_serving_run(lab_up: lab.UpResult, node: str) -> None:
    host = host_of(lab_up, node)
    for unit in ("containerd", "llmrack-serving", "prometheus-node-exporter"):
        assert host.service(unit).is_running, unit
        assert host.service(unit).is_enabled, unit
    assert host.file("/etc/containerd/conf.d/10-llmrack.toml").contains('snapshotter = "overlayfs"')
    # The serving image's layers are overlayfs snapshots (containerd's root is a volume, not the node's overlay root).
    snapshots = host.check_output("ctr -n llmrack snapshots --snapshotter overlayfs ls").splitlines()[1:]
    assert snapshots and host.mount_point("/var/lib/containerd").exists
    assert '"status"' in host.check_output("curl -fsS http://127.0.0.1:%s/health", "8000")


def test_nvidia_stack_on_the_simulated_a100(lab_up: lab.UpResult) -> None:
    host = host_of(lab_up, node_of(lab_up, Profile.sim_a100).name)
    gpus = host.check_output("nvidia-smi --query-gpu=name,driver_version,persistence_mode --format=csv,noheader")
    assert gpus.splitlines() == ["NVIDIA A100-SXM4-80GB, 550.127.05, Enabled"] * 8
    assert host.service("nvidia-fabricmanager").is_running
    assert "550.127.05" in host.check_output("nv-fabricmanager --version")
    env = host.file("/etc/llmrack/nccl.env").content_string
    # The lab node sees no InfiniBand device (its /sys is the host's): no HCA named, no peermem.
    assert "NCCL_IB_DISABLE=1" in env and "NCCL_IB_HCA" not in env
    assert not host.file("/etc/modules-load.d/llmrack-nvidia-peermem.conf").exists
    assert "nvidia-container-runtime" in host.check_output("containerd config dump")
    assert host.file("/etc/cdi/nvidia.yaml").contains("nvidia.com/gpu")


def test_ascend_stack_on_the_simulated_910b(lab_up: lab.UpResult) -> None:
    host = host_of(lab_up, node_of(lab_up, Profile.sim_ascend).name)
    assert host.user("HwHiAiUser").exists
    assert host.file("/usr/local/Ascend/driver/version.info").contains("Version=24.1.rc3")
    assert host.file("/usr/local/Ascend/firmware/version.info").contains("Version=7.5.0.1.129")
    assert host.check_output("npu-smi info -t health -i %s", "7").strip() == "Health Status                  : OK"
    assert "ascend-docker-runtime" in host.check_output("containerd config dump")


@pytest.mark.parametrize("profile", [Profile.sim_ascend, Profile.sim_a100])
def test_serving_answers_a_completion(lab_up: lab.UpResult, profile: Profile) -> None:
    url = node_of(lab_up, profile).serving_url
    key = serving_artifacts.api_key(lab_up.state.lab_dir)
    denied = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 4}, timeout=60)
    assert denied.status_code == 401
    resp = httpx.post(
        f"{url}/v1/completions",
        json={"model": serving_artifacts.SERVED_NAME, "prompt": "The rack", "max_tokens": 8},
        headers={"Authorization": f"Bearer {key}"}, timeout=120,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["choices"][0]["text"]
    assert body["usage"]["completion_tokens"] > 0


def _prom(result: lab.UpResult, query: str) -> list[dict[str, Any]]:
    mon = result.state.monitoring_node
    assert mon is not None and mon.prometheus_url
    resp = httpx.get(f"{mon.prometheus_url}/api/v1/query", params={"query": query}, timeout=30)
    resp.raise_for_status()
    data: list[dict[str, Any]] = resp.json()["data"]["result"]
    return data


def test_nodes_resolve_each_other_by_name(lab_up: lab.UpResult) -> None:
    """Prometheus on the monitoring node scrapes every node by its inventory name: the lab's /etc/hosts entries
    must make those names resolve on every node, whatever DNS the podman network has (none with CNI)."""
    names = sorted(n.name for n in lab_up.state.nodes)
    for node in names:
        host = host_of(lab_up, node)
        for peer in names:
            assert host.run("getent hosts %s", peer).rc == 0, f"{node} cannot resolve {peer}"


def _targets(result: lab.UpResult) -> dict[tuple[str, str], dict[str, Any]]:
    mon = result.state.monitoring_node
    assert mon is not None and mon.prometheus_url
    active = httpx.get(f"{mon.prometheus_url}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"].get("node", "")): t for t in active}


def test_prometheus_scrapes_exporters_of_every_node(lab_up: lab.UpResult) -> None:
    names = {n.name for n in lab_up.state.nodes}
    expected = {(job, n) for job in ("node", "serving") for n in names}
    # A target is up at its first successful scrape (every 15 s), and a node's serving restarts late in the run.
    deadline = time.monotonic() + 180
    while True:
        targets = _targets(lab_up)
        up = {key for key, t in targets.items() if t["health"] == "up" and key[0] in ("node", "serving")}
        counts = {r["metric"]["vendor"]: float(r["value"][1]) for r in _prom(lab_up, "llmrack_accelerator_count")}
        if (up == expected and counts == {"nvidia": 8.0, "ascend": 8.0}) or time.monotonic() > deadline:
            break
        time.sleep(5)
    # On failure, say why each missing target is not up (Prometheus' own last scrape error).
    why = {key: (targets[key]["scrapeUrl"], targets[key]["lastError"]) if key in targets else "not configured"
           for key in expected - up}
    assert not why, why
    assert up == expected
    assert counts == {"nvidia": 8.0, "ascend": 8.0}


def test_alert_rules_are_loaded(lab_up: lab.UpResult) -> None:
    mon = lab_up.state.monitoring_node
    assert mon is not None and mon.prometheus_url
    groups = httpx.get(f"{mon.prometheus_url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    names = {r["name"] for g in groups for r in g["rules"]}
    assert {"NodeExporterDown", "AcceleratorMissing", "ServingDown", "ServingQueueFilling"} <= names
    # ...and the rule file shared with the Pulumi monitoring stack (infra/monitoring/alerts.yml).
    assert {"LlmrackGpuXidError", "LlmrackGpuEccUncorrectable"} <= names


def _checks(report_dir: Path) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = json.loads((report_dir / "report.json").read_text())["checks"]
    return checks


def test_validation_passes_the_converged_lab_and_catches_a_bad_gpu(lab_up: lab.UpResult, tmp_path: Path) -> None:
    """The suite judges the simulated boards against the catalog parts the inventory names; then one GPU of the
    sim-a100 node reports uncorrectable ECC errors (its hardware description edited on the node, as a failing
    HBM would show) and the suite fails that GPU, and only that check."""
    # Healthy: the report `llmrack lab up` wrote after converging (its validation step).
    healthy = _checks(lab_up.state.lab_dir / "validation")
    judged = {c["check"].split(".")[0] for c in healthy if c["status"] == "pass"}
    assert {"nvidia", "ascend"} <= judged, sorted(judged)

    gpu_node = node_of(lab_up, Profile.sim_a100).name
    host = host_of(lab_up, gpu_node)
    hw_path = "/etc/llmrack-sim/hardware.json"
    original = host.file(hw_path).content_string
    faulty = json.loads(original)
    faulty["gpus"][3]["ecc_uncorrected_volatile"] = 2
    try:
        host.run(f"printf '%s' {shlex.quote(json.dumps(faulty))} > {hw_path}")
        assert lab.validate(lab_up.state, tmp_path / "faulty") == 1
    finally:
        host.run(f"printf '%s' {shlex.quote(original)} > {hw_path}")
    failed = [(c["check"], c["node"], c["device"]) for c in _checks(tmp_path / "faulty") if c["status"] == "fail"]
    assert len(failed) == 1 and failed[0][:2] == ("nvidia.ecc_uncorrectable", gpu_node), failed
    assert "3" in str(failed[0][2]), failed


def test_second_lab_up_resumes_and_changes_nothing(lab_up: lab.UpResult) -> None:
    """A second `llmrack lab up` (the README's `make lab` again) rebuilds nothing and site.yml changes nothing,
    after every test before it has rolled releases, killed services and restarted nodes."""
    lab_dir = str(lab_up.state.lab_dir)
    again = llmrack("lab", "up", "--nodes", str(len(lab_up.state.nodes)), "--lab-dir", lab_dir, "--no-validate")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "is cached" in again.stderr, again.stderr[-4000:]
    recap = lab.load_state(lab_up.state.lab_dir).last_run  # type: ignore[union-attr]
    print("\nsecond lab up: " + " ".join(line.strip() for line in again.stderr.splitlines() if "site.yml:" in line))
    assert {h: c["changed"] for h, c in recap.items()} == {n.name: 0 for n in lab_up.state.nodes}, recap
