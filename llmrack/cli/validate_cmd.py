"""`llmrack validate`: the post-provision suite over an inventory, this machine, or collected dumps.

Thin over llmrack.validation.runner; exit codes 0 all pass, 1 a check failed, 2 the suite could not run.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmrack.cli.output import info
from llmrack.validation.expect import NodeKind
from llmrack.validation.runner import Level, RunOptions, collect, pytest_args, run

app = typer.Typer(
    help="Validate provisioned nodes: health, configuration, performance and serving.",
    invoke_without_command=True,
)

_LEVEL = typer.Option(Level.quick, "--level", help="quick: health (seconds); standard: + perf probes; full: burn-in")
_KIND = typer.Option(None, "--kind", help="node kind for --local or dumps (default: the spec accelerator's vendor)")
_EXPECT = typer.Option([], "--expect", metavar="NAME=VALUE",
                       help="pin an expectation (nvidia_driver_version=550.90.07) or acceptance threshold "
                            "(matmul_peak_fraction=0.7) over the spec and inventory; repeatable")


@app.callback()
def validate(
    ctx: typer.Context,
    inventory: Path | None = typer.Option(None, "--inventory", "-i", help="Ansible inventory (file or directory)"),
    limit: str = typer.Option("all", "--limit", "-l", help="host or group pattern (fnmatch) within the inventory"),
    local: bool = typer.Option(False, "--local", help="check the machine this runs on"),
    level: Level = _LEVEL,
    report: Path | None = typer.Option(None, "--report", help="write report.json, report.html, junit.xml here"),
    spec: Path | None = typer.Option(None, "--spec", help="deployment spec (default: the inventory's)"),
    kind: NodeKind | None = _KIND,
    serving_url: str | None = typer.Option(None, "--serving-url", help="with --local: the local server's URL"),
    api_key_file: Path | None = typer.Option(None, "--api-key-file", help="with --serving-url: a file with an API key"),
    expect: list[str] = _EXPECT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="one line per check, and the pytest command"),
) -> None:
    """Run the checks. Subcommands: collect (write a node's raw evidence), analyze (check a dump)."""
    if ctx.invoked_subcommand is not None:
        return
    opts = RunOptions(inventory=inventory, limit=limit, local=local, level=level, report=report, spec=spec,
                      kind=kind.value if kind else None, serving_url=serving_url, api_key_file=api_key_file,
                      expect=expect, verbose=verbose, pytest_args=["-v"] if verbose else [])
    if verbose:
        info("pytest " + " ".join(pytest_args(opts)))
    raise typer.Exit(run(opts))


@app.command("collect")
def collect_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="directory, or ARCHIVE.tar.gz for one node"),
    local: bool = typer.Option(False, "--local", help="collect from this machine"),
    inventory: Path | None = typer.Option(None, "--inventory", "-i", help="Ansible inventory"),
    limit: str = typer.Option("all", "--limit", "-l", help="host or group pattern within the inventory"),
    level: Level = typer.Option(Level.quick, "--level", help="standard/full also run the performance probe"),
    python: str | None = typer.Option(None, "--python", help="the node's Python with torch, for the probe"),
) -> None:
    """Write raw evidence (nvidia-smi, npu-smi, dmesg, lspci, sysctl, ...) for `llmrack validate analyze`."""
    for path in collect(out, level, local, inventory, limit, python):
        print(path)


@app.command("analyze")
def analyze_cmd(
    dumps: list[Path] = typer.Argument(..., help="dump directories or .tar.gz archives from `validate collect`"),
    inventory: Path | None = typer.Option(None, "--inventory", "-i", help="take expectations from this inventory"),
    spec: Path | None = typer.Option(None, "--spec", help="deployment spec the node should match"),
    kind: NodeKind | None = _KIND,
    level: Level = _LEVEL,
    report: Path | None = typer.Option(None, "--report", help="write report.json, report.html, junit.xml here"),
    expect: list[str] = _EXPECT,
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate the same checks on collected evidence (air-gapped racks send dumps to support)."""
    for dump in dumps:
        if not dump.exists():
            info(f"error: {dump} does not exist")
            raise typer.Exit(2)
    opts = RunOptions(inventory=inventory, dumps=dumps, level=level, report=report, spec=spec,
                      kind=kind.value if kind else None, expect=expect, verbose=verbose,
                      pytest_args=["-v"] if verbose else [])
    raise typer.Exit(run(opts))
