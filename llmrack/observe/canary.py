"""`llmrack canary judge`: canary against stable over one window, from Prometheus, with the spec's thresholds.

Compared, per variant (label `variant`, values stable and canary): the error rate, the p99 time to first token,
the p99 inter-token latency, and the distribution of output lengths (PSI of tokens generated per request).
Each comparison passes or fails against the spec's `canary` thresholds; any failure means roll back, all passing
means promote, and too little traffic on either side (spec `canary.min_requests`) means it cannot be judged yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmrack.contracts.metrics import VARIANT_LABEL
from llmrack.observe.engines import ENGINES, EngineName
from llmrack.observe.histogram import PSI_MAJOR, Histogram, psi
from llmrack.observe.prometheus import DURATION, Prometheus, check_duration


class CanaryThresholds(BaseModel):
    """The spec's `canary` section: how much worse than stable a canary may be and still be promoted."""

    model_config = ConfigDict(extra="forbid")

    window: str = Field("10m", description="Prometheus duration the judge looks back over")
    min_requests: int = Field(100, ge=1, description="requests each variant must have served in the window")
    max_error_rate_increase: float = Field(
        0.01, ge=0, le=1, description="canary error rate may exceed stable's by at most this (absolute)")
    max_ttft_p99_ratio: float = Field(1.25, ge=1, description="canary p99 time to first token / stable's, at most")
    max_itl_p99_ratio: float = Field(1.25, ge=1, description="canary p99 inter-token latency / stable's, at most")
    latency_floor_seconds: float = Field(
        0.05, ge=0, description="p99 latencies below this are equal for the ratios (timer noise, not regressions)")
    max_output_length_psi: float = Field(
        PSI_MAJOR, gt=0, description="PSI of the canary's output lengths against stable's, at most")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not DURATION.match(value):
            raise ValueError(f"{value!r} is not a Prometheus duration: use e.g. 10m, 1h")
        return value


class Verdict(IntEnum):
    """Also the exit code of `llmrack canary judge`."""

    promote = 0
    roll_back = 1
    cannot_judge = 2


@dataclass(frozen=True)
class VariantStats:
    requests: float
    errors: float
    ttft: Histogram
    itl: Histogram
    output_tokens: Histogram

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class Row:
    check: str
    stable: str
    canary: str
    limit: str
    passed: bool | None  # None: not judged (too little data for this check)


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    rows: list[Row]
    reason: str


STABLE = f'{VARIANT_LABEL}="stable"'
CANARY = f'{VARIANT_LABEL}="canary"'


def variant_stats(prom: Prometheus, engine: EngineName, variant: str, window: str, selector: str = "") -> VariantStats:
    """What one variant (PromQL label matchers, e.g. variant="canary") did in the window."""
    m = ENGINES[engine]
    sel = ",".join(s for s in (selector, variant) if s)
    finished = prom.total(f"increase({m.finished}{{{sel}}}[{window}])")
    if m.failed is not None:
        errors = prom.total(f'increase({m.failed}{{{sel},status=~"5.."}}[{window}])')
        requests = finished + errors
    else:
        errors = prom.total(f'increase({m.finished}{{{sel},finished_reason="abort"}}[{window}])')
        requests = finished
    return VariantStats(
        requests=requests, errors=errors,
        ttft=prom.histogram(m.ttft, sel, window), itl=prom.histogram(m.itl, sel, window),
        output_tokens=prom.histogram(m.generation_tokens, sel, window),
    )


def _latency_row(name: str, stable: Histogram, canary: Histogram, ratio: float, floor: float) -> Row:
    s, c = stable.quantile(0.99), canary.quantile(0.99)
    if s is None or c is None:
        return Row(name, _secs(s), _secs(c), f"<= {ratio:g} x stable", None)
    passed = c <= max(s, floor) * ratio
    return Row(name, _secs(s), _secs(c), f"<= {ratio:g} x max(stable, {floor:g} s)", passed)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def judge(stable: VariantStats, canary: VariantStats, t: CanaryThresholds) -> Judgement:
    rows = [Row("requests in window", f"{stable.requests:.0f}", f"{canary.requests:.0f}", f">= {t.min_requests}",
                stable.requests >= t.min_requests and canary.requests >= t.min_requests)]
    if not rows[0].passed:
        return Judgement(Verdict.cannot_judge, rows,
                         f"too little traffic: each variant needs {t.min_requests} requests in the window "
                         f"(stable {rows[0].stable}, canary {rows[0].canary})")
    rows.append(Row("error rate", f"{stable.error_rate:.2%}", f"{canary.error_rate:.2%}",
                    f"<= stable + {t.max_error_rate_increase:.2%}",
                    canary.error_rate <= stable.error_rate + t.max_error_rate_increase))
    rows.append(_latency_row("TTFT p99", stable.ttft, canary.ttft, t.max_ttft_p99_ratio, t.latency_floor_seconds))
    rows.append(_latency_row("ITL p99", stable.itl, canary.itl, t.max_itl_p99_ratio, t.latency_floor_seconds))
    if stable.output_tokens.count > 0 and canary.output_tokens.count > 0:
        value = psi(stable.output_tokens, canary.output_tokens)
        rows.append(Row("output length PSI", "baseline", f"{value:.3f}", f"< {t.max_output_length_psi:g}",
                        value < t.max_output_length_psi))
    else:
        rows.append(Row("output length PSI", "-", "-", f"< {t.max_output_length_psi:g}", None))
    failed = [r for r in rows if r.passed is False]
    if failed:
        # The figures go into the reason: it is the one line a refused promote prints.
        return Judgement(Verdict.roll_back, rows, "canary worse than stable: " + "; ".join(
            f"{r.check} {r.canary} against stable {r.stable} (limit {r.limit})" for r in failed))
    unjudged = [r.check for r in rows if r.passed is None]
    if unjudged:
        return Judgement(Verdict.cannot_judge, rows, "no data for " + ", ".join(unjudged))
    return Judgement(Verdict.promote, rows, "canary within every threshold")


def judge_from_prometheus(prom: Prometheus, engine: EngineName, t: CanaryThresholds, selector: str = "",
                          stable: str = STABLE, canary: str = CANARY) -> Judgement:
    check_duration(t.window, "canary window")
    return judge(variant_stats(prom, engine, stable, t.window, selector),
                 variant_stats(prom, engine, canary, t.window, selector), t)
