from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from llmrack.contracts.scan_results import ScanResult, ScanStatus, results_path
from tests.infra.harness import stack_config


def pytest_configure(config: pytest.Config) -> None:
    # pulumi-huaweicloud imports pkg_resources, which warns on import; the provider's problem, not ours.
    config.addinivalue_line("filterwarnings", "ignore:pkg_resources is deprecated:UserWarning")
    # pulumi-aws warns on import about one of its own deprecated modules.
    config.addinivalue_line("filterwarnings", "ignore:aws.ec2/encryptioncontrol:DeprecationWarning")

STACKS = ("dev", "staging", "prod")


def record(results_dir: Path, ref: str, status: str) -> None:
    """A scan result where `llmrack scan` records it (the layout of llmrack.contracts.scan_results)."""
    digest = ref.split("@", 1)[1]
    blocking = [{"id": "CVE-2024-0001", "severity": "Critical"}] if status == "failed" else []
    result = ScanResult(digest=digest, status=ScanStatus(status), policy="default",
                        scanned_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), blocking=blocking)
    path = results_path(results_dir, digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.model_dump_json())


@pytest.fixture
def scan_results(tmp_path: Path) -> Path:
    """A results dir where every image of every stack file passed the gate."""
    for stack in STACKS:
        cfg = stack_config(stack)
        for ref in [cfg["llmrack:image"], (cfg.get("llmrack:canary") or {}).get("image")]:
            if ref:
                record(tmp_path, ref, "passed")
    return tmp_path
