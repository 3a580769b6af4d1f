"""`llmrack model`: tiny models for tests, and model versions (manifest, push, pull, verify) for racks."""

from __future__ import annotations

from pathlib import Path

import typer

from llmrack.cli.output import emit_json, info
from llmrack.contracts.model_manifest import VerifyLevel
from llmrack.models import agent, local, transfer
from serving.model.tiny import Arch
from serving.model.tiny import make_tiny as make

app = typer.Typer(help="Model directories: tiny ones for tests and the lab; versions pushed, pulled and verified.",
                  no_args_is_help=True)


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


@app.command("manifest")
def manifest(
    directory: Path = typer.Argument(..., help="model directory"),
    name: str | None = typer.Option(None, "--name", help="model name recorded in the manifest; default: DIR's name"),
) -> None:
    """Hash every file of DIR and write DIR/llmrack-model.json; prints the version (sha256 of the manifest)."""
    print(local.write_manifest(directory, name))


@app.command("push")
def push(
    directory: Path = typer.Argument(..., help="model directory (its manifest is written if missing)"),
    ref: str = typer.Argument(..., help="oci://HOST[:PORT]/REPO[:TAG], or oci+http:// for a plain-HTTP registry"),
    chunk_mb: int = typer.Option(64, "--chunk-mb", min=1, help="upload chunk size in MiB"),
) -> None:
    """Push DIR as an OCI artifact (oras): the manifest as config, one layer per file, tagged TAG and
    sha256-<hex>; files the registry already holds are not sent again. Prints the version."""
    result = transfer.push(directory, ref, chunk_size=chunk_mb << 20, log=info)
    for r in result.references:
        info(f"pushed {r}")
    info(f"{result.total_bytes / 1e6:.1f} MB in {result.seconds:.1f} s")
    print(result.version)


@app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="oci://..., oci+http://..., http(s):// mirror or a directory"),
    directory: Path = typer.Argument(..., help="where the model goes; written as DIR.partial, renamed when complete"),
    version: str | None = typer.Option(None, "--version", help="sha256:... the source must hold"),
    max_rate: float = typer.Option(0, "--max-rate", min=0, help="MB/s cap (0: none)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
) -> None:
    """Pull a model version into DIR: resumes an interrupted pull, verifies every file's sha256 before
    renaming DIR.partial to DIR. A file that does not match is removed and named in the error (exit 1)."""
    result = transfer.pull(ref, directory, version, max_rate=max_rate * 1e6 or None, log=info)
    if as_json:
        emit_json(result.as_dict())
        return
    if not result.changed:
        info(f"{directory} already holds {result.version}")
    else:
        rate = result.fetched_bytes / 1e6 / result.seconds if result.seconds else 0.0
        info(f"pulled {result.fetched_bytes / 1e6:.1f} MB in {result.seconds:.1f} s ({rate:.0f} MB/s)"
             + (f", {result.resumed_bytes / 1e6:.1f} MB resumed from an earlier pull" if result.resumed_bytes else ""))
    print(result.version)


@app.command("verify")
def verify(
    directory: Path = typer.Argument(..., help="model directory with llmrack-model.json"),
    level: VerifyLevel = typer.Option(VerifyLevel.standard, "--level", help="quick: sizes; standard: sha256 too"),
    version: str | None = typer.Option(None, "--version", help="sha256:... the directory must hold"),
) -> None:
    """Check every file against the manifest; exit 1 naming each file that does not match. Prints the version."""
    result = local.verify(directory, level, version)
    info(f"{result.files} files, {result.bytes / 1e6:.1f} MB match {result.version} ({level.value})")
    print(result.version)


@app.command("agent")
def agent_zip(out: Path = typer.Option(..., "--out", help="file to write")) -> None:
    """Write the node-side model agent (a zipapp of llmrack.models and oras) that the serving role runs."""
    print(agent.build_zipapp(out))
