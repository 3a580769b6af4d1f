"""Model versions on the lab's rack: pushed to the lab's registry (Debian docker-registry), pulled onto a node by
digest by the serving role, at most 3 versions kept per node; a pull killed halfway on a node resumes where it
stopped, and a version whose file was corrupted on the node is refused by the serving role, naming the file, while
the node keeps serving. A version rolled across every node with a new image, and rollback.yml returning the image
AND model pair, is test_rollout.py's release."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrack.contracts.model_manifest import (
    MANIFEST_FILE,
    NODE_AGENT,
    NODE_RELEASES,
    NODE_STORE,
    partial_dir,
    version_dir,
    version_hex,
)
from llmrack.lab import lab, registry, serving_artifacts
from llmrack.models import transfer
from tests.lab.hosts import host_of

pytestmark = [pytest.mark.lab, pytest.mark.slow]

STORE = NODE_STORE
RELEASES = NODE_RELEASES
AGENT = f"python3 {NODE_AGENT}"
UNIT = "/etc/systemd/system/llmrack-serving.service"


def new_version(lab_model: Path, tmp: Path, n: int, reg: registry.LabRegistry, extra_bytes: int = 0) -> str:
    """Another release of the lab's tiny model (one generation setting changed; `extra_bytes` of weights more in
    extra.safetensors), pushed; returns its version."""
    src = tmp / f"v{n}"
    shutil.copytree(lab_model, src)
    (src / MANIFEST_FILE).unlink(missing_ok=True)
    gen = json.loads((src / "generation_config.json").read_text())
    gen["max_new_tokens"] = 16 + n
    (src / "generation_config.json").write_text(json.dumps(gen))
    if extra_bytes:
        (src / "extra.safetensors").write_bytes(bytes(range(256)) * (extra_bytes // 256))
    return transfer.push(src, f"{reg.push_base}/{registry.MODEL_REPOSITORY}:v{n}").version


def serving(lab_up: lab.UpResult, name: str) -> dict[str, Any]:
    """What one node runs: its release history, the model mounted by the unit, the versions in its store."""
    host = host_of(lab_up, name)
    mount = next(w for w in host.file(UNIT).content_string.split() if w.startswith("type=bind,src=" + STORE))
    store = json.loads(host.check_output(f"{AGENT} list --store {STORE}"))["versions"]
    return {"releases": json.loads(host.file(RELEASES).content_string), "mount": mount, "store": store}


def provision(lab_up: lab.UpResult, playbook: str, *args: str) -> lab.UpResult:
    result = lab.provision(lab_up.state.lab_dir, playbook, list(args))
    assert result.rc == 0, f"{playbook} {args} failed, see {result.log}"
    return result


def lab_model(lab_up: lab.UpResult) -> Path:
    return serving_artifacts.cache_dir(lab_up.state.lab_dir) / "models" / serving_artifacts.MODEL_NAME


def test_a_node_keeps_three_model_versions(lab_up: lab.UpResult, tmp_path: Path) -> None:
    reg = registry.load(lab_up.state)
    assert reg is not None, "the lab started no registry"
    node = lab_up.state.nodes[0].name
    v1 = serving(lab_up, node)["releases"][0]["model"]
    # Provisioned by digest from the registry: the spec's version, mounted from the node's store.
    assert v1.startswith("sha256:") and version_hex(v1) in serving(lab_up, node)["mount"]
    # Three more versions on one node: the store keeps 3 (the running one always), the least recently used goes.
    v2, v3, v4 = (new_version(lab_model(lab_up), tmp_path, n, reg) for n in (2, 3, 4))
    for v in (v2, v3, v4):
        provision(lab_up, "serving.yml", "-l", node, "-e", f"serving_model_version={v}")
    s = serving(lab_up, node)
    assert s["releases"][0]["model"] == v4 and version_hex(v4) in s["mount"] and len(s["store"]) == 3, s
    assert set(s["store"]) == {v4, v3, v2}, f"v1 (least recently used) should have gone: {s}"
    provision(lab_up, "serving.yml", "-l", node)  # back on the spec's version: pulled again, v2 goes now
    s = serving(lab_up, node)
    assert version_hex(v1) in s["mount"] and set(s["store"]) == {v1, v4, v3}, s
    assert httpx.get(f"{lab_up.state.nodes[0].serving_url}/ready", timeout=10).status_code == 200


def test_killed_pull_resumes_and_a_corrupted_version_is_refused(lab_up: lab.UpResult, tmp_path: Path) -> None:
    reg = registry.load(lab_up.state)
    assert reg is not None
    node = lab_up.state.nodes[-1]
    host = host_of(lab_up, node.name)
    lab_model = serving_artifacts.cache_dir(lab_up.state.lab_dir) / "models" / serving_artifacts.MODEL_NAME
    # A version with 48 MiB more weights than the tiny model, so a pull capped at 8 MB/s takes ~6 s to kill halfway.
    version = new_version(lab_model, tmp_path, 5, reg, extra_bytes=48 << 20)
    dest = version_dir(Path(STORE), version)
    staging, weights = partial_dir(dest), partial_dir(dest) / "extra.safetensors"
    pull = (f"{AGENT} pull --source {reg.node_base}/{registry.MODEL_REPOSITORY} --version {version} "
            f"--store {STORE}")
    before = serving(lab_up, node.name)

    host.check_output(f"nohup {pull} --max-rate 8 > /tmp/killed-pull.log 2>&1 &")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        have = int(host.check_output(f"stat -c %s {weights} 2>/dev/null || echo 0"))
        if have >= (16 << 20):
            break
        time.sleep(0.5)
    host.check_output("pkill -KILL -f 'llmrack-model-agent.pyz pull'")
    have = int(host.check_output(f"stat -c %s {weights}"))
    assert 0 < have < (48 << 20), have
    assert not host.file(str(dest)).exists, "a killed pull left a version directory in place"

    resumed = json.loads(host.check_output(pull))
    print(f"\npull killed at {have >> 20} MiB of 48 MiB; the re-run resumed {resumed['resumed_bytes']} bytes and "
          f"fetched {resumed['fetched_bytes']}")
    assert resumed["resumed_bytes"] >= have
    assert resumed["fetched_bytes"] == resumed["total_bytes"] - resumed["resumed_bytes"]
    assert host.file(str(dest)).is_directory and not host.file(str(staging)).exists

    # Bit rot in the node's copy: one byte of the weights changed. The role verifies the kept version before it
    # switches to it (standard level: every sha256) and stops, naming the file; the node keeps its release.
    host.check_output(f"printf '\\377' | dd of={dest}/extra.safetensors bs=1 seek=1000 conv=notrunc status=none")
    refused = lab.provision(lab_up.state.lab_dir, "serving.yml",
                            ["-l", node.name, "-e", f"serving_model_version={version}"])
    log = refused.log.read_text() if refused.log else ""
    assert refused.rc != 0 and refused.failed_hosts == [node.name], refused.recap
    assert "extra.safetensors" in log and "sha256" in log, f"the failure should name the file; see {refused.log}"
    assert "Traceback" not in log
    after = serving(lab_up, node.name)
    assert after["releases"] == before["releases"] and after["mount"] == before["mount"]
    assert httpx.get(f"{node.serving_url}/ready", timeout=10).status_code == 200
    host.check_output(f"rm -rf {dest}")
