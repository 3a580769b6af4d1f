"""Model versions on the lab's rack: pushed to the lab's registry (Debian docker-registry), pulled onto every
node by digest by the serving role, rolled to a second version and back (rollback.yml returns the image AND
model pair), at most 3 versions kept per node. (A killed pull resumed and a corrupted file refused by name are
tested against a real registry in tests/unit/test_models.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmrack.contracts.model_manifest import MANIFEST_FILE, version_hex
from llmrack.lab import lab, registry, serving_artifacts
from llmrack.models import transfer
from tests.lab.hosts import host_of

pytestmark = [pytest.mark.lab, pytest.mark.slow]

STORE = "/var/lib/llmrack/models"
RELEASES = "/var/lib/llmrack/releases.json"
AGENT = "python3 /usr/local/lib/llmrack/llmrack-model-agent.pyz"
UNIT = "/etc/systemd/system/llmrack-serving.service"


def new_version(lab_model: Path, tmp: Path, n: int, reg: registry.LabRegistry) -> str:
    """Another release of the lab's tiny model (one generation setting changed), pushed; returns its version."""
    src = tmp / f"v{n}"
    shutil.copytree(lab_model, src)
    (src / MANIFEST_FILE).unlink(missing_ok=True)
    gen = json.loads((src / "generation_config.json").read_text())
    gen["max_new_tokens"] = 16 + n
    (src / "generation_config.json").write_text(json.dumps(gen))
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


def test_model_versions_roll_back_and_keep_three(lab_up: lab.UpResult, tmp_path: Path) -> None:
    reg = registry.load(lab_up.state)
    assert reg is not None, "the lab started no registry"
    names = [n.name for n in lab_up.state.nodes]
    lab_model = serving_artifacts.cache_dir(lab_up.state.lab_dir) / "models" / serving_artifacts.MODEL_NAME
    before = {n: serving(lab_up, n) for n in names}
    image, v1 = before[names[0]]["releases"][0]["image"], before[names[0]]["releases"][0]["model"]
    # Provisioned by digest from the registry: the spec's version, verified, mounted from the node's store.
    assert v1.startswith("sha256:")
    for n, s in before.items():
        assert s["releases"][0] == {"image": image, "model": v1} and version_hex(v1) in s["mount"], (n, s)
        host_of(lab_up, n).check_output(f"{AGENT} verify --dir {STORE}/{version_hex(v1)} --level standard")

    # A second version rolls out (serving.yml: pulled in the prepare half, switched in the rollout half) ...
    v2 = new_version(lab_model, tmp_path, 2, reg)
    provision(lab_up, "serving.yml", "-e", f"serving_model_version={v2}")
    for n in names:
        s = serving(lab_up, n)
        assert s["releases"][:2] == [{"image": image, "model": v2}, {"image": image, "model": v1}], (n, s)
        assert version_hex(v2) in s["mount"]
    # ... and rollback.yml returns to the previous image and model pair.
    provision(lab_up, "rollback.yml")
    for node in lab_up.state.nodes:
        s = serving(lab_up, node.name)
        assert s["releases"][0] == {"image": image, "model": v1} and version_hex(v1) in s["mount"], s
        assert httpx.get(f"{node.serving_url}/ready", timeout=10).status_code == 200

    # Two more versions on node1: the store keeps 3 (the running one always), the oldest unused one goes.
    v3, v4 = new_version(lab_model, tmp_path, 3, reg), new_version(lab_model, tmp_path, 4, reg)
    provision(lab_up, "serving.yml", "-l", names[0], "-e", f"serving_model_version={v3}")
    provision(lab_up, "serving.yml", "-l", names[0], "-e", f"serving_model_version={v4}")
    s = serving(lab_up, names[0])
    assert s["releases"][0]["model"] == v4 and len(s["store"]) == 3, s
    assert set(s["store"]) == {v4, v3, v1}, f"v2 (least recently used) should have gone: {s}"
    provision(lab_up, "serving.yml", "-l", names[0])  # back on the spec's version, still in the store
    assert version_hex(v1) in serving(lab_up, names[0])["mount"]
