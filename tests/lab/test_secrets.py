"""Secrets audit of the session lab after its run and the lab tests before this one: the serving API key and the
vault password appear only in the files meant to hold them, and no kubeconfig credential appears anywhere: not in
any file the lab or the tests wrote on the host (state, inventory, Ansible logs and fact cache, validation
reports), not in any text file or the journal of a node, not in `ps` output on the host or a node.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llmrack.lab import lab, serving_artifacts
from tests.lab.hosts import host_of

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# Where each secret is meant to live: the user's copy of the lab key, the vault password, the key file on a node,
# and on the gateway node the batch service's two (the clients' keys it checks, the key it sends to the gateway).
NODE_KEY_FILE = "/etc/llmrack/serving-api-keys"
BATCH_KEY_FILES = ("/etc/llmrack/batch/api-keys", "/etc/llmrack/batch/upstream-key")
KEY_FILES = " ".join(f"-e {f}" for f in (NODE_KEY_FILE, *BATCH_KEY_FILES))
# kubeconfig credentials (a user's client key, certificate or token) have these keys.
KUBECONFIG_MARKERS = ("client-key-data:", "client-certificate-data:", "kind: Config\nusers:")
NODE_DIRS = "/etc /root /tmp /var/log /var/lib/llmrack /opt /srv"


# Image archives and model weights of other tests (GBs) are skipped: logs, reports and configs are far smaller.
MAX_FILE_BYTES = 64 * 1024 * 1024


def _host_files(roots: list[Path], allowed: set[Path]) -> list[Path]:
    files = []
    for root in roots:
        files += [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.resolve() not in allowed
                  and p.stat().st_size <= MAX_FILE_BYTES]
    return files


def test_no_secret_in_any_output(lab_up: lab.UpResult, tmp_path_factory: pytest.TempPathFactory) -> None:
    state = lab_up.state
    key = serving_artifacts.api_key(state.lab_dir)
    vault_password = (state.lab_dir / "vault-password").read_text().strip()
    secrets = {"API key": key.encode(), "vault password": vault_password.encode()}
    allowed = {serving_artifacts.api_key_file(state.lab_dir).resolve(), (state.lab_dir / "vault-password").resolve()}

    # Every file this test session wrote on the host: the lab dir (state, inventory, logs, fact cache) and the
    # other tests' report directories live under pytest's base temp dir.
    files = _host_files([tmp_path_factory.getbasetemp()], allowed)
    assert any(p.suffix == ".log" for p in files), "no Ansible log found to audit"
    found = []
    for path in files:
        data = path.read_bytes()
        found += [f"{name} in {path}" for name, secret in secrets.items() if secret in data]
        found += [f"kubeconfig ({m!r}) in {path}" for m in KUBECONFIG_MARKERS if m.encode() in data]

    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    found += [f"{name} in host ps output" for name, secret in secrets.items() if secret.decode() in ps]

    scanned_node_files = 0
    for node in state.nodes:
        host = host_of(lab_up, node.name)
        listing = host.run(f"grep -rIl --exclude-dir=proc -e . {NODE_DIRS} 2>/dev/null | grep -vxF {KEY_FILES}")
        scanned_node_files += len(listing.stdout.split())
        for name, secret in secrets.items():
            hits = host.run(f"grep -rIlF --exclude-dir=proc -e %s {NODE_DIRS} 2>/dev/null | grep -vxF {KEY_FILES}",
                            secret.decode())
            found += [f"{name} in {node.name}:{p}" for p in hits.stdout.split()]
            journal = host.run("journalctl --no-pager -o cat | grep -cF -e %s", secret.decode()).stdout.strip()
            if journal not in ("", "0"):
                found.append(f"{name} in {node.name}'s journal")
            if secret.decode() in host.check_output("ps -eo args"):
                found.append(f"{name} in {node.name}'s ps output")
        for marker in ("client-key-data:", "client-certificate-data:"):
            hits = host.run(f"grep -rIlF --exclude-dir=proc -e %s {NODE_DIRS} 2>/dev/null", marker)
            found += [f"kubeconfig ({marker}) in {node.name}:{p}" for p in hits.stdout.split()]
    # The key really is in use on every node (so the audit searched for the right string).
    for node in state.nodes:
        assert host_of(lab_up, node.name).file(NODE_KEY_FILE).contains(key)
        for path in BATCH_KEY_FILES:  # where the batch service runs: not readable by other users
            held = host_of(lab_up, node.name).file(path)
            assert not held.exists or held.mode & 0o007 == 0, (node.name, path, oct(held.mode))
    print(f"\nsecrets audit: {len(files)} host files, {scanned_node_files} node files, journals and ps of "
          f"{len(state.nodes)} nodes and the host: {len(found)} secrets found")
    assert found == []
