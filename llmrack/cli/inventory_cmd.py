"""`llmrack inventory from-stack`: the Ansible inventory a Pulumi stack's fleet exported."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from llmrack.cli.output import info
from llmrack.errors import UsageError
from llmrack.stack_inventory import parse_stack_outputs, write_inventory

app = typer.Typer(help="Ansible inventories from other tools.", no_args_is_help=True)


@app.command("from-stack")
def from_stack(
    source: str = typer.Argument(..., help="file holding `pulumi stack output --json`, or - for stdin"),
    out: Path = typer.Option(..., "--out", help="inventory directory to write (hosts.yml, group_vars/all/)"),
    output_name: str = typer.Option("inventory", "--output-name", help="the stack output holding the inventory"),
) -> None:
    """Write OUT/hosts.yml and OUT/group_vars/all/deployment.yml from a stack's outputs."""
    if source == "-":
        text, where = sys.stdin.read(), "stdin"
    else:
        try:
            text, where = Path(source).read_text(), source
        except OSError as exc:
            raise UsageError(f"cannot read {source}: {exc.strerror}") from None
    for path in write_inventory(parse_stack_outputs(text, where), out, where, output_name):
        info(f"wrote {path}")
