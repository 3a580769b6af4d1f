"""The serving command renderer: engine choice from the plan, argv + env per engine, keys never on a command line.
tests/infra/test_serving_command_paths.py shows both deployment paths run the command it renders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmrack import catalog
from llmrack.contracts.serving_command import (
    LEADER_PORT,
    Engine,
    NodeKind,
    ReplicaMember,
    ServingCommandError,
    ServingInputs,
    choose_engine,
    engine_for,
    render,
)
from llmrack.plan import Plan, plan
from llmrack.spec import DeploymentSpec, SpecError, parse_spec

BIN = Path(sys.executable).parent


def _spec(**serving: Any) -> DeploymentSpec:
    data = {"name": "d", "environment": "dev", "accelerator": "a100-80g",
            "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "/m"},
            "serving": {"max_model_len": 4096, "max_num_seqs": 8, **serving}}
    return parse_spec(data, "spec")


def _plan(spec: DeploymentSpec) -> Plan:
    return plan(spec.plan_request(), catalog.accelerator(spec.accelerator))


def _inputs(**changes: Any) -> ServingInputs:
    base: dict[str, Any] = dict(
        engine=Engine.vllm, node=NodeKind.cuda, model_path="/models/m", served_model_name="m",
        weights_dtype="bf16", kv_cache_dtype="bf16", tensor_parallel=2, pipeline_parallel=1, max_model_len=4096,
        max_num_seqs=8, max_queue=16, port=8000, memory_utilization=0.85, kv_cache_bytes=3 << 30,
    )
    base.update(changes)
    return ServingInputs(**base)


def _flags(args: tuple[str, ...] | list[str]) -> dict[str, str]:
    start = 0 if args[0].startswith("--") else 1  # vLLM's model is positional
    return dict(zip(args[start::2], args[start + 1::2], strict=True))


def test_auto_serves_accelerator_nodes_with_vllm_and_one_cpu_device_with_llmrack() -> None:
    assert choose_engine("auto", 1, 1).engine is Engine.llmrack  # a CPU node (the lab, tests)
    wide = choose_engine("auto", 2, 1)
    assert wide.engine is Engine.vllm and "TP 2 x PP 1 = 2 devices" in wide.reason
    for node in (NodeKind.cuda, NodeKind.npu):
        one = choose_engine("auto", 1, 1, node)
        assert one.engine is Engine.vllm and f"every accelerator node ({node.value})" in one.reason
    assert choose_engine("vllm", 1, 1).engine is Engine.vllm
    one = _spec(tensor_parallel=1)
    assert engine_for(one, _plan(one)).engine is Engine.vllm  # an a100-80g spec: its nodes are cuda
    assert engine_for(one, _plan(one), "cpu").engine is Engine.llmrack  # the same spec on the lab's CPU nodes


def test_llmrack_engine_refuses_a_multi_device_plan_naming_the_key_and_the_fix() -> None:
    with pytest.raises(SpecError, match=r"serving\.engine: llmrack serves one device.*TP 2 x PP 1 = 2 devices"):
        _spec(engine="llmrack", tensor_parallel=2)
    with pytest.raises(ServingCommandError, match=r"set serving\.engine to vllm \(or auto\)"):
        choose_engine("llmrack", 2, 2)
    with pytest.raises(ServingCommandError, match=r"model\.weights_dtype: fp8.*serving\.engine: vllm"):
        render(_inputs(engine=Engine.llmrack, tensor_parallel=1, weights_dtype="fp8"))


def test_spec_check_says_which_engine_and_why(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    data = {"name": "d", "environment": "dev", "accelerator": "a100-80g", "nodes": 1,
            "model": {"name": "deepseek-r1-distill-qwen-32b", "source": "/m"},
            "serving": {"max_model_len": 8192, "max_num_seqs": 32}}
    spec.write_text(yaml.safe_dump(data))
    proc = subprocess.run([str(BIN / "llmrack"), "spec", "check", "--json", str(spec)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    # TP 4: the plan keeps 20 % of memory unused (planning.headroom), which TP 2 would eat.
    assert out["plan"]["tensor_parallel"] == 4
    assert out["engine"]["engine"] == "vllm" and "every accelerator node (cuda)" in out["engine"]["reason"]
    assert out["replica"]["nodes"] == 1
    data["serving"]["engine"] = "llmrack"
    spec.write_text(yaml.safe_dump(data))
    proc = subprocess.run([str(BIN / "llmrack"), "spec", "check", str(spec)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2
    assert "serving.engine: llmrack serves one device" in proc.stderr and "Traceback" not in proc.stderr


def test_vllm_flags_come_from_the_plan() -> None:
    cmd = render(_inputs())
    assert cmd.program == ("vllm", "serve") and cmd.args[0] == "/models/m"
    flags = _flags(cmd.args)
    assert flags["--tensor-parallel-size"] == "2" and flags["--pipeline-parallel-size"] == "1"
    assert flags["--gpu-memory-utilization"] == "0.85"
    assert flags["--max-model-len"] == "4096" and flags["--max-num-seqs"] == "8"
    assert flags["--dtype"] == "bfloat16" and flags["--served-model-name"] == "m"
    assert "--distributed-executor-backend" not in flags
    assert cmd.ready_path == "/health" and cmd.metrics_prefix == "vllm:"
    fp8 = _flags(render(_inputs(weights_dtype="fp8", kv_cache_dtype="fp8")).args)
    assert fp8["--quantization"] == "fp8" and fp8["--kv-cache-dtype"] == "fp8"


def _r1_on_h200(**serving: Any) -> tuple[DeploymentSpec, Plan]:
    spec = parse_spec({"name": "r1", "environment": "prod", "accelerator": "h200", "nodes": 2,
                       "model": {"name": "deepseek-r1", "source": "/m", "weights_dtype": "fp8"},
                       "serving": {"max_model_len": 32768, "max_num_seqs": 32, **serving}}, "spec")
    return spec, _plan(spec)


def test_a_replica_across_nodes_runs_vllms_own_launcher_per_rank() -> None:
    spec, p = _r1_on_h200()
    assert (p.tensor_parallel, p.pipeline_parallel, p.nodes_per_replica) == (8, 2, 2)
    cmds = [render(ServingInputs.from_spec(spec, p, "cuda", model_path="/models/r1", replica=ReplicaMember(
        nodes=2, rank=rank, leader_address="10.0.0.1", address=f"10.0.0.{rank + 1}", interface="ens8f0")))
        for rank in (0, 1)]
    for rank, cmd in enumerate(cmds):
        flags = _flags([a for a in cmd.args if a != "--headless"])
        assert flags["--tensor-parallel-size"] == "8" and flags["--pipeline-parallel-size"] == "2"
        assert flags["--distributed-executor-backend"] == "mp" and flags["--quantization"] == "fp8"
        assert (flags["--nnodes"], flags["--node-rank"]) == ("2", str(rank))
        assert (flags["--master-addr"], flags["--master-port"]) == ("10.0.0.1", str(LEADER_PORT))
        assert cmd.env["VLLM_HOST_IP"] == f"10.0.0.{rank + 1}"
        assert cmd.env["GLOO_SOCKET_IFNAME"] == cmd.env["NCCL_SOCKET_IFNAME"] == "ens8f0"
        assert (cmd.nodes, cmd.rank) == (2, rank)
    leader, worker = cmds
    assert "--headless" not in leader.args and leader.serves_http and "--config" in leader.args
    assert "--headless" in worker.args and not worker.serves_http and "--config" not in worker.args
    assert "ray" not in " ".join(leader.argv + worker.argv)


def test_ascend_nodes_name_the_data_network_for_hccl() -> None:
    cmd = render(_inputs(node=NodeKind.npu, tensor_parallel=8, pipeline_parallel=4, replica=ReplicaMember(
        nodes=4, rank=2, leader_address="192.168.1.1", address="192.168.1.3", interface="enp189s0f0")))
    assert cmd.env["HCCL_IF_IP"] == "192.168.1.3"
    assert cmd.env["HCCL_SOCKET_IFNAME"] == cmd.env["TP_SOCKET_IFNAME"] == cmd.env["GLOO_SOCKET_IFNAME"]
    assert "NCCL_SOCKET_IFNAME" not in cmd.env and "--headless" in cmd.args


def test_a_cpu_replica_across_nodes_binds_only_its_local_ranks() -> None:
    # PP 2 over 2 nodes: one rank per node, vLLM-CPU binds it itself; TP 2 x PP 2 over 2 nodes: two per node.
    one = render(_inputs(node=NodeKind.cpu, tensor_parallel=1, pipeline_parallel=2, cpu_cores=2,
                         replica=ReplicaMember(nodes=2, rank=1, leader_address="10.88.0.2", interface="eth0")))
    assert "VLLM_CPU_OMP_THREADS_BIND" not in one.env and one.env["GLOO_SOCKET_IFNAME"] == "eth0"
    two = render(_inputs(node=NodeKind.cpu, tensor_parallel=2, pipeline_parallel=2, cpu_cores=4,
                         replica=ReplicaMember(nodes=2, rank=0, leader_address="10.88.0.2")))
    assert two.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-1|2-3"


def test_ray_only_when_the_spec_asks_for_it() -> None:
    spec, p = _r1_on_h200(executor="ray")
    member = {"leader_address": "10.0.0.1", "nodes": 2}
    leader = render(ServingInputs.from_spec(spec, p, "cuda", model_path="/m", replica=ReplicaMember(rank=0, **member)))
    worker = render(ServingInputs.from_spec(spec, p, "cuda", model_path="/m", replica=ReplicaMember(rank=1, **member)))
    assert leader.program[:2] == ("sh", "-c") and "ray start --head" in leader.program[2]
    assert _flags(leader.args)["--distributed-executor-backend"] == "ray"
    assert worker.argv == ("ray", "start", "--block", f"--address=10.0.0.1:{LEADER_PORT}")
    assert not worker.serves_http


def test_bad_replicas_are_refused_naming_what_to_set() -> None:
    with pytest.raises(ServingCommandError, match=r"needs its leader's address.*llmrack_node_address"):
        render(_inputs(pipeline_parallel=2, replica=ReplicaMember(nodes=2, rank=1)))
    with pytest.raises(ServingCommandError, match=r"llmrack_replica_rank 2 is outside a replica of 2 nodes"):
        render(_inputs(pipeline_parallel=2, replica=ReplicaMember(nodes=2, rank=2, leader_address="a")))
    with pytest.raises(ServingCommandError, match=r"serving\.pipeline_parallel: 3 stages.*multiple of 2"):
        render(_inputs(pipeline_parallel=3, replica=ReplicaMember(nodes=2, leader_address="a")))
    with pytest.raises(ServingCommandError, match=r"serving\.engine: llmrack serves one node"):
        render(_inputs(engine=Engine.llmrack, tensor_parallel=1, replica=ReplicaMember(nodes=2, leader_address="a")))
    with pytest.raises(ServingCommandError, match=r"serving\.expert_parallel: true on CPU nodes"):
        render(_inputs(node=NodeKind.cpu, cpu_cores=2, expert_parallel=True))
    assert "--enable-expert-parallel" in render(_inputs(expert_parallel=True)).args


def test_cpu_ranks_get_their_own_cores_and_the_kv_cache_its_gibibytes() -> None:
    cmd = render(_inputs(node=NodeKind.cpu, cpu_cores=2, kv_cache_bytes=3 << 30))
    assert cmd.env["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
    assert cmd.env["VLLM_CPU_KVCACHE_SPACE"] == "2"  # 3 GiB over two ranks, rounded up per rank
    flags = _flags(cmd.args)
    assert flags["--dtype"] == "float32" and "--gpu-memory-utilization" not in flags
    assert render(_inputs(node=NodeKind.cpu, cpu_cores=8, tensor_parallel=4)).env[
        "VLLM_CPU_OMP_THREADS_BIND"] == "0-1|2-3|4-5|6-7"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in render(_inputs(node=NodeKind.cpu, tensor_parallel=1)).env
    with pytest.raises(ServingCommandError, match=r"serving\.tensor_parallel: 4 vLLM CPU ranks.*has 2 cores"):
        render(_inputs(node=NodeKind.cpu, cpu_cores=2, tensor_parallel=4))


def test_api_keys_come_from_a_file_never_the_command_line() -> None:
    keys = ["sk-one", "sk: two#"]
    for engine in (Engine.llmrack, Engine.vllm):
        cmd = render(_inputs(engine=engine, tensor_parallel=1))
        assert cmd.api_key_file is not None and cmd.api_key_file in cmd.args
        assert not any(k in arg for k in keys for arg in cmd.argv)
        assert not any(k in v for k in keys for v in cmd.env.values())
    vllm = render(_inputs())
    assert vllm.api_key_file is not None and vllm.api_key_file.endswith(".yaml")  # vLLM's --config wants .yaml
    assert yaml.safe_load(vllm.api_key_file_content(keys)) == {"api-key": keys}
    llmrack = render(_inputs(engine=Engine.llmrack, tensor_parallel=1))
    assert llmrack.api_key_file_content(keys).splitlines() == keys
    assert render(_inputs(api_keys=False)).api_key_file is None


def test_vllm_gets_a_large_dev_shm_even_with_one_rank() -> None:
    # vLLM's engine core reaches its worker through a shared-memory ring buffer (160 MiB) at TP 1 too; the
    # container runtime's default 64 MiB /dev/shm stops it at start. llmrack's engine needs none.
    for node in NodeKind:
        assert render(_inputs(node=node, tensor_parallel=1)).shared_memory, node
    assert not render(_inputs(engine=Engine.llmrack, tensor_parallel=1)).shared_memory


def test_vllms_compile_cache_is_the_directory_the_runtime_keeps() -> None:
    # A restart that finds torch.compile's artifacts skips compiling (tens of seconds per rank); llmrack's engine
    # compiles nothing.
    for node in NodeKind:
        cmd = render(_inputs(node=node, tensor_parallel=1))
        assert cmd.cache_dir is not None and cmd.env["VLLM_CACHE_ROOT"] == cmd.cache_dir == cmd.to_dict()["cache_dir"]
    assert render(_inputs(engine=Engine.llmrack, tensor_parallel=1)).cache_dir is None


def test_serving_tls_gives_both_engines_the_certificate_and_the_leader_only() -> None:
    from llmrack.contracts.serving_command import TLS_DIR

    plain = render(ServingInputs.from_spec(_spec(), _plan(_spec()), "cuda", model_path="/models/m"))
    assert plain.tls_dir is None and plain.scheme == "http" and "--ssl-certfile" not in plain.args
    for engine, node in (("vllm", "cuda"), ("llmrack", "cpu")):
        spec = _spec(tls=True, engine=engine, tensor_parallel=1)
        cmd = render(ServingInputs.from_spec(spec, _plan(spec), node, model_path="/models/m"))
        flags = _flags(cmd.args)
        assert (flags["--ssl-certfile"], flags["--ssl-keyfile"]) == (f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key")
        assert cmd.tls_dir == TLS_DIR and cmd.scheme == "https"
        assert cmd.to_dict()["scheme"] == "https" and cmd.to_dict()["tls_dir"] == TLS_DIR
    spec, p = _r1_on_h200(tls=True)
    leader, worker = (render(ServingInputs.from_spec(spec, p, "cuda", model_path="/models/r1", replica=ReplicaMember(
        nodes=2, rank=rank, leader_address="10.0.0.1"))) for rank in (0, 1))
    assert leader.scheme == "https" and "--ssl-keyfile" in leader.args
    assert worker.tls_dir is None and "--ssl-keyfile" not in worker.args  # a headless worker serves no HTTP
    with pytest.raises(SpecError, match=r"serving\.tls"):
        _spec(tls="sometimes")
