"""`llmrack drift`: has the shape of the traffic changed? PSI of prompt and output lengths, current window
against a baseline window, from Prometheus.

What it measures is the traffic: how long the prompts are, how long the answers run. A major shift says the
users (or a client program) changed what they send, which moves latency, KV-cache use and capacity; it says
nothing about whether the answers are right. Answer quality needs evaluations, not these histograms.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmrack.errors import LlmrackError
from llmrack.observe.engines import ENGINES, EngineName
from llmrack.observe.histogram import Band, Histogram, band, psi
from llmrack.observe.prometheus import Prometheus, check_duration


@dataclass(frozen=True)
class DriftRow:
    histogram: str
    baseline_requests: float
    current_requests: float
    baseline_p50: float | None
    current_p50: float | None
    psi: float | None  # None: a window without observations
    band: Band | None


@dataclass(frozen=True)
class DriftReport:
    current: str
    baseline: str
    rows: list[DriftRow]

    @property
    def worst(self) -> Band | None:
        bands = [r.band for r in self.rows if r.band is not None]
        order = [Band.none, Band.moderate, Band.major]
        return max(bands, key=order.index) if bands else None


def compare(name: str, baseline: Histogram, current: Histogram) -> DriftRow:
    value = psi(baseline, current) if baseline.count > 0 and current.count > 0 else None
    return DriftRow(name, baseline.count, current.count, baseline.quantile(0.5), current.quantile(0.5), value,
                    band(value) if value is not None else None)


def drift(prom: Prometheus, engine: EngineName, current: str = "1h", baseline: str = "1d",
          selector: str = "") -> DriftReport:
    """Current window: the last `current`. Baseline: the `baseline` before it (ending where current starts)."""
    check_duration(current, "--current")
    check_duration(baseline, "--baseline")
    m = ENGINES[engine]
    rows = []
    for label, name in (("prompt tokens per request", m.prompt_tokens),
                        ("generated tokens per request", m.generation_tokens)):
        now = prom.histogram(name, selector, current)
        before = prom.histogram(name, selector, baseline, offset=current)
        if now.count > 0 and before.count > 0 and now.bounds != before.bounds:
            raise LlmrackError(f"{name}: the buckets changed between the windows; compare windows of one release")
        rows.append(compare(label, before, now))
    return DriftReport(current, baseline, rows)
