"""`llmrack drift`: has the traffic's shape shifted? (thin over llmrack.observe.drift)."""

from __future__ import annotations

import typer
from rich.table import Table

from llmrack.cli.canary_cmd import ENGINE, PROMETHEUS, SELECTOR
from llmrack.cli.output import emit_json, info, stdout
from llmrack.errors import EXIT_FAILURE, EXIT_USAGE
from llmrack.observe.drift import drift as compute
from llmrack.observe.engines import EngineName
from llmrack.observe.histogram import Band
from llmrack.observe.prometheus import Prometheus


def drift(
    prometheus: str = PROMETHEUS,
    current: str = typer.Option("1h", "--current", help="the current window: the last this long"),
    baseline: str = typer.Option("1d", "--baseline",
                                 help="the baseline window: this long, ending where current starts"),
    engine: EngineName = ENGINE,
    selector: str = SELECTOR,
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """PSI of prompt and output lengths per request, current window against baseline (0.1 moderate, 0.25 major).
    A shift in what users send, not in answer quality. Exit 0 below 0.25, 1 a major shift, 2 no data."""
    report = compute(Prometheus(prometheus), engine, current, baseline, selector)
    worst = report.worst
    if as_json:
        emit_json({"current": current, "baseline": baseline, "worst": worst.value if worst else None,
                   "rows": [{**row.__dict__, "band": row.band.value if row.band else None} for row in report.rows]})
    else:
        table = Table(title=f"traffic shape: last {current} vs the {baseline} before")
        for col in ("histogram", "baseline requests", "current requests", "baseline p50", "current p50", "PSI",
                    "shift"):
            table.add_column(col)
        for r in report.rows:
            table.add_row(r.histogram, f"{r.baseline_requests:.0f}", f"{r.current_requests:.0f}",
                          _num(r.baseline_p50), _num(r.current_p50), _num(r.psi, 3),
                          r.band.value if r.band else "no data")
        stdout.print(table)
        info("PSI bands: < 0.1 none, 0.1-0.25 moderate, >= 0.25 major. This is the shape of the traffic "
             "(prompt and answer lengths), not the quality of the answers.")
    if worst is None:
        raise typer.Exit(EXIT_USAGE)
    raise typer.Exit(EXIT_FAILURE if worst is Band.major else 0)


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
