"""playbooks/keys.yml also refreshes the batch service's copy of the clients' keys: the real playbook runs against
this host as the one host of group batch, a running `llmrack batch serve` re-reads the file, and a key revoked in
the store is refused by the batch endpoints while the same process (no restart) goes on with the job it was working
(lines keep completing after the revocation; a cancel then ends it, so the job's length is no race with the play)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from llmrack.keys import KeyStore, save
from tests.batch.conftest import BatchService, completed_at_least, counts, submit, wait_for
from tests.serving.conftest import ThreadServer

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
LINES = 3000  # far more than the service answers while the play runs, on any machine
BIN = Path(sys.executable).parent


def _keys_play(tmp: Path, store: Path) -> str:
    (tmp / "inventory.yml").write_text(yaml.safe_dump({"all": {"children": {"batch": {"hosts": {"batch1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        # This host has no sudo and the test runs as root: no become; the group is root's own.
        "ansible_become": False, "batch_user": "root", "batch_config_dir": str(tmp / "etc"),
        "llmrack_keys_store": str(store)}}}}}}))
    (tmp / "etc").mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_CACHE_PLUGIN": "memory"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp / "inventory.yml"),
                           str(ANSIBLE / "playbooks" / "keys.yml")], capture_output=True, text=True, env=env,
                          timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def test_a_key_revoked_by_the_keys_play_is_refused_by_the_running_batch_service(upstream: ThreadServer,
                                                                               tmp_path: Path) -> None:
    store_path = tmp_path / "keys.json"
    store = KeyStore(tenants={}, keys=[])
    stays = store.create("alice-main", "alice")[1]
    doomed = store.create("alice-old", "alice")[1]
    save(store, store_path)
    _keys_play(tmp_path, store_path)
    keys_file = tmp_path / "etc" / "api-keys"
    assert keys_file.stat().st_mode & 0o777 == 0o640

    svc = BatchService(upstream.url, tmp_path / "state", "--api-key-file", str(keys_file), "--max-inflight", "2")
    try:
        svc.start()
        assert svc.proc is not None
        pid = svc.proc.pid
        old = svc.client(doomed)
        batch = submit(old, tmp_path / "in.jsonl", LINES, str(upstream.settings.name), max_tokens=24)
        completed_at_least(old, batch.id, 2)

        store.revoke("alice-old")
        save(store, store_path)
        _keys_play(tmp_path, store_path)
        done_at_revoke = counts(svc.client(stays).batches.retrieve(batch.id))[1]
        # The service re-reads the file within a second of seeing it changed.
        deadline = time.monotonic() + 10
        while (status := httpx.get(f"{svc.url}/v1/batches", timeout=5,
                                   headers={"Authorization": f"Bearer {doomed}"}).status_code) != 401:
            assert status == 200 and time.monotonic() < deadline, f"the revoked key still gets {status}"
            time.sleep(0.2)
        refused = httpx.get(f"{svc.url}/v1/batches/{batch.id}", headers={"Authorization": f"Bearer {doomed}"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"

        # Same process, and the job (alice's, created with the revoked key) goes on under her other key.
        alice = svc.client(stays)
        completed_at_least(alice, batch.id, done_at_revoke + 5, message="the job made no progress after the revocation",
                           interval=0.2)
        alice.batches.cancel(batch.id)
        ended = wait_for(alice, batch.id, ("cancelled",), timeout=30)
        assert svc.proc.poll() is None and svc.proc.pid == pid
    finally:
        svc.stop()
    total, completed, failed = counts(ended)
    assert total == LINES and done_at_revoke + 5 <= completed < LINES and failed == 0, counts(ended)
