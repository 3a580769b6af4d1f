"""Rich renderings of plans: one plan as a summary, many as the comparison table."""

from __future__ import annotations

from rich.table import Table

from llmrack.catalog import GIB
from llmrack.cli.output import stdout, warn
from llmrack.contracts.serving_command import Engine, EngineChoice, choose_engine, node_kind_of_vendor
from llmrack.plan import Plan


def _gib(n: float) -> str:
    return f"{n / GIB:,.1f} GiB"


def _params(n: int) -> str:
    return f"{n / 1e9:,.2f}B"


def show_plan(p: Plan, engine: EngineChoice | None = None) -> None:
    """`engine`: the spec's choice; without a spec, what serving.engine: auto would pick for this plan."""
    mem = p.memory_per_device
    if engine is None:
        engine = choose_engine(Engine.auto, p.tensor_parallel, p.pipeline_parallel,
                               node_kind_of_vendor(p.accelerator.vendor))
    table = Table(title=f"{p.model.name} on {p.accelerator.name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("model", f"{p.model.model_type}, {_params(p.model.params)} params, {_params(p.model.active_params)} active"),
        ("weights", f"{p.weights_dtype.value}: {_gib(p.weights_bytes)}"),
        ("KV cache", f"{p.kv_cache_dtype.value}: {p.kv_cache_bytes_per_token / 1024:,.1f} KiB/token; "
                     f"{p.concurrency} x {p.context} tokens = {_gib(p.kv_cache_bytes)}"),
        ("fits", "[green]yes[/green]" if p.fits else "[red]no[/red]"),
        ("layout", f"TP {p.tensor_parallel} x PP {p.pipeline_parallel} = {p.count_per_replica} per replica, "
                   f"x {p.replicas} replicas = {p.count} x {p.accelerator.name} on {p.nodes} node(s)"),
        ("replica", f"{p.nodes_per_replica} node(s): {p.layout_reason}"),
        ("engine", f"{engine.engine.value} ({engine.reason})"),
        ("per device", f"{_gib(mem.usable_bytes)} usable = {_gib(mem.weights_bytes)} weights + "
                       f"{_gib(mem.runtime_overhead_bytes)} runtime + {_gib(mem.activation_workspace_bytes)} "
                       f"activations + {_gib(mem.kv_cache_budget_bytes)} KV + {_gib(mem.headroom_bytes)} headroom"),
        ("headroom", f"{p.headroom:.0%} of memory and of the throughput target: "
                     + ("kept unused" if p.within_headroom else "[yellow]eaten, see the warnings[/yellow]")
                     + f"; decode <= {p.decode_tokens_per_s_within_headroom:,.0f} tok/s within it"
                     + (f", target {p.target_tokens_per_s:,.0f} tok/s" if p.target_tokens_per_s else "")),
        ("sequences", f"{p.max_concurrent_sequences} at {p.context} tokens per replica (asked {p.concurrency})"),
        ("decode", f"<= {p.decode_tokens_per_s_upper_bound:,.0f} tok/s in total, "
                   f"<= {p.decode_tokens_per_s_per_sequence_upper_bound:,.1f} tok/s per sequence"),
        ("prefill", f">= {p.prefill_seconds_lower_bound:.3f} s for {p.prompt_tokens} tokens at MFU {p.mfu}"),
        ("cost", f"USD {p.cost.capital_usd:,.0f} capital, {p.cost.usd_per_hour:,.2f}/h, "
                 + (f"{p.cost.usd_per_million_tokens:,.3f} per 1M tokens" if p.cost.usd_per_million_tokens else "n/a")),
    ]
    if p.reason:
        rows.append(("why not", p.reason))
    for key, value in rows:
        table.add_row(key, value)
    stdout.print(table)
    for w in p.warnings:
        warn(w)


def show_comparison(plans: list[Plan]) -> None:
    first = plans[0]
    table = Table(
        title=(f"{first.model.name}: {first.weights_dtype.value} weights, {first.context} tokens context, "
               f"{first.concurrency} concurrent sequences per replica, {first.replicas} replica(s); "
               "cheapest delivered token first"),
        title_justify="left",
    )
    for col, justify in [("accelerator", "left"), ("fits", "left"), ("count", "right"), ("TP x PP", "right"),
                         ("nodes", "right"), ("max seqs", "right"), ("decode tok/s <=", "right"),
                         ("prefill s >=", "right"), ("capital USD", "right"), ("USD / 1M tok", "right"),
                         ("notes", "left")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for p in plans:
        notes = []
        if p.accelerator.uncertain:
            notes.append("estimated figures")
        if not p.fits:
            notes.append("does not fit")
        elif p.max_concurrent_sequences < p.concurrency:
            notes.append(f"holds {p.max_concurrent_sequences} seqs")
        if p.fits and not p.within_headroom:
            notes.append("eats headroom")
        if any("FP8 tensor cores" in w for w in p.warnings):
            notes.append("no FP8 units")
        if any("over PCIe" in w for w in p.warnings):
            notes.append("TP over PCIe")
        cost = p.cost.usd_per_million_tokens
        table.add_row(
            p.accelerator.name,
            "yes" if p.fits else "[red]no[/red]",
            str(p.count) if p.fits else "-",
            f"{p.tensor_parallel} x {p.pipeline_parallel}" if p.fits else "-",
            str(p.nodes) if p.fits else "-",
            str(p.max_concurrent_sequences) if p.fits else "-",
            f"{p.decode_tokens_per_s_upper_bound:,.0f}" if p.fits else "-",
            f"{p.prefill_seconds_lower_bound:.3f}" if p.fits else "-",
            f"{p.cost.capital_usd:,.0f}" if p.fits else "-",
            f"{cost:,.3f}" if cost else "-",
            ", ".join(notes),
        )
    stdout.print(table)
