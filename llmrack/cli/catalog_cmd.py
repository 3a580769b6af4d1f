"""`llmrack catalog`: list the accelerators and models the planner knows, with sources."""

from __future__ import annotations

import typer
from rich.table import Table

from llmrack import catalog
from llmrack.cli.output import emit_json, stdout

app = typer.Typer(help="List catalog accelerators and models.", no_args_is_help=True)


@app.command("accelerators")
def list_accelerators(as_json: bool = typer.Option(False, "--json")) -> None:
    """Accelerators with memory, peak compute, bandwidths, price and where each figure comes from."""
    accs = catalog.accelerators()
    if as_json:
        emit_json({name: a.model_dump(mode="json") for name, a in accs.items()})
        return
    table = Table(title="accelerators (dense TFLOPS; GB/s; '*' = estimate)", title_justify="left")
    for col in ("name", "product", "memory GiB", "BF16 TF", "FP8 TF", "HBM GB/s", "link", "per node",
                "k8s resource", "USD"):
        table.add_column(col)
    for a in accs.values():
        def mark(field: str, text: str, a: catalog.Accelerator = a) -> str:
            return text + ("*" if field in a.uncertain else "")
        table.add_row(a.name, a.product, f"{a.memory_bytes / catalog.GIB:.1f}",
                      mark("bf16_tflops", f"{a.bf16_tflops:g}"),
                      f"{a.fp8_tflops:g}" if a.fp8_tflops else "-", mark("hbm_gbps", f"{a.hbm_gbps:g}"),
                      mark("interconnect_gbps", f"{a.interconnect.value} {a.interconnect_gbps:g}"),
                      str(a.devices_per_node), a.k8s_resource, mark("price_usd", f"{a.price_usd:,.0f}"))
    stdout.print(table)


@app.command("models")
def list_models(as_json: bool = typer.Option(False, "--json")) -> None:
    """Models with their computed parameter counts and KV cache per token."""
    models = catalog.models()
    if as_json:
        emit_json({name: {**m.model_dump(mode="json"), "params": m.arch.params,
                          "active_params": m.arch.active_params} for name, m in models.items()})
        return
    table = Table(title="models (parameters computed from the architecture)", title_justify="left")
    for col in ("name", "type", "params", "active", "published", "layers", "heads/kv", "KV KiB/token (bf16)"):
        table.add_column(col)
    for m in models.values():
        a = m.arch
        table.add_row(m.name, a.model_type, f"{a.params / 1e9:.2f}B", f"{a.active_params / 1e9:.2f}B",
                      f"{m.published_params / 1e9:.2f}B", str(a.num_layers),
                      f"{a.num_attention_heads}/{a.num_kv_heads}", f"{a.kv_cache_elements_per_token() * 2 / 1024:.1f}")
    stdout.print(table)
