"""OS and runtime: what the common and containerd roles set up."""

from __future__ import annotations

from typing import Any

from llmrack.validation import checks


def test_sysctl(node: Any, verdict: Any) -> None:
    verdict(checks.os_sysctl)


def test_kernel_cmdline(node: Any, verdict: Any) -> None:
    verdict(checks.os_kernel_cmdline)


def test_nouveau_absent(node: Any, verdict: Any) -> None:
    verdict(checks.os_nouveau_absent)


def test_services(node: Any, verdict: Any) -> None:
    verdict(checks.os_services)


def test_containerd_runtime(node: Any, verdict: Any) -> None:
    verdict(checks.os_containerd_runtime)


def test_nccl_env(node: Any, verdict: Any) -> None:
    verdict(checks.os_nccl_env)
