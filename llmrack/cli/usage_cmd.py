"""`llmrack usage --since 24h`: requests and tokens per tenant, from Prometheus (for chargeback).

Reads the serving layer's per-tenant counters (llmrack.contracts.metrics TENANT_*); each figure is the
counter's increase over the window summed over every node and model, rounded to a whole number (Prometheus
extrapolates an increase to the window's edges). Exit 0 with a table (or --json), 2 when Prometheus cannot be
asked or the window is not a duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import typer
from rich.table import Table

from llmrack.cli.canary_cmd import PROMETHEUS, SELECTOR
from llmrack.cli.output import emit_json, info, stdout
from llmrack.contracts import metrics as names
from llmrack.observe.prometheus import Prometheus, check_duration


@dataclass
class TenantUsage:
    tenant: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def tenant_usage(prom: Prometheus, since: str, selector: str = "") -> list[TenantUsage]:
    check_duration(since, "--since")
    rows: dict[str, TenantUsage] = {}
    for field, counter in (("requests", names.TENANT_REQUESTS), ("prompt_tokens", names.TENANT_PROMPT_TOKENS),
                           ("completion_tokens", names.TENANT_GENERATION_TOKENS)):
        expr = (f"sum by ({names.TENANT_LABEL}) "
                f"(increase({names.counter_series(counter)}{{{selector}}}[{since}]))")
        for labels, value in prom.query(expr):
            tenant = labels.get(names.TENANT_LABEL, "")
            if math.isnan(value):  # no samples in the window
                continue
            usage = rows.setdefault(tenant, TenantUsage(tenant))
            setattr(usage, field, round(value))
    return sorted(rows.values(), key=lambda u: u.tenant)


def usage(
    prometheus: str = PROMETHEUS,
    since: str = typer.Option("24h", "--since", help="the window: the last this long (Prometheus duration)"),
    selector: str = SELECTOR,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Requests, prompt and completion tokens per tenant over the last --since, as the nodes counted them."""
    rows = tenant_usage(Prometheus(prometheus), since, selector)
    if as_json:
        emit_json([row.__dict__ for row in rows])
        return
    table = Table(title=f"usage per tenant, last {since}")
    for col in ("tenant", "requests", "prompt tokens", "completion tokens", "total tokens"):
        table.add_column(col, justify="left" if col == "tenant" else "right")
    for r in rows:
        table.add_row(r.tenant, str(r.requests), str(r.prompt_tokens), str(r.completion_tokens),
                      str(r.prompt_tokens + r.completion_tokens))
    stdout.print(table)
    if not rows:
        info(f"no tenant used the rack in the last {since} (or its nodes serve without a key store)")
