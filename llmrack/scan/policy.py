"""The scan policy (images/scan-policy.yaml) and its verdict on one Clair vulnerability report.

A vulnerability blocks when its normalized severity is in `fail_on` and a fixed version exists (the
image should be rebuilt), or when it is in `fail_on_unpatched` and no fix exists yet (the risk is judged
too high to ship even without a remedy). An allowlist entry with a reason and an expiry date lets a
named vulnerability pass (optionally for one package only) until that date.

Clair's `fixed_in_version` carries two sentinels besides real versions; each is judged as what it means:
- `"0:0"` (and the bare `"0"` it comes from): Debian's security tracker writes `"fixed_version": "0"` for a
  package that was never vulnerable in that release ("not affected"); Clair's OVAL-era Debian updater turned it
  into `"0:0"` and still listed the record (quay/clair#1270, quay/clair#1125). Nothing is installed below
  version 0, so the package is not affected: the finding is kept in the report as `not_affected` and never blocks.
- `""` (empty): current claircore (Debian updater on the security tracker JSON, quay/claircore#888) reports a
  vulnerability that has no fix yet with an empty fixed version: it is judged by `fail_on_unpatched`.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmrack.errors import UsageError
from llmrack.scan.clair_types import Severity, VulnerabilityReport


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllowEntry(_Strict):
    id: str = Field(min_length=1, description="vulnerability name as Clair reports it (CVE-..., DSA-...)")
    package: str | None = Field(None, description="only for this package (binary or source name)")
    reason: str = Field(min_length=3, description="why this is acceptable")
    expires: dt.date = Field(description="after this date the entry no longer applies")


class Policy(_Strict):
    fail_on: list[Severity] = Field(default_factory=lambda: [Severity.critical, Severity.high])
    fail_on_unpatched: list[Severity] = Field(default_factory=lambda: [Severity.critical])
    allowlist: list[AllowEntry] = []

    @field_validator("fail_on", "fail_on_unpatched", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        if isinstance(value, list):
            return [v.lower() if isinstance(v, str) else v for v in value]
        return value


def load_policy(path: Path) -> Policy:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read policy {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return Policy.model_validate(raw or {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {loc}: {err['msg']}")
        raise UsageError(f"{path}: invalid scan policy:\n" + "\n".join(lines)) from exc


class Verdict(StrEnum):
    blocking = "blocking"
    allowed = "allowed"  # matched an allowlist entry that has not expired
    accepted = "accepted"  # below the policy's thresholds
    not_affected = "not_affected"  # the distribution marks this release not affected (Clair's "0:0")


class FixState(StrEnum):
    """What Clair's fixed_in_version says about a remedy (see the module docstring for the sentinels)."""

    fixed = "fixed"  # a real version: rebuilding on a newer base removes the vulnerability
    unfixed = "unfixed"  # empty: no fix exists yet
    not_affected = "not_affected"  # "0:0" or "0": the release was never vulnerable


NOT_AFFECTED_SENTINELS = frozenset({"0", "0:0"})


def fix_state(fixed_in_version: str) -> FixState:
    value = fixed_in_version.strip()
    if not value:
        return FixState.unfixed
    if value in NOT_AFFECTED_SENTINELS:
        return FixState.not_affected
    return FixState.fixed


class Finding(BaseModel):
    id: str
    package: str
    source_package: str | None
    installed_version: str
    fixed_in_version: str
    fix: FixState
    severity: Severity
    clair_severity: str
    description: str
    links: list[str]
    verdict: Verdict
    note: str = ""


class Evaluation(BaseModel):
    manifest_hash: str
    passed: bool
    findings: list[Finding]
    expired_allowlist: list[str]  # ids of entries that matched but were past their date

    @property
    def blocking(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict is Verdict.blocking]


def evaluate(report: VulnerabilityReport, policy: Policy, today: dt.date | None = None) -> Evaluation:
    today = today or dt.date.today()
    findings: list[Finding] = []
    expired: set[str] = set()
    seen: set[tuple[str, str, str]] = set()
    for pkg_id, vuln_ids in sorted(report.package_vulnerabilities.items()):
        pkg = report.packages.get(pkg_id)
        for vid in vuln_ids:
            vuln = report.vulnerabilities.get(vid)
            if vuln is None:
                continue  # Clair lists ids it filtered out of the map; nothing to judge
            name = pkg.name if pkg else (vuln.package.name if vuln.package else "?")
            version = pkg.version if pkg else ""
            source = pkg.source.name if pkg and pkg.source and pkg.source.name else None
            key = (vuln.name, name, version)
            if key in seen:
                continue  # the same advisory through two updaters: judge it once
            seen.add(key)
            sev = Severity.from_clair(vuln.normalized_severity)
            fixed = vuln.fixed_in_version.strip()
            state = fix_state(fixed)
            threshold = policy.fail_on if state is FixState.fixed else policy.fail_on_unpatched
            verdict, note = Verdict.accepted, ""
            if state is FixState.not_affected:
                verdict = Verdict.not_affected
                note = f"the distribution marks this release not affected (Clair's fixed version {fixed!r})"
            elif sev in threshold:
                verdict = Verdict.blocking
                note = "fixed version available" if state is FixState.fixed else "no fix available yet"
                entry, stale = _allowlisted(policy, vuln.name, {name, source or name}, today)
                if entry is not None:
                    verdict, note = Verdict.allowed, f"allowlisted until {entry.expires}: {entry.reason}"
                elif stale is not None:
                    expired.add(stale.id)
                    note += f"; allowlist entry expired on {stale.expires}"
            findings.append(Finding(
                id=vuln.name, package=name, source_package=source, installed_version=version,
                fixed_in_version=fixed, fix=state, severity=sev, clair_severity=vuln.severity,
                description=vuln.description,
                links=vuln.links.split(), verdict=verdict, note=note,
            ))
    findings.sort(key=lambda f: (f.verdict is not Verdict.blocking, -f.severity.rank, f.package, f.id))
    passed = not any(f.verdict is Verdict.blocking for f in findings)
    return Evaluation(manifest_hash=report.manifest_hash, passed=passed, findings=findings,
                      expired_allowlist=sorted(expired))


def _allowlisted(policy: Policy, vuln_name: str, packages: set[str], today: dt.date
                 ) -> tuple[AllowEntry | None, AllowEntry | None]:
    """(live entry, expired entry) for this vulnerability; an expired one is reported so it gets renewed."""
    stale = None
    for entry in policy.allowlist:
        if entry.id != vuln_name or (entry.package is not None and entry.package not in packages):
            continue
        if today <= entry.expires:
            return entry, None
        stale = entry
    return None, stale
