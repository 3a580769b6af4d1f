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
    Engine,
    NodeKind,
    ServingCommandError,
    ServingInputs,
    choose_engine,
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


def test_auto_serves_one_device_with_llmrack_and_more_with_vllm() -> None:
    assert choose_engine("auto", 1, 1).engine is Engine.llmrack
    wide = choose_engine("auto", 2, 1)
    assert wide.engine is Engine.vllm and "TP 2 x PP 1 = 2 devices" in wide.reason
    assert choose_engine("vllm", 1, 1).engine is Engine.vllm
    one = _spec(tensor_parallel=1)
    assert one.engine_choice(_plan(one)).engine is Engine.llmrack


def test_llmrack_engine_refuses_a_multi_device_plan_naming_the_key_and_the_fix() -> None:
    with pytest.raises(SpecError, match=r"serving\.engine: llmrack serves one device.*serving\.tensor_parallel is 2"):
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
    assert out["engine"] == {"engine": "vllm", "reason": "auto: the plan needs TP 4 x PP 1 = 4 devices per "
                                                         "replica, vLLM"}
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


def test_pipeline_stages_across_nodes_use_the_ray_executor() -> None:
    spec = parse_spec({"name": "r1", "environment": "prod", "accelerator": "h200", "nodes": 2,
                       "model": {"name": "deepseek-r1", "source": "/m", "weights_dtype": "fp8"},
                       "serving": {"max_model_len": 32768, "max_num_seqs": 32}}, "spec")
    p = _plan(spec)
    assert (p.tensor_parallel, p.pipeline_parallel) == (8, 2)
    cmd = render(ServingInputs.from_spec(spec, p, "cuda", model_path="/models/r1"))
    flags = _flags(cmd.args)
    assert flags["--tensor-parallel-size"] == "8" and flags["--pipeline-parallel-size"] == "2"
    assert flags["--distributed-executor-backend"] == "ray" and flags["--quantization"] == "fp8"


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
