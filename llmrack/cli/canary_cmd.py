"""`llmrack canary judge`: promote or roll back a canary from what Prometheus saw (thin over llmrack.observe)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
import yaml
from rich.table import Table

from llmrack.cli.output import emit_json, info, stdout
from llmrack.errors import UsageError
from llmrack.observe.canary import CANARY, STABLE, CanaryThresholds, Judgement, Verdict, judge_from_prometheus
from llmrack.observe.engines import EngineName
from llmrack.observe.prometheus import Prometheus
from llmrack.spec import load_spec, parse_spec

app = typer.Typer(help="Canary releases: judge a canary against the stable release.", no_args_is_help=True)

PROMETHEUS = typer.Option(..., "--prometheus", envvar="LLMRACK_PROMETHEUS",
                          help="URL of the Prometheus that scrapes the serving nodes")
ENGINE = typer.Option(EngineName.llmrack, "--engine", help="whose metric names to read: llmrack or vllm")
SELECTOR = typer.Option("", "--selector", help='extra PromQL label matchers, e.g. \'job="serving"\'')

NEXT_STEP = {
    Verdict.promote: "promote: ansible-playbook playbooks/serving.yml -e promote=true",
    Verdict.roll_back: "roll back: ansible-playbook playbooks/rollback.yml --limit serving_canary",
    Verdict.cannot_judge: "wait for more traffic (or a longer --window) and judge again",
}


def show(judgement: Judgement, window: str) -> None:
    table = Table(title=f"canary vs stable, last {window}")
    for col in ("check", "stable", "canary", "threshold", "result"):
        table.add_column(col)
    for row in judgement.rows:
        result = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "[yellow]no data[/yellow]"}[row.passed]
        table.add_row(row.check, row.stable, row.canary, row.limit, result)
    stdout.print(table)
    stdout.print(f"verdict: [bold]{judgement.verdict.name.replace('_', ' ')}[/bold] ({judgement.reason})",
                 highlight=False)


def _spec_thresholds(spec: Path | None) -> CanaryThresholds:
    """The spec's canary thresholds; `-` reads the spec from stdin (how serving.yml hands over its group var)."""
    if spec is None:
        return CanaryThresholds()
    if str(spec) == "-":
        try:
            data = yaml.safe_load(sys.stdin.read())
        except yaml.YAMLError as exc:
            raise UsageError(f"the spec on stdin is not YAML: {exc}") from None
        return parse_spec(data, "the deployment spec on stdin").canary
    return load_spec(spec).canary


@app.command("judge")
def judge(
    prometheus: str = PROMETHEUS,
    spec: Path | None = typer.Option(None, "--spec", help="deployment spec whose `canary` thresholds apply; - reads "
                                     "it from stdin (default: the built-in thresholds, docs/gateway.md)"),
    window: str | None = typer.Option(None, "--window", help="look back this long (default: the spec's window)"),
    engine: EngineName = ENGINE,
    selector: str = SELECTOR,
    stable: str = typer.Option(STABLE, "--stable", help="label matchers of the stable release's series"),
    canary: str = typer.Option(CANARY, "--canary", help="label matchers of the canary's series (e.g. on "
                               "Kubernetes: 'track=\"canary\"' where the pod label is kept as `track`)"),
    as_json: bool = typer.Option(False, "--json", help="print the judgement as JSON"),
) -> None:
    """Compare the canary (variant="canary") with stable (variant="stable"): error rate, TTFT and ITL p99,
    output lengths. Exit 0 promote, 1 roll back, 2 cannot judge (too little traffic, or no Prometheus)."""
    thresholds = _spec_thresholds(spec)
    if window:
        thresholds = CanaryThresholds.model_validate({**thresholds.model_dump(), "window": window})
    judgement = judge_from_prometheus(Prometheus(prometheus), engine, thresholds, selector, stable, canary)
    if as_json:
        emit_json({"verdict": judgement.verdict.name, "exit_code": int(judgement.verdict),
                   "reason": judgement.reason, "window": thresholds.window,
                   "rows": [row.__dict__ for row in judgement.rows]})
    else:
        show(judgement, thresholds.window)
        info(NEXT_STEP[judgement.verdict])
    raise typer.Exit(int(judgement.verdict))
