"""Performance probes (standard level and up), measured on the node by its own torch. On a CPU node the
accelerator probes skip with the reason and the CPU ones measure the CPU."""

from __future__ import annotations

from typing import Any

import pytest

from llmrack.validation import checks

pytestmark = pytest.mark.level("standard")


def test_matmul_bf16(node: Any, device: int | None, verdict: Any) -> None:
    verdict(checks.perf_matmul_bf16, device)


def test_membw(node: Any, device: int | None, verdict: Any) -> None:
    verdict(checks.perf_membw, device)


def test_h2d(node: Any, device: int | None, verdict: Any) -> None:
    verdict(checks.perf_h2d, device)


def test_allreduce(node: Any, verdict: Any) -> None:
    verdict(checks.perf_allreduce)


def test_cpu_gemm(node: Any, verdict: Any) -> None:
    verdict(checks.perf_cpu_gemm)


def test_cpu_membw(node: Any, verdict: Any) -> None:
    verdict(checks.perf_cpu_membw)


def test_pcie_latency(node: Any, device: int | None, verdict: Any) -> None:
    verdict(checks.perf_pcie_latency, device)


def test_p2p_latency(node: Any, verdict: Any) -> None:
    verdict(checks.perf_p2p_latency)
