"""Huawei Ascend NPUs: count, health, HBM, pinned driver/firmware/CANN, HCCN links."""

from __future__ import annotations

from typing import Any

import pytest

from llmrack.validation import checks

pytestmark = pytest.mark.kinds("ascend")


def test_npu_count(node: Any, verdict: Any) -> None:
    verdict(checks.ascend_npu_count)


def test_driver_version(node: Any, verdict: Any) -> None:
    verdict(checks.ascend_driver_version)


def test_cann_version(node: Any, verdict: Any) -> None:
    verdict(checks.ascend_cann_version)


def test_health(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.ascend_health, device)


def test_hbm(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.ascend_hbm, device)


def test_firmware_version(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.ascend_firmware_version, device)


def test_hccn_link(node: Any, device: int, verdict: Any) -> None:
    verdict(checks.ascend_hccn_link, device)
