"""`llmrack model make-tiny`: write a small random-weight model in the Hugging Face layout (offline)."""

from __future__ import annotations

from pathlib import Path

import typer

from llmrack.cli.output import info
from serving.model.tiny import Arch
from serving.model.tiny import make_tiny as make

app = typer.Typer(help="Model directories for tests, benchmarks and the lab.", no_args_is_help=True)


@app.command("make-tiny")
def make_tiny(
    arch: Arch = typer.Option(..., "--arch", help="architecture: qwen2, llama or deepseek_v3 (MLA + MoE)"),
    out: Path = typer.Option(..., "--out", help="directory to write (created if missing)"),
    seed: int = typer.Option(0, "--seed", help="weights and tokenizer corpus seed"),
) -> None:
    """Write config.json, model.safetensors, tokenizer.json (byte-level BPE), tokenizer_config.json (chat
    template) and generation_config.json; prints the directory."""
    path = make(arch, out, seed=seed)
    info(f"wrote a tiny {arch.value} model to {path}")
    print(path)
