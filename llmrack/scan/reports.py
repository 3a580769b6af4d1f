"""Scan reports: report.json (everything), junit.xml (CI test views) and SARIF 2.1.0 (code-scanning tools)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from llmrack import __version__
from llmrack.scan.clair_types import Severity
from llmrack.scan.policy import Evaluation, Finding, FixState, Policy, Verdict

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# GitHub code scanning reads `security-severity` (a CVSS-like 0-10 number) to rank results.
_SECURITY_SEVERITY = {
    Severity.critical: "9.5", Severity.high: "8.0", Severity.medium: "5.5",
    Severity.low: "3.0", Severity.negligible: "1.0", Severity.unknown: "0.0",
}


def report_document(evaluation: Evaluation, *, digest: str, target: str, clair: str, policy: Policy,
                    policy_path: str, scanned_at: str) -> dict[str, Any]:
    return {
        "digest": digest,
        "target": target,
        "clair": clair,
        "scanned_at": scanned_at,
        "status": "passed" if evaluation.passed else "failed",
        "policy": {"path": policy_path, **policy.model_dump(mode="json")},
        "summary": {
            "vulnerabilities": len(evaluation.findings),
            "blocking": len(evaluation.blocking),
            "allowed": sum(f.verdict is Verdict.allowed for f in evaluation.findings),
            "not_affected": sum(f.verdict is Verdict.not_affected for f in evaluation.findings),
            "by_severity": {s.value: sum(f.severity is s for f in evaluation.findings) for s in Severity},
        },
        "expired_allowlist": evaluation.expired_allowlist,
        "findings": [f.model_dump(mode="json") for f in evaluation.findings],
    }


def blocking_summary(evaluation: Evaluation) -> list[dict[str, str]]:
    return [
        {"id": f.id, "package": f.package, "installed": f.installed_version, "fixed": f.fixed_in_version,
         "severity": f.severity.value}
        for f in evaluation.blocking
    ]


def write_reports(report_dir: Path, document: dict[str, Any], evaluation: Evaluation) -> list[Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = [report_dir / "report.json", report_dir / "junit.xml", report_dir / "results.sarif"]
    paths[0].write_text(json.dumps(document, indent=2) + "\n")
    ET.ElementTree(junit(document, evaluation)).write(paths[1], encoding="utf-8", xml_declaration=True)
    paths[2].write_text(json.dumps(sarif(document, evaluation), indent=2) + "\n")
    return paths


def _title(f: Finding) -> str:
    return f"{f.id} in {f.package} {f.installed_version}"


def fixed_text(f: Finding) -> str:
    """The fixed version as a reader should see it: a version, "no fix yet", or Clair's not-affected sentinel."""
    if f.fix is FixState.unfixed:
        return "no fix yet"
    if f.fix is FixState.not_affected:
        return f"not affected ({f.fixed_in_version})"
    return f.fixed_in_version


def junit(document: dict[str, Any], evaluation: Evaluation) -> ET.Element:
    """One test case per finding; blocking ones fail. An image with no findings still has one passing case."""
    suites = ET.Element("testsuites", name="llmrack scan")
    suite = ET.SubElement(suites, "testsuite", name=f"vulnerability gate {document['digest']}",
                          tests=str(max(1, len(evaluation.findings))), failures=str(len(evaluation.blocking)),
                          errors="0", skipped="0", timestamp=document["scanned_at"])
    props = ET.SubElement(suite, "properties")
    for key in ("digest", "target", "clair"):
        ET.SubElement(props, "property", name=key, value=str(document[key]))
    if not evaluation.findings:
        ET.SubElement(suite, "testcase", classname="policy", name="no known vulnerabilities")
    for f in evaluation.findings:
        case = ET.SubElement(suite, "testcase", classname=f.package, name=f"{f.id} ({f.severity.value})")
        text = (f"{_title(f)}; fixed in: {fixed_text(f)}; severity {f.severity.value}"
                f"{'; ' + f.note if f.note else ''}")
        if f.verdict is Verdict.blocking:
            failure = ET.SubElement(case, "failure", message=f"blocking: {_title(f)}", type=f.severity.value)
            failure.text = text + ("\n" + f.description if f.description else "")
        else:
            ET.SubElement(case, "system-out").text = f"{f.verdict.value}: {text}"
    return suites


def sarif(document: dict[str, Any], evaluation: Evaluation) -> dict[str, Any]:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in evaluation.findings:
        if f.id not in rules:
            rules[f.id] = {
                "id": f.id,
                "name": f.id.replace("-", ""),
                "shortDescription": {"text": f"{f.id} ({f.severity.value})"},
                "fullDescription": {"text": f.description or f.id},
                "helpUri": f.links[0] if f.links else f"https://security-tracker.debian.org/tracker/{f.id}",
                "help": {"text": {FixState.fixed: f"Fixed in {f.fixed_in_version}",
                                  FixState.unfixed: "No fix available yet",
                                  FixState.not_affected: "This release is not affected"}[f.fix]},
                "properties": {"security-severity": _SECURITY_SEVERITY[f.severity], "tags": ["security", "container"]},
            }
        level = {Verdict.blocking: "error", Verdict.allowed: "note", Verdict.accepted: "warning",
                 Verdict.not_affected: "none"}[f.verdict]
        results.append({
            "ruleId": f.id,
            "ruleIndex": list(rules).index(f.id),
            "level": level,
            "message": {"text": f"{_title(f)}: {f.verdict.value}"
                                f" (fixed in {fixed_text(f)}){'; ' + f.note if f.note else ''}"},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": {"uri": Path(document["target"]).name},
                    "region": {"startLine": 1},
                },
                "logicalLocations": [{"name": f.package, "kind": "package"}],
            }],
            "partialFingerprints": {"llmrack/v1": f"{f.id}:{f.package}:{f.installed_version}"},
            "properties": {"package": f.package, "installed_version": f.installed_version,
                           "fixed_in_version": f.fixed_in_version, "fix": f.fix.value,
                           "severity": f.severity.value},
        })
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "llmrack-scan",
                "fullName": "llmrack vulnerability gate (Clair v4)",
                "version": __version__,
                "informationUri": "https://github.com/quay/clair",
                "rules": list(rules.values()),
            }},
            "automationDetails": {"id": f"llmrack-scan/{document['digest']}"},
            "properties": {"digest": document["digest"], "status": document["status"]},
            "results": results,
        }],
    }
