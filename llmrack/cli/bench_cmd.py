"""`llmrack bench serve`: throughput and latency of the serving engine against its two references."""

from __future__ import annotations

from pathlib import Path

import typer

from llmrack.cli.output import info
from serving.bench.serve_bench import render, run
from serving.model.loader import check_dir

app = typer.Typer(help="Benchmarks that print figures (never timed tests).", no_args_is_help=True)


@app.command("serve")
def serve(
    model: Path = typer.Option(..., "--model", help="model directory (e.g. from `llmrack model make-tiny`)"),
    clients: int = typer.Option(32, "--clients", help="concurrent streaming clients"),
    prompt_tokens: int = typer.Option(64, "--prompt-tokens", help="tokens per prompt"),
    max_tokens: int = typer.Option(64, "--max-tokens", help="tokens generated per request (ignore_eos)"),
    rounds: int = typer.Option(3, "--rounds", help="requests each client sends to the engine, back to back"),
    baseline_rounds: int = typer.Option(1, "--baseline-rounds", help="requests each client sends to the baseline"),
    threads: int = typer.Option(None, "--threads", help="torch CPU threads in all three phases"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or npu, for all three phases"),
    dtype: str = typer.Option(None, "--dtype", help="float32, bfloat16 or float16 (default: per device)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Start the server on MODEL, drive it with concurrent streaming clients, and measure in the same run the
    per-request generate() FastAPI baseline and the offline static-batch generate() ceiling."""
    check_dir(model)
    info(f"benchmarking {model}: engine, then baseline, then static-batch ceiling (a minute or two)")
    report = run(model, clients=clients, prompt_tokens=prompt_tokens, max_tokens=max_tokens, rounds=rounds,
                 baseline_rounds=baseline_rounds, threads=threads, device=device, dtype=dtype)
    print(report.to_json() if as_json else render(report))
