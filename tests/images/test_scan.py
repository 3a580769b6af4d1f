"""`llmrack scan` against a server speaking Clair v4's API: the gate's verdicts, Clair's transient answers, errors."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from llmrack.scan import gate_decision, read_result
from llmrack.scan.clair import ClairClient, ScanIncompleteError
from llmrack.scan.clair_types import Manifest
from llmrack.scan.policy import FixState, fix_state
from tests.images.clair_server import FakeClair
from tests.images.conftest import llmrack
from tests.images.ociutil import debian_image

POLICY = Path(__file__).resolve().parents[2] / "images" / "scan-policy.yaml"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "clair"
OVAL_NOT_AFFECTED = FIXTURES / "vulnerability-report-stretch-oval-not-affected-0-0.json"
UNFIXED_EMPTY = FIXTURES / "vulnerability-report-bullseye-unfixed-empty.json"
CLEAN = [("libc6", "2.36-9+deb12u9", "glibc"), ("libssl3", "3.0.15-1~deb12u1", "openssl"),
         ("apt", "2.6.1", None), ("libgcc-s1", "12.2.0-14", "gcc-12")]
OLD_OPENSSL = [("libc6", "2.36-9+deb12u9", "glibc"), ("libssl3", "3.0.11-1~deb12u2", "openssl"),
               ("openssl", "3.0.11-1~deb12u2", None), ("apt", "2.6.1", None)]
WITH_ZLIB = [*CLEAN, ("zlib1g", "1:1.2.13.dfsg-1", "zlib")]


def _policy(tmp_path: Path, allow: list[dict[str, str]] | None = None) -> Path:
    p = tmp_path / "policy.yaml"
    lines = ["fail_on: [critical, high]", "fail_on_unpatched: [critical]"]
    if allow:
        lines.append("allowlist:")
        for a in allow:
            lines.append(f"  - id: {a['id']}")
            lines += [f"    {k}: {json.dumps(v)}" for k, v in a.items() if k != "id"]
    p.write_text("\n".join(lines) + "\n")
    return p


def _scan(clair: FakeClair, archive: Path, *extra: str, policy: Path = POLICY):
    return llmrack("scan", "--clair", clair.url, "--policy", str(policy), "--report", str(archive.parent / "report"),
                   "--deadline", "60", *extra, str(archive))


def test_clean_image_passes_and_clair_fetched_every_layer(clair, tmp_path):
    archive = tmp_path / "img.oci.tar"
    digest = debian_image(archive, CLEAN)
    r = _scan(clair, archive)
    assert r.returncode == 0, r.stderr
    assert "PASSED" in r.stderr
    # Clair really downloaded both layers from our endpoint and their digests matched.
    assert [(status, ok) for _uri, status, ok in clair.fetched] == [(200, "ok"), (200, "ok")]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["digest"] == digest and report["status"] == "passed"
    assert {f["id"] for f in report["findings"]} == {"CVE-2011-3374", "CVE-2022-27943"}  # negligible, low
    assert all(f["verdict"] == "accepted" for f in report["findings"])
    result = read_result(digest, tmp_path)
    assert result is not None and result.status.value == "passed" and result.blocking == []
    assert gate_decision(digest, tmp_path, allow_unscanned=False)[0] is True


def test_fixed_high_fails_and_lists_the_blocking_vulnerability(clair, tmp_path):
    archive = tmp_path / "img.oci.tar"
    digest = debian_image(archive, OLD_OPENSSL)
    r = _scan(clair, archive)
    assert r.returncode == 1, r.stderr
    # id, package, installed and fixed versions, severity -- for both binary packages built from openssl
    assert "CVE-2024-6119  libssl3 3.0.11-1~deb12u2 -> 3.0.14-1~deb12u2  [high]" in r.stderr
    assert "CVE-2024-6119  openssl 3.0.11-1~deb12u2 -> 3.0.14-1~deb12u2  [high]" in r.stderr
    assert "CVE-2024-5535" not in r.stderr  # low: reported, not blocking
    ok, reason = gate_decision(digest, tmp_path, allow_unscanned=True)
    assert not ok and "CVE-2024-6119" in reason  # a failed scan is refused even where unscanned is allowed

    junit = ET.parse(tmp_path / "report" / "junit.xml").getroot()
    suite = junit.find("testsuite")
    assert suite is not None and suite.get("failures") == "2"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["CVE-2024-6119 (high)", "CVE-2024-6119 (high)"]

    sarif = json.loads((tmp_path / "report" / "results.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    run = sarif["runs"][0]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert rules["CVE-2024-6119"]["properties"]["security-severity"] == "8.0"
    errors = [r for r in run["results"] if r["level"] == "error"]
    assert {r["properties"]["package"] for r in errors} == {"libssl3", "openssl"}
    for res in run["results"]:
        assert run["tool"]["driver"]["rules"][res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "img.oci.tar"


def test_unpatched_critical_fails(clair, tmp_path):
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, WITH_ZLIB)
    r = _scan(clair, archive)
    assert r.returncode == 1
    assert "CVE-2023-45853  zlib1g 1:1.2.13.dfsg-1 -> (no fix yet)  [critical]" in r.stderr


def test_allowlisted_critical_passes_with_the_reason_in_the_report(clair, tmp_path):
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, WITH_ZLIB)
    future = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    policy = _policy(tmp_path, [{"id": "CVE-2023-45853", "package": "zlib", "reason": "minizip is not shipped",
                                 "expires": future}])
    r = _scan(clair, archive, policy=policy)
    assert r.returncode == 0, r.stderr
    findings = json.loads((tmp_path / "report" / "report.json").read_text())["findings"]
    zlib = next(f for f in findings if f["id"] == "CVE-2023-45853")
    assert zlib["verdict"] == "allowed" and "minizip is not shipped" in zlib["note"]


def test_expired_allowlist_entry_no_longer_applies(clair, tmp_path):
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, WITH_ZLIB)
    past = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    policy = _policy(tmp_path, [{"id": "CVE-2023-45853", "reason": "minizip is not shipped", "expires": past}])
    r = _scan(clair, archive, policy=policy)
    assert r.returncode == 1
    assert f"allowlist entry expired on {past}" in (tmp_path / "report" / "report.json").read_text()
    assert "allowlist entry CVE-2023-45853" in r.stderr and "has expired" in r.stderr


def test_allowlist_for_another_package_does_not_apply(clair, tmp_path):
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, WITH_ZLIB)
    policy = _policy(tmp_path, [{"id": "CVE-2023-45853", "package": "openssl", "reason": "wrong package",
                                 "expires": "2999-01-01"}])
    assert _scan(clair, archive, policy=policy).returncode == 1


def test_matcher_not_ready_202_then_ready(clair, tmp_path):
    clair.behaviour.matcher_not_ready = 3
    clair.behaviour.index_in_progress = 0
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, CLEAN)
    r = _scan(clair, archive)
    assert r.returncode == 0, r.stderr
    statuses = [s for m, p, s in clair.requests if "vulnerability_report" in p]
    assert statuses == [202, 202, 202, 200]
    assert "matcher is not ready" in r.stderr


def test_busy_clair_429_is_retried(clair, tmp_path):
    clair.behaviour.busy_responses = 2
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, CLEAN)
    r = _scan(clair, archive)
    assert r.returncode == 0, r.stderr
    assert [s for _m, _p, s in clair.requests][:3] == [429, 429, 201]


def test_index_in_progress_is_polled_until_finished(clair, tmp_path):
    clair.behaviour.index_in_progress = 2
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, CLEAN)
    r = _scan(clair, archive)
    assert r.returncode == 0, r.stderr
    reads = [s for m, p, s in clair.requests if m == "GET" and "index_report" in p]
    assert reads == [200, 200, 200]  # ScanLayers, ScanLayers, IndexFinished
    assert "Clair is indexing (ScanLayers)" in r.stderr


def test_clair_rejecting_a_manifest_is_a_scan_error(clair):
    bogus = Manifest(hash="sha256:" + "0" * 64, layers=[])
    with ClairClient(clair.url, deadline_s=5) as client, pytest.raises(ScanIncompleteError) as err:
        client.index(bogus)
    assert "answered 400: bad-request: bogus manifest" in str(err.value)


def test_unreachable_clair_is_exit_2_within_the_deadline(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    archive = tmp_path / "img.oci.tar"
    digest = debian_image(archive, CLEAN)
    r = llmrack("scan", "--clair", f"http://127.0.0.1:{port}", "--policy", str(POLICY), "--deadline", "3",
                str(archive))
    assert r.returncode == 2
    assert "deadline of 3s passed" in r.stderr and "unreachable" in r.stderr
    assert read_result(digest, tmp_path).status.value == "unscanned"  # type: ignore[union-attr]
    assert gate_decision(digest, tmp_path, allow_unscanned=False)[0] is False
    assert gate_decision(digest, tmp_path, allow_unscanned=True)[0] is True


def test_malformed_report_is_exit_2(clair, tmp_path):
    clair.behaviour.malformed_report = True
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, WITH_ZLIB)
    r = _scan(clair, archive)
    assert r.returncode == 2
    assert "malformed vulnerability report" in r.stderr


@pytest.mark.parametrize("damage", ["corrupt-layer", "not-a-tar", "no-index"])
def test_bad_archive_is_exit_2(clair, tmp_path, damage):
    archive = tmp_path / "img.oci.tar"
    if damage == "corrupt-layer":
        debian_image(archive, CLEAN, corrupt_layer=0)
        expected = "does not match its digest"
    elif damage == "not-a-tar":
        archive.write_bytes(b"this is not an image\n" * 10)
        expected = "not a readable OCI archive"
    else:
        import tarfile

        with tarfile.open(archive, "w") as tar:
            tar.add(__file__, arcname="README")
        expected = "no index.json"
    r = _scan(clair, archive)
    assert r.returncode == 2
    assert expected in r.stderr
    assert clair.requests == []  # nothing reached Clair


def test_psk_jwt_required(clair, tmp_path):
    key = b"0123456789abcdef0123456789abcdef"
    clair.behaviour.psk = key
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, CLEAN)
    r = _scan(clair, archive)
    assert r.returncode == 2 and "answered 401" in r.stderr and "--psk-file" in r.stderr
    psk = tmp_path / "clair.psk"
    psk.write_text(base64.b64encode(key).decode() + "\n")
    r = _scan(clair, archive, "--psk-file", str(psk))
    assert r.returncode == 0, r.stderr
    r = _scan(clair, archive, "--psk-file", str(psk), "--issuer", "someone-else")
    assert r.returncode == 2


def test_layout_directory_target(clair, tmp_path):
    layout = tmp_path / "layout"
    layout.mkdir()
    digest = debian_image(layout, CLEAN, as_layout_dir=True)
    r = llmrack("scan", "--clair", clair.url, "--policy", str(POLICY), "--results", str(tmp_path), str(layout))
    assert r.returncode == 0, r.stderr
    assert read_result(digest, tmp_path) is not None


def test_advertised_address_is_what_clair_is_told(clair, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, CLEAN)
    r = _scan(clair, archive, "--listen", f"127.0.0.1:{port}", "--advertise", f"http://localhost:{port}/")
    assert r.returncode == 0, r.stderr
    assert all(uri.startswith(f"http://localhost:{port}/blobs/sha256/") for uri, _s, _ok in clair.fetched)


def test_no_clair_records_unscanned(tmp_path):
    archive = tmp_path / "img.oci.tar"
    digest = debian_image(archive, CLEAN)
    r = llmrack("scan", "--policy", str(POLICY), str(archive), env={"LLMRACK_CLAIR_URL": ""})
    assert r.returncode == 2 and "no Clair endpoint" in r.stderr
    assert read_result(digest, tmp_path).status.value == "unscanned"  # type: ignore[union-attr]


def test_layers_clair_cannot_fetch_end_in_index_error(clair, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, CLEAN)
    # A wrong --advertise: Clair is told an address where nothing serves the layers.
    r = _scan(clair, archive, "--advertise", f"http://127.0.0.1:{closed}")
    assert r.returncode == 2
    assert "Clair could not index the image: fetcher: request failed" in r.stderr
    assert [ok for _uri, _status, ok in clair.fetched] == ["unreachable"]


@pytest.mark.parametrize(("fixed", "state"), [
    ("0:0", FixState.not_affected), ("0", FixState.not_affected), (" 0:0 ", FixState.not_affected),
    ("", FixState.unfixed), ("  ", FixState.unfixed),
    ("1:0", FixState.fixed), ("0:1.2-3", FixState.fixed), ("3.0.14-1~deb12u2", FixState.fixed),
])
def test_fixed_in_version_sentinels(fixed, state):
    assert fix_state(fixed) is state


def test_clair_not_affected_sentinel_0_0_never_blocks(clair, tmp_path):
    """A recorded OVAL-era answer: a High with fixed_in_version "0:0" is Debian's "not affected", not a fix."""
    clair.behaviour.recorded_report = OVAL_NOT_AFFECTED
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, CLEAN)
    r = _scan(clair, archive)
    assert r.returncode == 1, r.stderr  # the one real fixed High still blocks
    assert "CVE-2021-3712  libssl1.1 1.1.0l-1~deb9u1 -> 1.1.0l-1~deb9u4  [high]" in r.stderr
    assert "CVE-2019-12904" not in r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    by_id = {f["id"]: f for f in report["findings"]}
    sentinel = by_id["CVE-2019-12904"]
    assert (sentinel["verdict"], sentinel["fix"], sentinel["fixed_in_version"]) == (
        "not_affected", "not_affected", "0:0")
    assert "not affected" in sentinel["note"]
    assert [f["id"] for f in report["findings"] if f["verdict"] == "blocking"] == ["CVE-2021-3712"]
    assert report["summary"]["not_affected"] == 4
    sarif = json.loads((tmp_path / "report" / "results.sarif").read_text())
    levels = {r["ruleId"]: r["level"] for r in sarif["runs"][0]["results"]}
    assert levels["CVE-2019-12904"] == "none" and levels["CVE-2021-3712"] == "error"


