"""Entry point: builds the typer app from the per-job modules and maps errors to exit codes.

Exit codes: 0 success; 1 the command ran and found a problem (does not fit, a check failed,
the scan gate refused); 2 the command could not run as asked (bad input, unknown name).
"""

from __future__ import annotations

import sys

import typer

from llmrack import __version__
from llmrack.cli import (
    batch_cmd,
    bench_cmd,
    canary_cmd,
    catalog_cmd,
    drift_cmd,
    image_cmd,
    inventory_cmd,
    keys_cmd,
    lab_cmd,
    model_cmd,
    plan_cmd,
    scan_cmd,
    serve_cmd,
    spec_cmd,
    usage_cmd,
    validate_cmd,
)
from llmrack.cli.output import stderr
from llmrack.errors import LlmrackError

app = typer.Typer(
    name="llmrack",
    help="Plan, provision, serve and validate private LLM deployments on GPU/NPU racks and clouds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("plan")(plan_cmd.plan)
app.add_typer(spec_cmd.app, name="spec")
app.add_typer(catalog_cmd.app, name="catalog")
app.add_typer(inventory_cmd.app, name="inventory")
app.add_typer(image_cmd.app, name="image")
app.command("scan")(scan_cmd.scan)
app.add_typer(lab_cmd.app, name="lab")
app.add_typer(validate_cmd.app, name="validate")
app.command("serve")(serve_cmd.serve)
app.add_typer(model_cmd.app, name="model")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(canary_cmd.app, name="canary")
app.command("drift")(drift_cmd.drift)
app.add_typer(batch_cmd.app, name="batch")
app.add_typer(keys_cmd.app, name="keys")
app.command("usage")(usage_cmd.usage)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="print the version and exit")) -> None:
    if version:
        print(__version__)
        raise typer.Exit(0)


def run() -> None:
    """Console-script entry: a user mistake ends in one clear message and a non-zero exit, never a traceback.

    typer/click handle their own usage errors (unknown option, bad choice: exit 2); errors from the
    library arrive as LlmrackError and are printed here.
    """
    try:
        app()
    except LlmrackError as exc:
        stderr.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
