"""Histogram arithmetic of the canary judge and the drift report, and their CLI's answers to user mistakes."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmrack.observe.histogram import Band, Histogram, band, psi
from llmrack.spec import SpecError, parse_spec

ROOT = Path(__file__).resolve().parents[2]
INF = math.inf


def llmrack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, cwd=ROOT,
                          check=False, timeout=60)


def test_quantile_interpolates_like_prometheus() -> None:
    # 10 observations: 4 in (0, 1], 4 in (1, 2], 2 above 2.
    h = Histogram((1.0, 2.0, INF), (4.0, 8.0, 10.0))
    assert h.quantile(0.5) == pytest.approx(1.25)  # rank 5: a quarter into (1, 2]
    assert h.quantile(0.2) == pytest.approx(0.5)
    assert h.quantile(0.99) == 2.0  # in +Inf: the highest finite bound, as histogram_quantile answers
    assert Histogram((INF,), (0.0,)).quantile(0.5) is None


def test_increase_extrapolation_is_kept_monotone() -> None:
    # rate()/increase() extrapolate each bucket series on its own, so a wider bucket can come out a hair lower.
    h = Histogram.from_buckets({1.0: 3.02, 2.0: 3.0, INF: 5.0})
    assert h.cumulative == (3.02, 3.02, 5.0)


def test_psi_bands_on_the_standard_figures() -> None:
    base = Histogram((10.0, 100.0, INF), (50.0, 90.0, 100.0))
    assert psi(base, base) == 0.0
    # A fifth of the mass moved from the first bucket to the second: (0.5, 0.4, 0.1) -> (0.3, 0.6, 0.1).
    small = psi(base, Histogram((10.0, 100.0, INF), (30.0, 90.0, 100.0)))
    assert small == pytest.approx(0.2 * math.log(0.5 / 0.3) + 0.2 * math.log(0.6 / 0.4))
    assert band(small) is Band.moderate and 0.18 < small < 0.19
    # All the mass in a bucket that was empty: far past the 0.25 band.
    moved = psi(Histogram((10.0, 100.0, INF), (100.0, 100.0, 100.0)),
                Histogram((10.0, 100.0, INF), (0.0, 100.0, 100.0)))
    assert band(moved) is Band.major and moved > 5
    with pytest.raises(ValueError, match="different buckets"):
        psi(base, Histogram((5.0, INF), (1.0, 2.0)))


def test_canary_thresholds_live_in_the_spec() -> None:
    spec = yaml.safe_load((ROOT / "examples" / next(p.name for p in (ROOT / "examples").glob("*.yaml"))).read_text())
    spec["canary"] = {"window": "30m", "max_ttft_p99_ratio": 1.1}
    parsed = parse_spec(spec, "test")
    assert parsed.canary.window == "30m" and parsed.canary.max_ttft_p99_ratio == 1.1
    assert parsed.canary.min_requests == 100  # the default
    spec["canary"] = {"window": "half an hour"}
    with pytest.raises(SpecError, match=r"canary\.window"):
        parse_spec(spec, "test")


def test_judge_and_drift_without_prometheus_exit_2_with_the_fix() -> None:
    for args in (["canary", "judge"], ["drift"]):
        r = llmrack(*args, "--prometheus", "http://127.0.0.1:9")
        assert r.returncode == 2, r.stderr
        assert "cannot reach Prometheus at http://127.0.0.1:9" in r.stderr and "--prometheus" in r.stderr
        assert "Traceback" not in r.stderr
    r = llmrack("drift", "--prometheus", "http://127.0.0.1:9", "--current", "an hour")
    assert r.returncode == 2 and "not a Prometheus duration" in r.stderr, r.stderr
