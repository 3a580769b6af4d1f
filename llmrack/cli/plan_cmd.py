"""`llmrack plan`: size a deployment, or compare every accelerator in the catalog."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from llmrack import catalog
from llmrack.arch import load_config_file
from llmrack.cli.output import emit_json, info, stdout
from llmrack.cli.render import show_comparison, show_plan
from llmrack.dtypes import KVCacheDType, WeightsDType
from llmrack.errors import EXIT_FAILURE, UsageError
from llmrack.guide_claims import GUIDE, claims
from llmrack.plan import (
    DEFAULT_HEADROOM,
    DEFAULT_MAX_NODES,
    DEFAULT_MEMORY_UTILIZATION,
    DEFAULT_MFU,
    PlanRequest,
    compare,
)
from llmrack.plan import plan as make_plan


def _prices(values: list[str]) -> dict[str, float]:
    prices: dict[str, float] = {}
    for item in values:
        name, sep, usd = item.partition("=")
        if not sep:
            raise UsageError(f"--price {item!r}: expected NAME=USD, e.g. --price a100-80g=12000")
        catalog.accelerator(name)  # unknown names get the nearest entries
        try:
            prices[name] = float(usd)
        except ValueError:
            raise UsageError(f"--price {item!r}: {usd!r} is not a number") from None
    return prices


def show_guide_claims(as_json: bool) -> None:
    rows = claims()
    if as_json:
        emit_json([c.as_dict() for c in rows])
        return
    table = Table(title=f"{GUIDE}: its claims, computed", title_justify="left", show_lines=True)
    for col in ("the guide says", "llmrack's figure", "verdict", "why"):
        table.add_column(col)
    for c in rows:
        table.add_row(c.claim, c.figure, c.verdict, c.why)
    stdout.print(table)


def _tp(value: str) -> int | None:
    if value == "auto":
        return None
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise UsageError(f"--tp {value!r}: expected 'auto' or a positive integer")


def plan(
    model: str = typer.Option(None, "--model", "-m", help="catalog model name (see `llmrack catalog models`)"),
    config: Path = typer.Option(None, "--config", help="a Hugging Face config.json instead of a catalog model"),
    accelerator: str = typer.Option(None, "--accelerator", "-a", help="catalog accelerator; omit to compare all"),
    context: int = typer.Option(4096, "--context", help="tokens per sequence (prompt + completion)"),
    concurrency: int = typer.Option(1, "--concurrency", help="sequences decoded together per replica"),
    weights_dtype: WeightsDType = typer.Option(WeightsDType.bf16, "--weights-dtype", help="weight format"),
    kv_dtype: KVCacheDType = typer.Option(KVCacheDType.auto, "--kv-dtype", help="KV cache format"),
    replicas: int = typer.Option(1, "--replicas", help="independent copies of the model"),
    tp: str = typer.Option("auto", "--tp", help="tensor parallel degree, or 'auto' for the smallest that fits"),
    memory_utilization: float = typer.Option(DEFAULT_MEMORY_UTILIZATION, "--memory-utilization",
                                             help="fraction of device memory the server may use"),
    max_nodes: int = typer.Option(DEFAULT_MAX_NODES, "--max-nodes", help="most nodes per replica"),
    prompt_tokens: int = typer.Option(None, "--prompt-tokens", help="prompt length for the prefill bound"),
    mfu: float = typer.Option(DEFAULT_MFU, "--mfu", help="model FLOPs utilisation assumed for prefill"),
    price: list[str] = typer.Option([], "--price", help="override a list price: NAME=USD (repeatable)"),
    headroom: float = typer.Option(DEFAULT_HEADROOM, "--headroom",
                                   help="share of memory and of the throughput target kept unused (the "
                                        "DeepSeek private-deployment selection guide's 20 %)"),
    target: float = typer.Option(None, "--target-tokens-per-s", help="decode throughput to deliver, all replicas"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (an object, or a list when comparing)"),
    guide_claims: bool = typer.Option(False, "--guide-claims",
                                      help="check the DeepSeek private-deployment selection guide's claims "
                                           "against the catalog and this planner, and print the verdicts"),
) -> None:
    """Size a deployment: accelerators, tensor/pipeline parallelism, memory, speed bounds and cost.

    Exit 0 when it fits, 1 when it cannot fit, 2 on bad input.
    """
    if guide_claims:
        show_guide_claims(as_json)
        return
    if (model is None) == (config is None):
        raise UsageError("give exactly one of --model NAME or --config PATH/config.json")
    arch = load_config_file(config) if config else catalog.model(model).arch
    request = PlanRequest(
        model_name=model or config.parent.name or "model",
        arch=arch,
        context=context,
        concurrency=concurrency,
        weights_dtype=weights_dtype,
        kv_cache_dtype=kv_dtype,
        replicas=replicas,
        tensor_parallel=_tp(tp),
        memory_utilization=memory_utilization,
        max_nodes=max_nodes,
        prompt_tokens=prompt_tokens,
        mfu=mfu,
        prices_usd=_prices(price),
        headroom=headroom,
        target_tokens_per_s=target,
    )
    if accelerator is None:
        plans = compare(request)
        if as_json:
            emit_json([p.model_dump(mode="json") for p in plans])
        else:
            show_comparison(plans)
        if not any(p.fits for p in plans):
            info(f"{request.model_name} fits on no accelerator in the catalog within {max_nodes} node(s)")
            raise typer.Exit(EXIT_FAILURE)
        return
    result = make_plan(request, catalog.accelerator(accelerator))
    if as_json:
        emit_json(result.model_dump(mode="json"))
    else:
        show_plan(result)
    if not result.fits:
        info(f"does not fit: {result.reason}")
        raise typer.Exit(EXIT_FAILURE)
