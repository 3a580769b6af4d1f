"""`llmrack spec check`: validate a deployment spec and show the plan it implies."""

from __future__ import annotations

from pathlib import Path

import typer

from llmrack import catalog
from llmrack.cli.output import emit_json, info
from llmrack.cli.render import show_plan
from llmrack.contracts.serving_command import ServingCommandError, engine_for
from llmrack.errors import EXIT_FAILURE
from llmrack.plan import plan as make_plan
from llmrack.spec import SpecError, load_spec

app = typer.Typer(help="Work with deployment specs.", no_args_is_help=True)


@app.command("check")
def check(
    file: Path = typer.Argument(..., help="deployment spec (YAML)"),
    as_json: bool = typer.Option(False, "--json", help="print the spec and its plan as JSON"),
) -> None:
    """Validate FILE and print the derived plan. Exit 0 valid and fits, 1 does not fit, 2 invalid."""
    spec = load_spec(file)
    result = make_plan(spec.plan_request(), catalog.accelerator(spec.accelerator))
    # Which engine serves it follows from the plan (serving.engine: auto) or is checked against it.
    try:
        engine = engine_for(spec, result) if result.fits else None
    except ServingCommandError as exc:
        raise SpecError(f"{file}: invalid deployment spec:\n  {exc}") from None
    if as_json:
        emit_json({"spec": spec.model_dump(mode="json"), "plan": result.model_dump(mode="json"),
                   "engine": {"engine": engine.engine.value, "reason": engine.reason} if engine else None,
                   "replica": {"nodes": result.nodes_per_replica, "layout": result.layout_reason}})
    else:
        info(f"{file}: valid deployment spec {spec.name!r} ({spec.environment.value})")
        show_plan(result, engine)
    if not result.fits:
        info(f"{file}: the deployment does not fit: {result.reason}")
        raise typer.Exit(EXIT_FAILURE)
