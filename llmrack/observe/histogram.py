"""Prometheus histograms as llmrack compares them: bucket counts over a window, quantiles, and the population
stability index (PSI) between two windows.

PSI = sum over buckets of (a - e) * ln(a / e), with e and a the shares of the expected (baseline) and actual
(current) populations in each bucket. The usual reading (credit-risk practice, where it comes from):
below 0.1 no real shift, 0.1 to 0.25 a moderate shift, 0.25 and above a major shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
# A bucket empty in one window would make ln(a/e) infinite; such a share counts as this small instead.
PSI_EMPTY_SHARE = 1e-4


class Band(StrEnum):
    none = "none"
    moderate = "moderate"
    major = "major"


def band(psi: float) -> Band:
    if psi >= PSI_MAJOR:
        return Band.major
    return Band.moderate if psi >= PSI_MODERATE else Band.none


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (`le`), +Inf last, as Prometheus keeps them."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.cumulative) or not self.bounds or self.bounds[-1] != math.inf:
            raise ValueError("a histogram needs one cumulative count per bound, ending with +Inf")

    @classmethod
    def from_buckets(cls, buckets: dict[float, float]) -> Histogram:
        bounds = tuple(sorted(buckets))
        # Counts from rate()/increase() over a window are extrapolated per series: keep them monotone.
        cumulative, high = [], 0.0
        for b in bounds:
            high = max(high, buckets[b])
            cumulative.append(high)
        return cls(bounds, tuple(cumulative))

    @property
    def count(self) -> float:
        return self.cumulative[-1]

    def counts(self) -> tuple[float, ...]:
        """Observations per bucket (not cumulative)."""
        return tuple(c - p for c, p in zip(self.cumulative, (0.0, *self.cumulative[:-1]), strict=True))

    def shares(self) -> tuple[float, ...]:
        total = self.count
        return tuple(c / total for c in self.counts()) if total > 0 else tuple(0.0 for _ in self.bounds)

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear inside the bucket; the highest finite bound if it falls in +Inf."""
        total = self.count
        if total <= 0:
            return None
        rank = q * total
        lower, below = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if cum >= rank:
                if bound == math.inf:
                    return lower
                inside = cum - below
                return bound if inside <= 0 else lower + (bound - lower) * (rank - below) / inside
            lower, below = bound, cum
        return lower


def psi(expected: Histogram, actual: Histogram) -> float:
    """Population stability index of `actual` against `expected`; both need the same buckets."""
    if expected.bounds != actual.bounds:
        raise ValueError(f"different buckets: {expected.bounds} vs {actual.bounds}")
    if expected.count <= 0 or actual.count <= 0:
        raise ValueError("a window without observations has no distribution to compare")
    total = 0.0
    for exp, act in zip(expected.shares(), actual.shares(), strict=True):
        if exp == 0 and act == 0:
            continue
        e, a = max(exp, PSI_EMPTY_SHARE), max(act, PSI_EMPTY_SHARE)
        total += (a - e) * math.log(a / e)
    return total