def test_clair_empty_fixed_version_is_judged_as_unpatched(clair, tmp_path):
    """A recorded current-claircore answer: empty fixed_in_version means no fix yet (fail_on_unpatched)."""
    clair.behaviour.recorded_report = UNFIXED_EMPTY
    archive = tmp_path / "img.oci.tar"
    debian_image(archive, CLEAN)
    r = _scan(clair, archive)
    assert r.returncode == 1, r.stderr
    assert "CVE-2022-0563  libmount1 2.36.1-8 -> (no fix yet)  [critical]" in r.stderr
    assert "CVE-2022-42898  libkrb5support0 1.18.3-6 -> 1.18.3-6+deb11u3  [high]" in r.stderr
    findings = {f["id"]: f for f in json.loads((tmp_path / "report" / "report.json").read_text())["findings"]}
    # an unfixed High is below fail_on_unpatched ([critical]): reported, not blocking
    assert (findings["CVE-2022-3715"]["verdict"], findings["CVE-2022-3715"]["fix"]) == ("accepted", "unfixed")
    assert {i for i, f in findings.items() if f["verdict"] == "blocking"} == {"CVE-2022-0563", "CVE-2022-42898"}
    # with a policy that accepts unfixed criticals, only the fixed High blocks
    relaxed = tmp_path / "relaxed.yaml"
    relaxed.write_text("fail_on: [critical, high]\nfail_on_unpatched: []\n")
    r = _scan(clair, archive, policy=relaxed)
    assert r.returncode == 1 and "CVE-2022-0563" not in r.stderr and "CVE-2022-42898" in r.stderr
