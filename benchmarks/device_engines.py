"""Prepared device check (run only where a GPU is lent; never a CI dependency): both serving engines on one GPU,
TP 1, on a 0.5B-class Qwen2 this script writes (Qwen2-0.5B's shapes, 32 layers, random bf16 weights, vocab 512:
~0.48B parameters), at 1, 32 and 64 concurrent streaming clients; figures go to docs/serving.md.

    python benchmarks/device_engines.py --vllm /path/to/venv/bin/vllm [--out DIR] [--clients 1,32,64]

Needs on the GPU machine: this checkout, a Python with llmrack's serving dependencies and a CUDA torch, and vLLM
(the official `vllm` wheel, in its own virtualenv: it pins its own torch). Writes DIR/engines-cuda.json (default
$OUT, else ./out) and prints the table. Start-up of each engine is part of the report (`ready`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QWEN2_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 32, "num_attention_heads": 14,
             "num_key_value_heads": 2}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm", type=Path, default=shutil.which("vllm"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    parser.add_argument("--clients", default="1,32,64")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    # Imported here: a GPU machine without the dependencies gets a message, not a traceback.
    try:
        import torch  # noqa: PLC0415

        from llmrack import engines_bench as engines  # noqa: PLC0415
        from serving.model.tiny import make_tiny  # noqa: PLC0415
    except ImportError as exc:
        print(f"device_engines: {exc}: install llmrack's serving dependencies and a CUDA torch first", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("device_engines: torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.vllm is None or not Path(args.vllm).exists():
        print("device_engines: give --vllm PATH (the `vllm` executable of a virtualenv with the vllm wheel)",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "qwen2-0.5b-class"
    if not (model / "model.safetensors").exists():
        make_tiny("qwen2", model, dims=QWEN2_05B)
    clients = [int(c) for c in args.clients.split(",")]
    runs = engines.run(model, ["llmrack", "vllm"], clients, args.prompt_tokens, args.max_tokens, args.rounds,
                       Path(args.vllm), node="cuda")
    (args.out / "engines-cuda.json").write_text(engines.to_json(runs) + "\n")
    print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(engines.render_table(model, runs, args.prompt_tokens, args.max_tokens, args.rounds))
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "runs": len(runs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
