"""The batch role's systemd unit runs exactly `llmrack batch serve ...`: the unit is rendered by Ansible from the
role's own template and defaults, and its ExecStart line is started as is (with this checkout's virtualenv as the
role's) against a real llmrack server, which it then serves a job for."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.batch.conftest import BatchService, counts, requests_file, wait_for
from tests.serving.conftest import ThreadServer, free_port

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "batch"
BIN = Path(sys.executable).parent

PLAY = """
- name: Render the batch unit
  hosts: localhost
  gather_facts: false
  vars_files: ["{role}/defaults/main.yml", "{role}/vars/main.yml"]
  tasks:
    - name: Unit
      ansible.builtin.template:
        src: "{role}/templates/llmrack-batch.service.j2"
        dest: "{{{{ out }}}}/llmrack-batch.service"
        mode: "0644"
"""


def _render(tmp: Path, extra: dict[str, object], groups: dict[str, object] | None = None) -> str:
    """The unit as Ansible renders it; `groups`: inventory groups besides localhost (the serving nodes)."""
    (tmp / "play.yml").write_text(PLAY.format(role=ROLE))
    (tmp / "vars.yml").write_text(yaml.safe_dump({"out": str(tmp), **extra}))
    (tmp / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {}}, "children": groups or {}}}))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-c", "local", "-i", str(tmp / "inventory.yml"),
                           "-e", f"@{tmp / 'vars.yml'}",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(tmp / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return (tmp / "llmrack-batch.service").read_text()


def _exec_start(unit: str) -> list[str]:
    line = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_unit_runs_llmrack_batch_serve_and_it_serves(upstream: ThreadServer, tmp_path: Path) -> None:
    port = free_port()
    unit = _render(tmp_path, {"batch_venv": str(BIN.parent), "batch_upstream": upstream.url, "batch_port": port,
                              "batch_host": "127.0.0.1", "batch_state_dir": str(tmp_path / "state"),
                              "batch_prometheus_url": f"{upstream.url}/metrics"})
    argv = _exec_start(unit)
    assert argv[:3] == [str(BIN / "llmrack"), "batch", "serve"]
    assert argv[argv.index("--state") + 1] == str(tmp_path / "state")
    assert f"ReadWritePaths={tmp_path / 'state'}" in unit

    proc = subprocess.Popen(argv)
    svc = BatchService(upstream.url, tmp_path / "state")
    svc.url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the unit's command did not come up"
            try:
                if httpx.get(f"{svc.url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        client = svc.client("unused")
        uploaded = client.files.create(file=requests_file(tmp_path / "in.jsonl", 3, str(upstream.settings.name))
                                       .open("rb"), purpose="batch")
        done = wait_for(client, client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                                      completion_window="24h").id)
        assert counts(done) == (3, 3, 0)
    finally:
        proc.terminate()
        proc.wait(15)


def test_keys_and_ca_reach_the_command_only_when_given(tmp_path: Path) -> None:
    bare = _exec_start(_render(tmp_path, {}))
    assert "--api-key-file" not in bare and "--upstream-api-key-file" not in bare and "--prometheus" not in bare
    assert "--upstream-ca-file" not in bare
    assert bare[bare.index("--max-inflight") + 1] == "64"  # no spec in the inventory to count rows from
    full = _exec_start(_render(tmp_path, {"batch_api_key_file": "/etc/llmrack/keys.json",
                                          "batch_upstream_api_key": "lrk-secret", "batch_upstream_ca_file": "/ca.pem"}))
    assert full[full.index("--api-key-file") + 1] == "/etc/llmrack/keys.json"
    assert full[full.index("--upstream-api-key-file") + 1] == "/etc/llmrack/batch/upstream-key"
    assert full[full.index("--upstream-ca-file") + 1] == "/ca.pem"
    assert "lrk-secret" not in " ".join(full)  # the key itself stays in its file, off the command line


def test_the_inventory_keys_and_rack_ca_are_the_defaults(tmp_path: Path) -> None:
    """What a rack's inventory already has: the nodes' keys (the upstream key is the first, clients' keys are all
    of them), the gateway's port and the rack CA the gateway play fetched to the controller."""
    argv = _exec_start(_render(tmp_path, {"serving_api_keys": ["lrk-one", "lrk-two"], "gateway_port": 8443,
                                          "gateway_tls_ca_fetch_to": "/home/op/rack-ca.crt"}))
    assert argv[argv.index("--upstream") + 1] == "https://127.0.0.1:8443"
    assert argv[argv.index("--api-key-file") + 1] == "/etc/llmrack/batch/api-keys"
    assert argv[argv.index("--upstream-api-key-file") + 1] == "/etc/llmrack/batch/upstream-key"
    assert argv[argv.index("--upstream-ca-file") + 1] == "/etc/llmrack/batch/upstream-ca.crt"


def test_a_database_url_replaces_the_state_dir_and_its_password_stays_off_the_command_line(tmp_path: Path) -> None:
    unit = _render(tmp_path, {"batch_database_url": "postgresql://batch@db.rack:5432/batch",
                              "batch_database_password": "pg-secret"})
    argv = _exec_start(unit)
    assert argv[argv.index("--state") + 1] == "postgresql://batch@db.rack:5432/batch"
    assert "Environment=PGPASSFILE=/etc/llmrack/batch/pgpass" in unit and "pg-secret" not in unit


def test_batch_leaves_every_replica_its_online_rows_and_gateway_connections(tmp_path: Path) -> None:
    """By default the service sends at most every replica's rows less the engine's online reserve: the gateway's
    maxconn per replica is max_num_seqs, so with more in flight batch requests would hold every connection to a
    replica and an online request would wait at the gateway for one of them to finish. A replica of several nodes
    counts once (its leader)."""
    serving = {"serving_nodes": {"hosts": {"n1": {}, "n2": {"llmrack_replica_rank": 0},
                                           "n3": {"llmrack_replica_rank": 1}}}}

    def inflight(extra: dict[str, object], groups: dict[str, object] | None = serving) -> int:
        argv = _exec_start(_render(tmp_path, extra, groups))
        return int(argv[argv.index("--max-inflight") + 1])

    spec = {"llmrack_deployment": {"serving": {"max_num_seqs": 8}}}
    assert inflight(spec) == 2 * (8 - 1)  # the lab: 2 replicas of 8 rows, one kept for online each
    assert inflight({**spec, "batch_max_inflight": 5}) == 5  # the operator's own figure
    assert inflight(spec, None) == 64  # no serving nodes to count
