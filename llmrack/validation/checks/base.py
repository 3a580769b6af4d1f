"""What every check shares: the Outcome it returns, the helpers that build one, and how evidence is read.

A check is a function `(evidence, expectations, *args) -> Outcome`; `run` calls it and turns the two ways a
check gives up (Missing evidence, a ParseError) into the Outcome they stand for. A check that could not measure
what it judges returns skip (with the reason) or error, never pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from llmrack.catalog import Accelerator
from llmrack.validation.evidence import Evidence, Item
from llmrack.validation.expect import Expectations
from llmrack.validation.parsers import ParseError

Status = Literal["pass", "fail", "skip", "error"]

MEMORY_FRACTION = 0.99  # device memory as reported vs the catalog's figure (SMI tools round a little)


@dataclass
class Outcome:
    status: Status
    measured: Any = None
    threshold: str | None = None
    unit: str | None = None
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def passed(measured: Any, threshold: str | None, unit: str | None = None, detail: str = "", **data: Any) -> Outcome:
    return Outcome("pass", measured, threshold, unit, detail, data)


def failed(measured: Any, threshold: str | None, unit: str | None = None, detail: str = "", **data: Any) -> Outcome:
    return Outcome("fail", measured, threshold, unit, detail, data)


def judge(ok: bool, measured: Any, threshold: str | None, unit: str | None, detail: str = "", **data: Any) -> Outcome:
    return Outcome("pass" if ok else "fail", measured, threshold, unit, detail, data)


def skip(reason: str) -> Outcome:
    return Outcome("skip", detail=reason)


def error(reason: str) -> Outcome:
    return Outcome("error", detail=reason)


class Missing(Exception):
    """Raised inside a check when evidence it needs is absent; turned into the Outcome it carries."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


def item(ev: Evidence, name: str, tool: str, required: bool = True) -> Item:
    """The evidence item, or Missing: not in the dump -> skip; tool absent/failing on the node -> fail/error."""
    got = ev.get(name)
    if got is None:
        raise Missing(skip(f"the evidence has no {name!r} (dump collected with an older or partial collector)"))
    if got.missing_tool:
        if required:
            raise Missing(failed("not installed", "installed", None, f"{tool} is not installed on the node"))
        raise Missing(skip(f"{tool} is not installed on the node"))
    if got.rc != 0 and not got.out.strip():
        raise Missing(error(f"`{tool}` exited {got.rc}: {got.err.strip()[:300]}"))
    # A non-zero exit WITH output (nvidia-smi when one GPU is lost) still describes the devices that answered.
    return got


CheckFn = Callable[..., Outcome]


def run(fn: CheckFn, ev: Evidence, exp: Expectations, *args: Any) -> Outcome:
    try:
        return fn(ev, exp, *args)
    except Missing as exc:
        return exc.outcome
    except ParseError as exc:
        return error(f"could not parse the node's output: {exc}")


def accelerator(exp: Expectations) -> Accelerator:
    assert exp.accelerator is not None, "accelerator checks run only on nodes with an accelerator"
    return exp.accelerator


def memory_vs_catalog(measured: int | None, acc: Accelerator, unit: str, absent: str) -> Outcome:
    """Device memory as the SMI tool reports it against the catalog's figure for the part."""
    if measured is None:
        return error(absent)
    floor = round(acc.memory_mib * MEMORY_FRACTION)
    return judge(measured >= floor, measured, f">= {floor}", unit)


def pinned(exp: Expectations, var: str, actual: str | None, what: str) -> Outcome:
    """A version the deployment pins (`var`) against what the node reports."""
    pin = exp.var(var)
    if actual is None:
        return error(f"the node does not report its {what}")
    if not pin:
        return skip(f"{exp.unset(var)} (node runs {actual})")
    return judge(str(pin) == actual, actual, f"== {pin}", None, f"pinned by {exp.source(var)}")
