"""Faults injected into the converged session lab, and what must happen: the serving process SIGKILLed (systemd
restarts it; clients get fast answers, 503 while it loads, then 200: never a hang), a node restarted (containerd,
serving and the exporter come back by themselves; validation passes without a re-run of site.yml), a node killed
in the middle of site.yml (the other converges; the report names the dead node and the resume command; the
re-run changes only that node), a node's model store full (the new version refused by name before a byte is
written, the old release keeps serving). Every test leaves the lab converged for the tests after it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from llmrack.contracts.model_manifest import NODE_RELEASES, NODE_STORE
from llmrack.lab import lab, nodes, registry, serving_artifacts
from llmrack.lab.podman import Podman
from llmrack.lab.state import NodeState, Profile
from llmrack.models import local
from serving.readiness import wait_ready
from tests.lab.hosts import host_of, node_of
from tests.lab.test_models import new_version
from tests.lab.test_rollout import HISTORY

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SERVICES = ("containerd", "llmrack-serving", "prometheus-node-exporter")
# Written by the monitoring role late in site.yml on every node, with no handler: removing it gives a run
# something to do on each node that it reaches.
LATE_FILE = "/usr/local/sbin/llmrack-accelerator-exporter"
STORE = NODE_STORE
RELEASES = NODE_RELEASES


def _completion(node: NodeState, key: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{node.serving_url}/v1/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": serving_artifacts.SERVED_NAME, "prompt": "after the fault", "max_tokens": 4},
                      timeout=timeout)


def _wait_serving(node: NodeState, timeout: float) -> None:
    try:
        wait_ready(node.serving_url, timeout, interval=1)
    except TimeoutError:
        raise AssertionError(f"{node.name}: serving not ready {timeout:.0f} s after the fault") from None


def test_sigkilled_serving_is_restarted_and_clients_never_hang(lab_up: lab.UpResult) -> None:
    node = node_of(lab_up, Profile.sim_a100)
    host = host_of(lab_up, node.name)
    key = serving_artifacts.api_key(lab_up.state.lab_dir)
    assert _completion(node, key).status_code == 200
    restarts = int(host.check_output("systemctl show -p NRestarts --value llmrack-serving"))
    # The serving process itself: the init process of the containerd task the unit runs.
    tasks = host.check_output("ctr -n llmrack task ls")
    pid = next(line.split()[1] for line in tasks.splitlines() if line.startswith("llmrack-serving "))
    host.run_expect([0], "kill -KILL %s", pid)
    killed = time.monotonic()
    seen: list[str] = []
    # The bound is for a start-up, not for a hang (the per-request timeout below catches that): on a loaded
    # 2-core host the restart (RestartSec, the unit's clean-up, interpreter start, model load) took 125 s.
    while time.monotonic() - killed < 300:
        try:
            # A short timeout: a hung server shows up as a ReadTimeout, which fails the test.
            status = httpx.get(f"{node.serving_url}/ready", timeout=10).status_code
            seen.append(str(status))
            if status == 200 and "503" in seen:
                break
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            # Nothing listens while systemd waits RestartSec: the client learns at once, refused outright or, through
            # podman's published port, accepted and then reset (ReadError). A hang is a ReadTimeout, not caught here.
            seen.append("refused")
        time.sleep(0.25)
    recovered = time.monotonic() - killed
    outcomes = Counter(seen)
    print(f"\nSIGKILL of the serving process on {node.name}: /ready answers {dict(outcomes)}, "
          f"ready again after {recovered:.0f} s")
    assert seen[-1] == "200", seen[-20:]
    assert outcomes["503"] > 0, "no 503 while the model loaded"
    assert set(outcomes) <= {"refused", "503", "200"}
    assert int(host.check_output("systemctl show -p NRestarts --value llmrack-serving")) == restarts + 1
    assert _completion(node, key).status_code == 200


def test_restarted_node_comes_back_without_a_rerun(lab_up: lab.UpResult, tmp_path: Path) -> None:
    node = node_of(lab_up, Profile.sim_a100)
    podman = Podman(lab_up.state.lab_dir)
    started = time.monotonic()
    podman.run("restart", "-t", "10", node.container)
    nodes.wait_for_ssh(lab_up.state, node)
    host = host_of(lab_up, node.name)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if all(host.service(unit).is_running for unit in SERVICES):
            break
        time.sleep(2)
    for unit in SERVICES:
        assert host.service(unit).is_running, f"{unit} did not come back after the restart of {node.name}"
    _wait_serving(node, 180)
    print(f"\n{node.name} restarted: containerd, serving, exporter up and serving ready after "
          f"{time.monotonic() - started:.0f} s")
    assert _completion(node, serving_artifacts.api_key(lab_up.state.lab_dir)).status_code == 200
    assert lab.validate(lab_up.state, tmp_path / "after-restart") == 0


def _lab_cli(lab_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "llmrack", "lab", "provision", "--lab-dir", str(lab_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_node_killed_in_the_middle_of_site_yml(lab_up: lab.UpResult) -> None:
    state = lab_up.state
    victim, other = node_of(lab_up, Profile.sim_a100), node_of(lab_up, Profile.sim_ascend)
    for node in (victim, other):
        host_of(lab_up, node.name).run_expect([0], "rm -f %s", LATE_FILE)
    logs = state.lab_dir / "logs"
    before = set(logs.glob("site-*.log"))
    proc = _lab_cli(state.lab_dir)
    podman = Podman(state.lab_dir)
    try:
        # Kill the node once the run is under way (containerd's tasks), long before the monitoring role.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            new = set(logs.glob("site-*.log")) - before
            if new and "Containerd |" in next(iter(new)).read_text():
                break
            time.sleep(0.2)
        else:
            raise AssertionError("site.yml never reached the containerd role")
        podman.run("kill", victim.container)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        podman.run("start", victim.container)
    assert proc.returncode == 1, out + err
    report = " ".join((out + err).split())
    assert f"failed: {victim.name}" in report, report
    assert "re-run `llmrack lab provision --playbook site.yml`" in report, report
    assert host_of(lab_up, other.name).file(LATE_FILE).exists  # the other node converged
    _wait_serving(other, 60)

    nodes.wait_for_ssh(state, victim)
    healed = lab.provision(state.lab_dir)
    assert healed.rc == 0, f"the re-run failed, see {healed.log}"
    changed = {host: counts["changed"] for host, counts in healed.recap.items()}
    print(f"\n{victim.name} killed during site.yml; the re-run changed {changed}")
    assert changed[other.name] == 0 and changed[victim.name] > 0, changed
    assert host_of(lab_up, victim.name).file(LATE_FILE).exists
    _wait_serving(victim, 180)


def test_full_model_store_refuses_a_new_version_by_name(lab_up: lab.UpResult, tmp_path: Path) -> None:
    state = lab_up.state
    node = node_of(lab_up, Profile.sim_a100)
    host = host_of(lab_up, node.name)
    key = serving_artifacts.api_key(state.lab_dir)
    reg = registry.load(state)
    assert reg is not None, "the lab started no registry"
    lab_model = serving_artifacts.cache_dir(state.lab_dir) / "models" / serving_artifacts.MODEL_NAME
    version = new_version(lab_model, tmp_path, 90, reg)
    needed = local.read_manifest(tmp_path / "v90")[0].total_bytes
    hex_ = version.split(":", 1)[1]
    before = {path: host.file(path).content_string for path in (RELEASES, HISTORY)}
    new_release = ["-l", node.name, "-e", f"serving_model_version={version}"]

    # The store's filesystem for real: a tmpfs with room for half the version, over the store of a privileged node
    # (the running release's bind mount of its version directory is untouched underneath).
    podman = Podman(state.lab_dir)
    podman.run("exec", node.container, "mount", "-t", "tmpfs", "-o", f"size={needed // 2},mode=0755",
               "tmpfs", STORE)
    try:
        started = time.monotonic()
        refused = lab.provision(state.lab_dir, "serving.yml", new_release)
        seconds = time.monotonic() - started
        assert refused.log is not None
        log = refused.log.read_text()
        assert refused.rc != 0 and refused.recap[node.name]["failed"] == 1, f"see {refused.log}"
        message = next(line for line in log.splitlines() if "no room for the model version" in line)
        print(f"\nfull model store on {node.name}: refused after {seconds:.0f} s: {message.strip()[:400]}")
        assert f"no room for the model version {version} in {STORE}" in message, message
        assert f"needs {needed} bytes" in message and "bytes free" in message, message
        assert "re-run" in message, message
        # Nothing written: the tmpfs holds no version and no partial one; the histories are as they were.
        assert host.check_output("ls -A %s", STORE) == ""
        assert {path: host.file(path).content_string for path in before} == before
        assert _completion(node, key).status_code == 200
    finally:
        podman.run("exec", node.container, "umount", STORE)
    assert not host.file(f"{STORE}/{hex_}").exists and not host.file(f"{STORE}/{hex_}.partial").exists

    # With room again, the same run goes through; then back to the spec's version, as the tests after expect.
    healed = lab.provision(state.lab_dir, "serving.yml", new_release)
    assert healed.rc == 0, f"the re-run failed, see {healed.log}"
    assert json.loads(host.file(RELEASES).content_string)[0]["model"] == version
    back = lab.provision(state.lab_dir, "serving.yml", ["-l", node.name])
    assert back.rc == 0, f"see {back.log}"
    assert json.loads(host.file(RELEASES).content_string)[0] == json.loads(before[RELEASES])[0]
    assert _completion(node, key).status_code == 200
