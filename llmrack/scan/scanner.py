"""One scan: open the image, serve its layers, have Clair index and match it, judge it, record it by digest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmrack.scan.clair import ClairClient
from llmrack.scan.clair_types import Layer, Manifest, VulnerabilityReport
from llmrack.scan.gate import ScanResult, ScanStatus, record_result
from llmrack.scan.layerserver import LayerServer
from llmrack.scan.oci import open_image
from llmrack.scan.policy import Evaluation, Policy, evaluate
from llmrack.scan.reports import blocking_summary, report_document, write_reports


@dataclass
class ScanOptions:
    clair_url: str
    policy: Policy
    policy_path: str
    listen: str = "127.0.0.1:0"
    advertise: str | None = None
    psk: bytes | None = None
    issuer: str = "clairctl"
    deadline_s: float = 900.0
    poll_interval_s: float = 1.0


@dataclass
class ScanOutcome:
    digest: str
    evaluation: Evaluation
    report: VulnerabilityReport
    document: dict[str, Any]
    layer_requests: list[tuple[str, str, int]]


def scan_image(target: Path, opts: ScanOptions, log: Callable[[str], None] | None = None) -> ScanOutcome:
    say = log or (lambda _m: None)
    with open_image(target) as image:
        image.verify()
        digest = image.manifest_digest
        say(f"image {digest} ({len(image.layers)} layers)")
        with LayerServer(image, opts.listen, opts.advertise) as server, ClairClient(
            opts.clair_url, psk=opts.psk, issuer=opts.issuer, deadline_s=opts.deadline_s,
            poll_interval_s=opts.poll_interval_s, log=say,
        ) as clair:
            manifest = Manifest(hash=digest, layers=[
                Layer(hash=layer.digest, uri=server.uri_for(layer.digest), headers=server.headers)
                for layer in image.layers
            ])
            say(f"serving layers at {server.base_url}; asking {clair.base_url} to index")
            indexed = clair.wait_indexed(digest, clair.index(manifest))
            say(f"indexed: {len(indexed.packages)} packages; fetching the vulnerability report")
            report = clair.vulnerability_report(digest)
            requests = list(server.requests)
    evaluation = evaluate(report, opts.policy)
    scanned_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    document = report_document(evaluation, digest=digest, target=str(target), clair=opts.clair_url,
                               policy=opts.policy, policy_path=opts.policy_path, scanned_at=scanned_at)
    return ScanOutcome(digest, evaluation, report, document, requests)


def finish(outcome: ScanOutcome, *, report_dir: Path | None, results_dir: Path | None) -> list[Path]:
    """Write the reports and the by-digest record the gate reads."""
    written: list[Path] = []
    if report_dir is not None:
        written += write_reports(report_dir, outcome.document, outcome.evaluation)
    if results_dir is not None:
        written.append(record_result(results_dir, ScanResult(
            digest=outcome.digest,
            status=ScanStatus.passed if outcome.evaluation.passed else ScanStatus.failed,
            policy=str(outcome.document["policy"]["path"]),
            scanned_at=dt.datetime.fromisoformat(str(outcome.document["scanned_at"])),
            blocking=blocking_summary(outcome.evaluation),
            clair=str(outcome.document["clair"]),
        )))
    return written


def record_unscanned(target: Path, results_dir: Path, reason: str) -> tuple[str, Path] | None:
    """Record an image as unscanned (never over an earlier verdict). None when the target is unreadable."""
    try:
        with open_image(target) as image:
            digest = image.manifest_digest
    except Exception:  # the caller already reports why the scan failed; recording is best effort
        return None
    path = record_result(results_dir, ScanResult(
        digest=digest, status=ScanStatus.unscanned, scanned_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        reason=reason,
    ), keep_existing_verdict=True)
    return digest, path
