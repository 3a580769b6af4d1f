"""GPU truth: on a machine with an accelerator, run the standard validation level and hold the planner's memory
prediction against a real load. Prints every figure; on a machine without one it says why and skips that part.

    .venv/bin/python benchmarks/gpu_truth.py [--out DIR] [--layers 24 --hidden 2048 --context 4096 --concurrency 8]

1. `llmrack validate --local --level standard` with a spec naming the accelerator found (its catalog name from
   the device's own name) and `--expect llmrack_accelerator_count=<devices seen>`; every perf.* row is printed.
2. The planner vs measured memory: a Qwen2 model with random weights is written (transformers, offline), its
   config planned with `llmrack.plan` (weights + KV cache for concurrency x context + activation workspace), then
   loaded on device 0 in BF16 and `concurrency` sequences of `context` tokens prefilled one by one, all KV caches
   kept;
   the peak memory torch allocated is compared with the prediction (the plan's runtime overhead, CUDA context and
   workspaces outside torch's allocator, is not part of either figure).

Exit 0 when it ran (or skipped with its reason), 1 when the planner under-predicted by more than 10 %.
"""

# ruff: noqa: PLC0415  (torch and transformers are imported only when used)
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30


def device() -> tuple[str | None, int, str]:
    """(torch device type, count, name of device 0), or (None, 0, reason)."""
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.cuda.device_count(), torch.cuda.get_device_name(0)
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)

        if torch.npu.is_available():
            return "npu", torch.npu.device_count(), torch.npu.get_device_name(0)
    except ImportError:
        pass
    return None, 0, f"torch {torch.__version__} sees no CUDA or NPU device"


def validate(out: Path, kind: str, count: int, name: str) -> dict[str, Any]:
    from llmrack import catalog

    acc = catalog.accelerator_for_smi_name(name)
    if acc is None:
        return {"skipped": f"{name!r} is not in the catalog (llmrack catalog accelerators)"}
    spec = out / "spec.yaml"
    spec.write_text(f"name: gpu-truth\nenvironment: dev\naccelerator: {acc.name}\n"
                    "model: {name: deepseek-r1-distill-qwen-7b, source: /models/unused}\n"
                    "serving: {max_model_len: 4096, max_num_seqs: 8}\n")
    cmd = [sys.executable, "-m", "llmrack", "validate", "--local", "--level", "standard", "--spec", str(spec),
           "--expect", f"llmrack_accelerator_count={count}", "--report", str(out / "report")]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    report = json.loads((out / "report" / "report.json").read_text()) if (out / "report").is_dir() else {}
    rows = [c for c in report.get("checks", []) if c["check"].startswith(("perf.", "nvidia.", "ascend."))]
    return {"accelerator": acc.name, "command": " ".join(cmd), "exit": proc.returncode,
            "seconds": round(time.perf_counter() - started, 1), "summary": report.get("summary"),
            "rows": [{k: c[k] for k in ("id", "status", "measured", "threshold", "unit", "detail")} for c in rows],
            "stderr_tail": proc.stderr[-2000:] if proc.returncode not in (0, 1) else ""}


def write_model(where: Path, layers: int, hidden: int, context: int) -> Path:
    from transformers import AutoModelForCausalLM, Qwen2Config

    heads = max(1, hidden // 128)
    config = Qwen2Config(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 4), vocab_size=32000,
                         max_position_embeddings=max(context, 4096), dtype="bfloat16")
    AutoModelForCausalLM.from_config(config).save_pretrained(where)
    return where


def predicted(model_dir: Path, acc_name: str, context: int, concurrency: int) -> dict[str, Any]:
    from llmrack import catalog
    from llmrack.arch import load_config_file
    from llmrack.plan import PlanRequest, plan

    req = PlanRequest(model_name="gpu-truth", arch=load_config_file(model_dir / "config.json"), context=context,
                      concurrency=concurrency, headroom=0.0, tensor_parallel=1)
    p = plan(req, catalog.accelerator(acc_name))
    mem = p.memory_per_device
    total = mem.weights_bytes + p.kv_cache_bytes + mem.activation_workspace_bytes
    return {"weights_bytes": mem.weights_bytes, "kv_cache_bytes": p.kv_cache_bytes,
            "activation_workspace_bytes": mem.activation_workspace_bytes, "predicted_bytes": total,
            "fits": p.fits, "params": p.model.params}


