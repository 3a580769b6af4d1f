"""Static checks of the Ansible content: linters, role layout habits, argument specs in step with defaults."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
ROLES = sorted(p for p in (ANSIBLE / "roles").iterdir() if p.is_dir())
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")}


@pytest.mark.slow
def test_ansible_lint_production_profile_is_clean() -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor", "-q"],
        cwd=ANSIBLE, env=_env(), capture_output=True, text=True, check=False, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


def test_yamllint_is_clean() -> None:
    proc = subprocess.run(
        [str(BIN / "yamllint"), "-c", str(ANSIBLE / ".yamllint"), "-f", "parsable", "."],
        cwd=ANSIBLE, capture_output=True, text=True, check=False, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_layout(role: Path) -> None:
    for rel in ("defaults/main.yml", "tasks/main.yml", "meta/main.yml", "meta/argument_specs.yml"):
        assert (role / rel).is_file(), f"{role.name}: missing {rel}"
    assert list((role / "vars").glob("*.yml")), f"{role.name}: no per-OS-family vars"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_specs_match_defaults_and_are_prefixed(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert not [k for k in defaults if not k.startswith(role.name + "_")], "unprefixed defaults"
    assert sorted(defaults) == sorted(k for k in spec if k in defaults or k.startswith(role.name + "_")), (
        f"{role.name}: argument_specs and defaults differ: "
        f"only in defaults {sorted(set(defaults) - set(spec))}, only in spec {sorted(set(spec) - set(defaults))}"
    )
    for name, opt in spec.items():
        assert opt.get("description"), f"{role.name}.{name} has no description"
        assert "type" in opt, f"{role.name}.{name} has no type"


def _tasks(role: Path) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for f in sorted((role / "tasks").glob("*.yml")) + sorted((role / "handlers").glob("*.yml")):
        stack = list(yaml.safe_load(f.read_text()) or [])
        while stack:
            task = stack.pop()
            out.append(task)
            stack.extend(task.get("block", []) or [])
    return out


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_task_names_and_no_ignore_errors(role: Path) -> None:
    component = {t["name"].split(" | ")[0] for t in _tasks(role) if "block" not in t}
    assert len(component) == 1, f"{role.name}: task names must read 'Component | verb object': {component}"
    for task in _tasks(role):
        assert "ignore_errors" not in task, f"{role.name}: {task['name']} uses ignore_errors"
        module = next((k for k in task if "." in k and k.split(".")[0] in ("ansible", "community")), None)
        if "block" not in task:
            assert module, f"{role.name}: {task['name']}: module not fully qualified"


def test_secrets_are_no_log() -> None:
    tasks = _tasks(ANSIBLE / "roles" / "serving")
    touching = [t for t in tasks if "serving_api_keys" in yaml.safe_dump(t) and "ansible.builtin.copy" in t]
    assert touching and all(t.get("no_log") is True for t in touching)


def _topics(handler: dict[str, object]) -> list[object]:
    listen = handler.get("listen")
    return [listen] if isinstance(listen, str) else list(listen or [])  # type: ignore[call-overload]


@pytest.mark.parametrize("role", [r for r in ROLES if (r / "handlers/main.yml").exists()], ids=lambda p: p.name)
def test_restart_handlers_have_a_wait_twin(role: Path) -> None:
    handlers = yaml.safe_load((role / "handlers/main.yml").read_text()) or []
    for h in handlers:
        if "Restart" in h["name"] and h.get("listen"):
            topic = h["listen"]
            twins = [x for x in handlers if x is not h and topic in _topics(x)]
            assert twins, f"{role.name}: {h['name']} has no handler waiting on topic {topic!r}"


EXAMPLES = sorted((ANSIBLE / "inventories" / "examples").iterdir())


def _filters() -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location("llmrack_filters", ANSIBLE / "playbooks/filter_plugins/llmrack.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    filters: dict[str, Any] = module.FilterModule().filters()
    return filters


@pytest.mark.parametrize("inventory", EXAMPLES, ids=lambda p: p.name)
def test_example_inventory_groups_and_serving_flags(inventory: Path) -> None:
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())["all"]["children"]
    assert set(hosts) == {"serving_nodes", "monitoring"}
    assert set(hosts["serving_nodes"]["children"]) == {"nvidia_nodes", "ascend_nodes", "cpu_nodes"}
    deployment = yaml.safe_load((inventory / "group_vars/all/deployment.yml").read_text())["llmrack_deployment"]
    device = "cuda" if "a100" in inventory.name else "npu"
    command = _filters()["llmrack_serving_command"](deployment, device, "/models/m")
    args = command["args"]
    flags = dict(zip(args[1::2], args[2::2], strict=False)) if command["engine"] == "vllm" else \
        dict(zip(args[::2], args[1::2], strict=True))
    assert flags["--dtype"] == "bfloat16"
    assert flags["--max-num-seqs"] == str(deployment["serving"]["max_num_seqs"])
    assert flags["--max-model-len"] == str(deployment["serving"]["max_model_len"])
    assert _filters()["llmrack_devices_per_node"](deployment) == 8
    # Both example racks plan TP > 1: vLLM serves them, and the gateway health-checks vLLM's readiness path.
    assert command["engine"] == "vllm" and _filters()["llmrack_ready_path"](deployment) == "/health"
    one_device = {**deployment, "serving": {**deployment["serving"], "tensor_parallel": 1, "max_model_len": 2048,
                                            "max_num_seqs": 1},
                  "model": {**deployment["model"], "name": "deepseek-r1-distill-qwen-1.5b"}}
    # One device: vLLM still on the rack's accelerator nodes (serving.engine auto), llmrack's engine on CPU nodes.
    assert _filters()["llmrack_ready_path"](one_device) == "/health"
    assert _filters()["llmrack_ready_path"](one_device, "cpu") == "/ready"


def test_serving_flags_reject_a_bad_spec_with_llmrack_message() -> None:
    from ansible.errors import AnsibleFilterError

    bad = {"name": "x", "environment": "prod", "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "/m"},
           "accelerator": "a100-80g", "serving": {"max_model_len": 4096, "max_num_seqs": 8, "max_queu": 1}}
    with pytest.raises(AnsibleFilterError, match="did you mean 'max_queue'"):
        _filters()["llmrack_serving_command"](bad, "cuda", "/models/m")


@pytest.mark.parametrize("playbook", ["site.yml", "serving.yml", "rollback.yml", "upgrade-driver.yml"])
def test_playbooks_pass_syntax_check(playbook: str) -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(EXAMPLES[0] / "hosts.yml"),
         str(ANSIBLE / "playbooks" / playbook)],
        cwd=ANSIBLE, env=_env(), capture_output=True, text=True, check=False, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_rollouts_move_whole_replicas_workers_before_their_leader() -> None:
    # Two 2-node replicas and a one-node one; a worker of r1 needs a restart: all of r1 goes, worker first.
    hostvars = {"a": {"llmrack_replica": "a"}, "b": {"llmrack_replica": "a", "llmrack_replica_rank": 1},
                "c": {}, "d": {"llmrack_replica": "d", "llmrack_replica_rank": 0},
                "e": {"llmrack_replica": "d", "llmrack_replica_rank": 1}}
    f = _filters()
    assert f["llmrack_rollout_order"](["b"], list(hostvars), hostvars) == ["b", "a"]
    assert f["llmrack_rollout_order"](["c", "d"], list(hostvars), hostvars) == ["c", "e", "d"]
    assert f["llmrack_replica_size"](["b", "a"], hostvars) == 2
    assert f["llmrack_replica_size"](["c"], hostvars) == 1
    member = f["llmrack_replica_member"](list(hostvars), "e", hostvars)
    assert (member["rank"], member["leader"], member["nodes"]) == (1, "d", 2)
    from ansible.errors import AnsibleFilterError
    with pytest.raises(AnsibleFilterError, match=r"inventory: hosts a and b both have llmrack_replica_rank 0"):
        f["llmrack_rollout_order"](["a"], ["a", "b"], {"a": {"llmrack_replica": "r"}, "b": {"llmrack_replica": "r"}})


def test_a_multi_node_spec_needs_replicas_in_the_inventory() -> None:
    from ansible.errors import AnsibleFilterError
    r1 = {"name": "r1", "environment": "prod", "accelerator": "h200", "nodes": 2,
          "model": {"name": "deepseek-r1", "source": "/m"}, "serving": {"max_model_len": 8192, "max_num_seqs": 16}}
    with pytest.raises(AnsibleFilterError, match=r"the node's replica has 1 node\(s\) and the plan's replica is 2"):
        _filters()["llmrack_serving_command"](r1, "cuda", "/models/r1")
    leader = _filters()["llmrack_serving_command"](r1, "cuda", "/models/r1", replica={
        "replica": "g0", "nodes": 2, "rank": 0, "leader_address": "10.0.0.1", "address": "10.0.0.1",
        "interface": "ib0"})
    assert leader["serves_http"] and "--nnodes" in leader["args"] and leader["env"]["NCCL_SOCKET_IFNAME"] == "ib0"
