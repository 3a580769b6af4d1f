"""Security checks on the node: the TLS certificate the gateway serves is not near its end.

Evidence item `gateway-certificates`: the certificate blocks (never a key) of every file HAProxy's config loads
with `ssl crt`, each after a `== <path>` line; no HAProxy config (not a gateway host) gives no output.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from llmrack.contracts.alerts import TLS_EXPIRY_DAYS
from llmrack.validation.checks.base import Outcome, error, item, judge, skip
from llmrack.validation.evidence import Evidence
from llmrack.validation.expect import Expectations

# Inventory override of the threshold (days); default: the expiry alert's (llmrack.contracts.alerts).
TLS_EXPIRY_DAYS_VAR = "llmrack_validation_tls_expiry_days"


def _files(out: str) -> dict[str, str]:
    files: dict[str, str] = {}
    path = None
    for line in out.splitlines(keepends=True):
        if line.startswith("== "):
            path = line[3:].strip()
            files[path] = ""
        elif path is not None:
            files[path] += line
    return files


def _collected_at(ev: Evidence) -> dt.datetime:
    """Days left are counted from when the evidence was read (a dump judged later keeps its verdict)."""
    when = ev.manifest.get("collected_at")
    try:
        at = dt.datetime.fromisoformat(str(when)) if when else dt.datetime.now(dt.UTC)
    except ValueError:
        at = dt.datetime.now(dt.UTC)
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def security_tls_expiry(ev: Evidence, exp: Expectations) -> Outcome:
    files = _files(item(ev, "gateway-certificates", "sh").out)
    if not files:
        return skip("no HAProxy config with a TLS certificate on this node (not a gateway host)")
    threshold = float(exp.var(TLS_EXPIRY_DAYS_VAR, TLS_EXPIRY_DAYS))
    at = _collected_at(ev)
    left: dict[str, float] = {}
    names: list[str] = []
    for path, pem in files.items():
        try:
            leaf = x509.load_pem_x509_certificates(pem.encode())[0]  # the served certificate comes first
        except (ValueError, IndexError):
            return error(f"{path}: no readable PEM certificate")
        left[path] = (leaf.not_valid_after_utc - at).total_seconds() / 86400
        names.append(f"{path}: {leaf.subject.rfc4514_string()}, ends {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                     f"({left[path]:.1f} days left)")
    soonest = min(left.values())
    source = exp.source(TLS_EXPIRY_DAYS_VAR) if TLS_EXPIRY_DAYS_VAR in exp.vars else "the TLS expiry alert's"
    return judge(soonest >= threshold, round(soonest, 1), f">= {threshold:g}", "days",
                 "; ".join(names) + f" (threshold: {source})", days_left=left)
