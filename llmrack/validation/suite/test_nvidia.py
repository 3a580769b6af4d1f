"""NVIDIA GPUs: inventory, health, links, fabric. Device tests run once per EXPECTED GPU, so a missing GPU
shows up as failed tests rather than as fewer tests."""

from __future__ import annotations

from typing import Any

import pytest

from llmrack.validation import checks

pytestmark = pytest.mark.kinds("nvidia")


def test_gpu_count(node: Any, verdict: Any) -> None:
    verdict(checks.nvidia_gpu_count)


def test_driver_version(node: Any, verdict: Any) -> None:
    verdict(checks.nvidia_driver_version)


def test_xid(node: Any, verdict: Any) -> None:
    verdict(checks.nvidia_xid)


def test_fabricmanager(node: Any, verdict: Any) -> None:
    verdict(checks.nvidia_fabricmanager)


def test_sku(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_sku, device)


def test_memory(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_memory, device)


def test_persistence_mode(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_persistence_mode, device)


def test_ecc_mode(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_ecc_mode, device)


def test_ecc_uncorrectable(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_ecc_uncorrectable, device)


def test_row_remap(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_row_remap, device)


def test_throttle(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_throttle, device)


def test_pcie_link(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_pcie_link, device)


def test_nvlink(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_nvlink, device)


def test_gpu_xid(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.nvidia_gpu_xid, device)
