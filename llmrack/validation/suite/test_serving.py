"""Serving, from the control machine: /ready, the API key enforced, a real completion and its latency, and greedy
output identical to the release's recorded reference."""

from __future__ import annotations

from typing import Any

from llmrack.validation import checks
from llmrack.validation.checks.serving import serving_allreduce, serving_fabric


def test_ready(node: Any, verdict: Any) -> None:
    verdict(checks.serving_ready)


def test_api_key(node: Any, verdict: Any) -> None:
    verdict(checks.serving_api_key)


def test_completion(node: Any, verdict: Any) -> None:
    verdict(checks.serving_completion)


def test_golden_output(node: Any, verdict: Any) -> None:
    verdict(checks.serving_golden)


def test_allreduce(node: Any, verdict: Any) -> None:
    verdict(serving_allreduce)


def test_fabric(node: Any, verdict: Any) -> None:
    verdict(serving_fabric)
