"""`llmrack validate --local` on this machine: all three reports, measured CPU figures, GPU probes skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.validation.conftest import by_id, junit_cases, llmrack, report


@pytest.mark.slow
def test_local_standard_writes_three_reports(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = llmrack("validate", "--local", "--level", "standard", "--report", str(out))
    rep = report(out)
    # 0 or 1 depends on this machine (containerd installed or not); it must agree with the report.
    assert proc.returncode == rep["summary"]["exit_code"], proc.stdout + proc.stderr
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    checks = by_id(rep)
    cases = junit_cases(out)
    assert len(cases) == len(checks)
    # junit carries the same verdicts as properties, for CI systems that only read junit.
    props = [{p.get("name"): p.get("value") for p in case.iter("property")} for case in cases]
    assert all(p.get("status") in ("pass", "fail", "skip", "error") for p in props)
    assert any(p.get("unit") == "GFLOPS" and float(p["measured"]) > 0 for p in props)
    [node] = rep["nodes"]
    assert rep["nodes"][node]["kind"] == "cpu" and rep["level"] == "standard"
    # The CPU is measured (a number against a threshold), the accelerator probes skip with the reason.
    for check in ("perf.cpu_gemm", "perf.cpu_membw"):
        rec = checks[f"{check}[{node}]"]
        assert rec["status"] in ("pass", "fail") and rec["measured"] > 0 and rec["threshold"].startswith(">=")
    for check in ("perf.matmul_bf16", "perf.membw", "perf.h2d", "perf.allreduce"):
        rec = checks[f"{check}[{node}]"]
        assert rec["status"] == "skip" and "CPU node" in rec["detail"] and rec["measured"] is None
    # Nothing passes without a measured value.
    assert all(c["measured"] is not None for c in rep["checks"] if c["status"] == "pass")
    assert not any(c["check"].startswith(("nvidia.", "ascend.")) for c in rep["checks"])


def test_local_quick_is_fast_and_has_no_probes(tmp_path: Path) -> None:
    proc = llmrack("validate", "--local", "--report", str(tmp_path))
    rep = report(tmp_path)
    assert proc.returncode == rep["summary"]["exit_code"]
    assert rep["level"] == "quick" and not any(c["check"].startswith("perf.") for c in rep["checks"])
    assert {c["check"] for c in rep["checks"]} >= {"os.services", "os.containerd_runtime", "serving.ready"}


def test_plain_pytest_with_testinfra_hosts(tmp_path: Path) -> None:
    """The testinfra way: pytest --hosts=... -p llmrack.validation.plugin --pyargs llmrack.validation.suite."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "llmrack.validation.plugin", "--hosts=local://",
         f"--llmrack-report={tmp_path}", "-q", "--pyargs", "llmrack.validation.suite"],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=300,
    )
    rep = report(tmp_path)
    assert proc.returncode == (1 if rep["summary"]["exit_code"] else 0), proc.stdout
    assert list(rep["nodes"]) == ["local"]
    assert "test_services[local]" in proc.stdout or "os.services[local]" in {c["id"] for c in rep["checks"]}


@pytest.mark.slow
def test_bad_options_exit_2(tmp_path: Path) -> None:
    proc = llmrack("validate", "--inventory", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = llmrack("validate", "--local", "--spec", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    (tmp_path / "a-file").write_text("")
    for args, message in [
        (("--local", "--report", str(tmp_path / "a-file" / "r")), "cannot write reports"),
        (("--local", "--serving-url", "http://127.0.0.1:9", "--api-key-file", str(tmp_path / "no-keys")),
         "cannot read the API key file"),
        (("collect", "--local", "--out", str(tmp_path / "a-file" / "node.tar.gz")), "cannot write the evidence"),
        (("--inventory", str(tmp_path), "--serving-url", "http://127.0.0.1:9"), "go with --local"),
        (("--local", "--api-key-file", str(tmp_path / "a-file")), "needs --serving-url"),
    ]:
        proc = llmrack("validate", *args)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, args


def test_the_callers_pytest_addopts_do_not_reach_the_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI job's PYTEST_ADDOPTS (its own --junitxml) must not take the suite's junit.xml away."""
    theirs = tmp_path / "theirs.xml"
    monkeypatch.setenv("PYTEST_ADDOPTS", f"--junitxml={theirs}")
    out = tmp_path / "report"
    proc = llmrack("validate", "--local", "--level", "quick", "--report", str(out))
    assert proc.returncode == report(out)["summary"]["exit_code"], proc.stdout + proc.stderr
    assert (out / "junit.xml").is_file() and not theirs.exists()
