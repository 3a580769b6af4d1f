"""Serving benchmark script: same as `llmrack bench serve` (see docs/serving.md).

    .venv/bin/python benchmarks/serve.py --model DIR [--clients 32 --prompt-tokens 64 --max-tokens 64 --threads 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serving.bench.serve_bench import render, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.model, clients=args.clients, prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens,
                 rounds=args.rounds, baseline_rounds=args.baseline_rounds, threads=args.threads,
                 device=args.device, dtype=args.dtype)
    print(report.to_json() if args.json else render(report))


if __name__ == "__main__":
    main()