def load(model_dir: Path, dev: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).to(dev).eval()


def prefill(model: Any, dev: Any, context: int, concurrency: int) -> list[Any]:
    """`concurrency` sequences of `context` tokens, one per forward (a prefill chunk of `context` tokens, as the
    plan's workspace assumes), every KV cache kept resident as a server holding them would."""
    import torch
    from transformers import DynamicCache

    ids = torch.randint(0, model.config.vocab_size, (concurrency, context), device=dev)
    caches = []
    with torch.inference_mode():
        for i in range(concurrency):
            cache = DynamicCache()
            model(input_ids=ids[i:i + 1], past_key_values=cache, use_cache=True, logits_to_keep=1)
            caches.append(cache)
    return caches


def measured(model_dir: Path, kind: str, context: int, concurrency: int) -> dict[str, Any]:
    import torch

    mod = getattr(torch, kind)
    dev = torch.device(kind, 0)
    mod.reset_peak_memory_stats(dev)
    model = load(model_dir, dev)
    after_load = mod.max_memory_allocated(dev)
    caches = prefill(model, dev, context, concurrency)
    mod.synchronize(dev)
    return {"after_load_bytes": after_load, "peak_bytes": mod.max_memory_allocated(dev), "sequences": len(caches)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="keep the report and model here")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip-validate", action="store_true", help="only the memory check")
    parser.add_argument("--plan-only", action="store_true",
                        help="write the model, print the planner's prediction and run the prefill on the CPU")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-truth-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.plan_only:
        model_dir = write_model(out / "model", args.layers, args.hidden, args.context)
        memory = predicted(model_dir, "h100", args.context, args.concurrency)
        # The same load and prefill on the CPU: the code path the device run takes, without its memory figures.
        memory["cpu_prefill_sequences"] = len(prefill(load(model_dir, "cpu"), "cpu", args.context, args.concurrency))
        print(json.dumps({"memory": memory}, indent=2))
        return 0
    kind, count, name = device()
    result: dict[str, Any] = {"device": {"kind": kind, "count": count, "name": name}}
    if kind is None:
        result["skipped"] = f"no accelerator: {name}; nothing here is a GPU figure"
        print(json.dumps(result, indent=2))
        return 0
    if not args.skip_validate:
        result["validate"] = validate(out, kind, count, name)
    from llmrack import catalog

    acc = catalog.accelerator_for_smi_name(name)
    model_dir = write_model(out / "model", args.layers, args.hidden, args.context)
    result["memory"] = predicted(model_dir, acc.name if acc else "h100", args.context, args.concurrency)
    result["memory"].update(measured(model_dir, kind, args.context, args.concurrency))
    mem = result["memory"]
    mem["measured_over_predicted"] = round(mem["peak_bytes"] / mem["predicted_bytes"], 3)
    print(json.dumps(result, indent=2))
    for row in result.get("validate", {}).get("rows", []):
        print(f"{row['id']:45} {row['status']:5} {row['measured']} {row['unit'] or ''} (want {row['threshold']})")
    print(f"memory: predicted {mem['predicted_bytes'] / GIB:.2f} GiB (weights {mem['weights_bytes'] / GIB:.2f} + "
          f"KV {mem['kv_cache_bytes'] / GIB:.2f} + activations {mem['activation_workspace_bytes'] / GIB:.2f}), "
          f"measured peak {mem['peak_bytes'] / GIB:.2f} GiB ({mem['measured_over_predicted']:.2f}x)")
    return 1 if mem["measured_over_predicted"] > 1.10 else 0


if __name__ == "__main__":
    sys.exit(main())
