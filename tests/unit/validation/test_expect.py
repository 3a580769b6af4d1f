"""Expectations come from the inventory and the catalog: kinds, accelerators, counts, vaulted API keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmrack.errors import UsageError
from llmrack.validation import expect
from llmrack.validation.expect import NodeKind

SPEC = {"name": "t", "environment": "prod", "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "/m"},
        "accelerator": "h100", "serving": {"max_model_len": 4096, "max_num_seqs": 8}}


def test_kind_accelerator_and_count_from_inventory_and_catalog() -> None:
    exp = expect.build("n1", {"group_names": ["nvidia_nodes"], "llmrack_deployment": SPEC})
    assert (exp.kind, exp.accelerator and exp.accelerator.name, exp.count) == (NodeKind.nvidia, "h100", 8)
    exp = expect.build("n2", {"group_names": ["nvidia_nodes"], "llmrack_deployment": SPEC,
                              "llmrack_accelerator_count": 4})
    assert exp.count == 4
    assert expect.build("n3", {"group_names": ["cpu_nodes"], "llmrack_deployment": SPEC}).accelerator is None
    assert "nvidia-fabricmanager" in expect.build("n1", {"group_names": ["nvidia_nodes", "serving_nodes"],
                                                         "llmrack_deployment": SPEC}).services()


def test_node_whose_accelerator_the_spec_cannot_name() -> None:
    with pytest.raises(UsageError) as err:
        expect.build("n4", {"group_names": ["ascend_nodes"], "llmrack_deployment": SPEC})
    assert "llmrack_accelerator" in str(err.value)
    exp = expect.build("n4", {"group_names": ["ascend_nodes"], "llmrack_deployment": SPEC,
                              "llmrack_accelerator": "ascend-910b"})
    assert exp.kind is NodeKind.ascend and exp.device_label == "npu"


def test_invalid_spec_in_inventory_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as err:
        expect.build("n1", {"group_names": ["nvidia_nodes"], "llmrack_deployment": {**SPEC, "accelerator": "a101"}})
    assert "llmrack_deployment (host n1)" in str(err.value) and "a100" in str(err.value)


def test_vaulted_api_keys_are_decrypted_with_the_inventory_password(tmp_path: Path) -> None:
    # In a child process: importing ansible patches sys.intern, which breaks torch._dynamo imported later in the
    # same process (other tests import torch). `llmrack validate` itself never imports torch.
    (tmp_path / "vault-password").write_text("s3cret\n")
    (tmp_path / "ansible.cfg").write_text("[defaults]\nvault_password_file = vault-password\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    cipher = subprocess.run(
        ["ansible-vault", "encrypt_string", "--vault-password-file", str(tmp_path / "vault-password"), "key-abc"],
        capture_output=True, text=True, check=True, env=env).stdout
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"n1": {"ansible_connection": "local"}}}}))
    body = cipher.split("!vault |", 1)[1]
    (inv / "group_vars" / "all" / "keys.yml").write_text("serving_api_keys:\n  - !vault |" + body.replace("\n", "\n  "))
    script = (
        "import sys; from pathlib import Path\n"
        "from testinfra.utils.ansible_runner import AnsibleRunner\n"
        "from llmrack.validation import expect\n"
        "inv = Path(sys.argv[1])\n"
        "raw = AnsibleRunner(str(inv)).get_variables('n1')['serving_api_keys']\n"
        "print(raw != ['key-abc'], expect.reveal_vault(raw, inv), expect.ansible_cfg(inv))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(inv)], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    # ansible-inventory leaves inline vault values encrypted; the password file next to the inventory opens them.
    assert out == ["True", "['key-abc']", str(tmp_path / "ansible.cfg")]


def test_vaulted_keys_without_a_password_file_say_what_to_set(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANSIBLE_CONFIG", raising=False)
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    with pytest.raises(UsageError) as err:
        expect.reveal_vault({"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n00"}, tmp_path)
    assert "ANSIBLE_VAULT_PASSWORD_FILE" in str(err.value)


def test_role_defaults_apply_under_inventory_vars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmrack.validation import hosts

    # Set (not just deleted) so monkeypatch restores it: host_vars() exports the inventory's ansible.cfg.
    monkeypatch.setenv("ANSIBLE_CONFIG", str(tmp_path / "ansible.cfg"))
    monkeypatch.delenv("ANSIBLE_ROLES_PATH", raising=False)
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    defaults = tmp_path / "roles" / "common" / "defaults"
    defaults.mkdir(parents=True)
    (defaults / "main.yml").write_text(yaml.safe_dump({
        "common_sysctl": {"vm.swappiness": 0}, "common_kernel_cmdline": ["iommu=pt"],
        "common_file": "{{ something }}.conf"}))
    (tmp_path / "ansible.cfg").write_text("[defaults]\nroles_path = roles\n")
    inv = tmp_path / "inventory"
    inv.mkdir()
    (inv / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"n1": {
        "ansible_connection": "local", "common_kernel_cmdline": ["iommu=pt", "pci=realloc=off"]}}}}))
    merged = hosts.host_vars(str(inv), "n1")
    assert merged["common_sysctl"] == {"vm.swappiness": 0}  # from the role
    assert merged["common_kernel_cmdline"] == ["iommu=pt", "pci=realloc=off"]  # the inventory wins
    assert "common_file" not in merged  # templated: only Ansible can evaluate it


def test_probe_in_the_serving_image_uses_the_serving_roles_settings() -> None:
    from llmrack.validation.evidence import collector_script

    exp = expect.build("n1", {
        "group_names": ["nvidia_nodes"], "llmrack_deployment": SPEC, "llmrack_validation_probe_runner": "serving-image",
        "containerd_snapshotter": "native",
        "serving_runtime_args": {"cuda": ["--runc-binary", "/usr/bin/nvidia-container-runtime",
                                          "--env", "NVIDIA_VISIBLE_DEVICES=all"], "cpu": []}})
    assert exp.probe_image is not None and exp.probe_image.snapshotter == "native"
    script = collector_script("standard", exp.python, exp.probe_image)
    assert ("ctr -n llmrack run --rm --snapshotter native --runc-binary /usr/bin/nvidia-container-runtime "
            "--env NVIDIA_VISIBLE_DEVICES=all") in script
    assert "containers info llmrack-serving" in script and "/llmrack-probe/probe.py --level standard" in script
    assert expect.build("n2", {"group_names": ["cpu_nodes"]}).probe_image is None  # default: the host's Python
    assert "python3 probe.py --level full" in collector_script("full", "python3")
