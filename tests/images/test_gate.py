"""The gate decision by digest (what the serving role and the Pulumi component ask) and the policy file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from llmrack.errors import UsageError
from llmrack.scan import ScanResult, ScanStatus, gate_decision, read_result, record_result
from llmrack.scan.clair_types import VulnerabilityReport
from llmrack.scan.policy import Policy, Verdict, evaluate, load_policy
from llmrack.spec import parse_spec
from tests.images.conftest import llmrack

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def _record(tmp_path: Path, status: ScanStatus, **kw: object) -> Path:
    return record_result(tmp_path, ScanResult(digest=DIGEST, status=status, scanned_at=NOW, **kw))  # type: ignore[arg-type]


def test_results_are_filed_by_digest_as_the_contract_says(tmp_path):
    path = _record(tmp_path, ScanStatus.passed, policy="images/scan-policy.yaml")
    assert path == tmp_path / "scan-results" / f"{'ab' * 32}.json"
    data = json.loads(path.read_text())
    assert {"digest", "status", "policy", "scanned_at", "blocking"} <= set(data)
    # Either the parent directory or scan-results/ itself may be given.
    assert gate_decision(DIGEST, tmp_path, False)[0] and gate_decision(DIGEST, tmp_path / "scan-results", False)[0]


@pytest.mark.parametrize(("status", "allow", "ok"), [
    (ScanStatus.passed, False, True),
    (ScanStatus.failed, False, False),
    (ScanStatus.failed, True, False),  # a failed gate is never overridden by allow_unscanned
    (ScanStatus.unscanned, False, False),
    (ScanStatus.unscanned, True, True),
    (None, False, False),  # no result at all = unscanned
    (None, True, True),
])
def test_gate_decision_table(tmp_path, status, allow, ok):
    if status is not None:
        _record(tmp_path, status, blocking=[{"id": "CVE-2024-6119", "package": "libssl3"}])
    got, reason = gate_decision(DIGEST, tmp_path, allow)
    assert got is ok
    if status is ScanStatus.failed:
        assert "CVE-2024-6119" in reason
    if ok and status is not ScanStatus.passed:
        assert reason.startswith("WARNING")


def test_gate_fails_closed_on_bad_input(tmp_path):
    assert gate_decision("latest", tmp_path, True)[0] is False
    path = _record(tmp_path, ScanStatus.passed)
    path.write_text("{not json")
    ok, reason = gate_decision(DIGEST, tmp_path, True)
    assert not ok and "unreadable" in reason
    other = "sha256:" + "cd" * 32
    path.write_text(ScanResult(digest=other, status=ScanStatus.passed, scanned_at=NOW).model_dump_json())
    ok, reason = gate_decision(DIGEST, tmp_path, True)
    assert not ok and reason == f"refused: the scan result filed under {DIGEST} is for {other}"


def test_unscanned_never_hides_an_earlier_verdict(tmp_path):
    _record(tmp_path, ScanStatus.failed)
    record_result(tmp_path, ScanResult(digest=DIGEST, status=ScanStatus.unscanned, scanned_at=NOW),
                  keep_existing_verdict=True)
    assert read_result(DIGEST, tmp_path).status is ScanStatus.failed  # type: ignore[union-attr]


def test_check_gate_cli_exit_codes(tmp_path):
    for refuse in ([], ["--no-allow-unscanned"]):
        r = llmrack("image", "check-gate", "--digest", DIGEST, "--results", str(tmp_path), *refuse)
        assert r.returncode == 1 and "refuses unscanned images" in r.stderr
    r = llmrack("image", "check-gate", "--digest", DIGEST, "--results", str(tmp_path), "--allow-unscanned", "--json")
    assert r.returncode == 0 and "WARNING" in r.stderr
    assert json.loads(r.stdout)["ok"] is True
    _record(tmp_path, ScanStatus.failed, blocking=[{"id": "CVE-2023-45853"}])
    r = llmrack("image", "check-gate", "--digest", DIGEST, "--results", str(tmp_path), "--allow-unscanned")
    assert r.returncode == 1 and "CVE-2023-45853" in r.stderr


@pytest.mark.parametrize(("env", "allowed"), [("lab", True), ("dev", True), ("staging", False), ("prod", False)])
def test_environment_decides_about_unscanned_images(tmp_path, env, allowed):
    spec = parse_spec({"name": "x", "environment": env,
                       "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "/models/r1-qwen-7b"},
                       "accelerator": "a100-80g", "serving": {"max_model_len": 4096, "max_num_seqs": 8}}, "x")
    assert gate_decision(DIGEST, tmp_path, spec.unscanned_images_allowed)[0] is allowed


def test_repository_policy_is_the_documented_one():
    policy = load_policy(ROOT / "images" / "scan-policy.yaml")
    assert [s.value for s in policy.fail_on] == ["critical", "high"]
    assert [s.value for s in policy.fail_on_unpatched] == ["critical"]
    assert policy.allowlist[0].id == "CVE-2024-0001" and policy.allowlist[0].expires == dt.date(2027, 1, 31)


@pytest.mark.parametrize(("text", "message"), [
    ("fail_on: [critcal]\n", "fail_on.0: Input should be 'unknown', 'negligible', 'low', 'medium', 'high' or"),
    ("allowlist:\n  - id: CVE-1\n    expires: 2027-01-01\n", "allowlist.0.reason: Field required"),
    ("allowlist:\n  - id: CVE-1\n    reason: because\n    expires: soon\n", "allowlist.0.expires:"),
    ("fail_on_unpached: [critical]\n", "fail_on_unpached: Extra inputs are not permitted"),
    ("fail_on: [high\n", "not valid YAML"),
])
def test_policy_errors_are_clear(tmp_path, text, message):
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    with pytest.raises(UsageError) as err:
        load_policy(p)
    assert message in str(err.value)
    r = llmrack("scan", "--clair", "http://127.0.0.1:9", "--policy", str(p), str(p))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_policy_matches_allowlist_on_source_package_and_dedupes():
    report = VulnerabilityReport.model_validate({
        "manifest_hash": DIGEST,
        "packages": {"1": {"id": 1, "name": "libssl3", "version": "3.0.11-1", "source": {"name": "openssl"}}},
        "vulnerabilities": {
            "7": {"id": 7, "name": "CVE-2024-6119", "normalized_severity": "High", "fixed_in_version": "3.0.14-1"},
            "8": {"id": 8, "name": "CVE-2024-6119", "normalized_severity": "High", "fixed_in_version": "3.0.14-1"},
        },
        "package_vulnerabilities": {"1": ["7", "8"]},
    })
    blocked = evaluate(report, Policy())
    assert not blocked.passed and len(blocked.findings) == 1  # numbers coerced to strings; one finding
    allowed = evaluate(report, Policy.model_validate({"allowlist": [
        {"id": "CVE-2024-6119", "package": "openssl", "reason": "no TLS", "expires": "2027-01-31"}]}),
        today=dt.date(2027, 1, 31))
    assert allowed.passed and allowed.findings[0].verdict is Verdict.allowed
