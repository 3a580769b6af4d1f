from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.infra.harness import stack_config


def pytest_configure(config: pytest.Config) -> None:
    # pulumi-huaweicloud imports pkg_resources, which warns on import; the provider's problem, not ours.
    config.addinivalue_line("filterwarnings", "ignore:pkg_resources is deprecated:UserWarning")
    # pulumi-aws warns on import about one of its own deprecated modules.
    config.addinivalue_line("filterwarnings", "ignore:aws.ec2/encryptioncontrol:DeprecationWarning")

STACKS = ("dev", "staging", "prod")


def record(results_dir: Path, ref: str, status: str) -> None:
    from llmrack.scan import ScanResult, ScanStatus, record_result

    blocking = [{"id": "CVE-2024-0001", "severity": "Critical"}] if status == "failed" else []
    record_result(results_dir, ScanResult(digest=ref.split("@", 1)[1], status=ScanStatus(status), policy="default",
                                          scanned_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), blocking=blocking))


@pytest.fixture
def scan_results(tmp_path: Path) -> Path:
    """A results dir where every image of every stack file passed the gate."""
    for stack in STACKS:
        cfg = stack_config(stack)
        for ref in [cfg["llmrack:image"], (cfg.get("llmrack:canary") or {}).get("image")]:
            if ref:
                record(tmp_path, ref, "passed")
    return tmp_path
