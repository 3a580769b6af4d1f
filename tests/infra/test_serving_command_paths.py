"""One spec, one serving command: the Ansible serving role's systemd unit and the Pulumi serving component's pods
run the argv and environment that llmrack.contracts.serving_command renders, for both engines."""

from __future__ import annotations

import itertools
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import record
from tests.infra.harness import run_stack, stack_config

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROD_IMAGE = stack_config("prod")["llmrack:image"]
KEY = "sk-llmrack-unit-test-key"


def _unit_argv(unit: str) -> tuple[list[str], dict[str, str]]:
    """The container command and --env pairs of the ExecStart line the serving role's unit runs."""
    start = next(line for line in unit.replace("\\\n", " ").splitlines() if line.startswith("ExecStart="))
    words = shlex.split(start.removeprefix("ExecStart="))
    env = dict(w.split("=", 1) for prev, w in itertools.pairwise(words) if prev == "--env")
    after_image = words.index("llmrack-serving") + 1  # ctr run ... IMAGE CONTAINER-ID COMMAND...
    return words[after_image:], env


def _unit_from_the_role(tmp_path: Path, deployment: dict[str, Any], device: str, model_dir: str) -> str:
    """The serving role's systemd unit, rendered by Ansible from the role's own vars and template."""
    role = ROOT / "ansible" / "roles" / "serving"
    out = tmp_path / "llmrack-serving.service"
    play = [{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars_files": [str(role / "defaults" / "main.yml"), str(role / "vars" / "main.yml")],
        "tasks": [{"ansible.builtin.template": {"src": str(role / "templates" / "llmrack-serving.service.j2"),
                                                "dest": str(out), "mode": "0644"}}],
    }]
    # Extra vars: they outrank the role defaults loaded as vars_files, as inventory values outrank role defaults.
    given = {"llmrack_deployment": deployment, "serving_device": device, "serving_model_dir": model_dir,
             "serving_api_keys": [KEY], "serving_image_digest": "sha256:" + "a" * 64,
             "__serving_ctr": "/usr/bin/ctr", "__serving_image_ref": "llmrack.local/serving@sha256:" + "a" * 64,
             "__serving_nccl_env": {"stat": {"exists": False}}, "ansible_facts": {"processor_vcpus": 2},
             "inventory_dir": str(tmp_path), "ansible_python_interpreter": sys.executable}
    (tmp_path / "vars.json").write_text(json.dumps(given))
    playbook = tmp_path / "unit.yml"
    playbook.write_text(yaml.safe_dump(play))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"), "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_FILTER_PLUGINS": str(ROOT / "ansible" / "playbooks" / "filter_plugins"),
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-e", f"@{tmp_path / 'vars.json'}",
                           str(playbook)], cwd=ROOT / "ansible", env=env, capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return out.read_text()


@pytest.mark.parametrize("engine", ["auto", "llmrack"])
def test_one_spec_gives_the_same_command_to_ansible_and_pulumi(engine: str, tmp_path: Path) -> None:
    deployment = dict(stack_config("prod")["llmrack:deployment"])
    if engine == "llmrack":  # one device: the llmrack engine; otherwise the plan's TP 4 on H100 means vLLM
        deployment = {**deployment, "model": {**deployment["model"], "name": "deepseek-r1-distill-qwen-1.5b"},
                      "serving": {**deployment["serving"], "engine": "llmrack"}}
    record(tmp_path, PROD_IMAGE, "passed")
    run, error, _ = run_stack("prod", plain={"llmrack:scanResultsDir": str(tmp_path),
                                             "llmrack:deployment": deployment})
    assert error is None and run is not None, error
    pod = run.one("kubernetes:apps/v1:Deployment").state["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "models")
    pulumi_argv = container["command"] + container["args"]
    pulumi_env = {e["name"]: e["value"] for e in container["env"]}

    unit = _unit_from_the_role(tmp_path, deployment, "cuda", f"/srv/models/{Path(mount).name}")
    ansible_argv, ansible_env = _unit_argv(unit)
    assert ansible_argv == pulumi_argv
    # The node's container runtime adds its own device variables (serving_runtime_args), Kubernetes its plugin's.
    runtime = yaml.safe_load((ROOT / "ansible/roles/serving/defaults/main.yml").read_text())["serving_runtime_args"]
    device_vars = {a.split("=", 1)[0] for args in runtime.values() for a in args if "=" in a}
    assert {"HOME": "/tmp", **{k: v for k, v in ansible_env.items() if k not in device_vars}} == pulumi_env
    expected = "vllm" if engine == "auto" else "llmrack"
    assert pulumi_argv[0] == ("vllm" if expected == "vllm" else "python")
    assert f"engine {expected}" in unit and KEY not in unit
    # vLLM's compile cache outlives a restart on both: a node directory on the unit, the pod's /tmp emptyDir.
    cache = pulumi_env.get("VLLM_CACHE_ROOT")
    assert (cache is not None) == (expected == "vllm")
    if cache:
        assert f"src=/var/cache/llmrack/serving,dst={cache},options=rbind:rw" in unit
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert cache.startswith("/tmp/") and any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])
    else:
        assert "/var/cache/llmrack/serving" not in unit


def test_lab_spec_at_tp2_renders_vllm_cpu_ranks_in_the_unit(tmp_path: Path) -> None:
    """The lab's spec with serving.engine vllm and tensor_parallel 2 on a CPU node (`llmrack lab up --engine vllm`
    serves it; tests/lab/test_multinode.py runs a PP-2 replica across two lab nodes): one core per rank, the
    container's own /dev/shm, the keys as vLLM's --config file and never on the command line."""
    from llmrack.lab import serving_artifacts

    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "vocab_size": 512, "hidden_size": 256, "intermediate_size": 512,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 2048, "tie_word_embeddings": False}))
    artifacts = serving_artifacts.ServingArtifacts(archive=tmp_path / "a.oci.tar", digest="sha256:" + "a" * 64,
                                                   reference="", model_dir=model)
    deployment = serving_artifacts.deployment(artifacts, engine="vllm", tensor_parallel=2)
    unit = _unit_from_the_role(tmp_path, deployment, "cpu", "/srv/mirror/models/tiny-qwen2")
    argv, env = _unit_argv(unit)
    assert argv[:3] == ["vllm", "serve", "/models/tiny-qwen2"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags["--tensor-parallel-size"] == "2" and flags["--dtype"] == "float32"
    assert flags["--config"] == "/etc/llmrack/api-keys/keys.yaml"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1" and env["VLLM_TARGET_DEVICE"] == "cpu"
    assert int(env["VLLM_CPU_KVCACHE_SPACE"]) >= 1
    assert "type=tmpfs,src=tmpfs,dst=/dev/shm" in unit
    assert "dst=/etc/llmrack/api-keys/keys.yaml" in unit and KEY not in unit
