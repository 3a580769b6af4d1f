"""`llmrack scan`: the Clair v4 vulnerability gate for an OCI archive or layout.

Exit codes: 0 the policy passes; 1 it fails (blocking vulnerabilities listed); 2 the scan could not be
completed (no or unreachable Clair, deadline passed, bad archive, bad policy).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from llmrack.cli.output import info, stderr, stdout, warn
from llmrack.errors import EXIT_FAILURE, LlmrackError, UsageError
from llmrack.scan.clair import load_psk
from llmrack.scan.policy import Evaluation, Verdict, load_policy
from llmrack.scan.scanner import ScanOptions, finish, record_unscanned, scan_image

DEFAULT_POLICY = Path("images/scan-policy.yaml")


def scan(
    target: Path = typer.Argument(..., help="OCI archive (.oci.tar) or OCI layout directory"),
    clair: str | None = typer.Option(None, "--clair", envvar="LLMRACK_CLAIR_URL",
                                     help="Clair v4 base URL (combined mode, or a gateway routing /indexer and "
                                          "/matcher)"),
    policy: Path = typer.Option(DEFAULT_POLICY, "--policy", help="scan policy YAML"),
    report: Path | None = typer.Option(None, "--report", help="write report.json, junit.xml, results.sarif here"),
    results: Path | None = typer.Option(None, "--results",
                                        help="record the verdict in DIR/scan-results/<digest-hex>.json "
                                             "[default: the target's directory]"),
    listen: str = typer.Option("127.0.0.1:0", "--listen", help="where the layer endpoint listens (HOST:PORT)"),
    advertise: str | None = typer.Option(None, "--advertise",
                                         help="base URL Clair uses to fetch layers (e.g. http://10.0.0.5:8089) "
                                              "[default: http://<listen address>]"),
    psk_file: Path | None = typer.Option(None, "--psk-file", envvar="LLMRACK_CLAIR_PSK_FILE",
                                         help="file holding Clair's PSK (base64, as auth.psk.key) for JWT auth"),
    issuer: str = typer.Option("clairctl", "--issuer", help="JWT issuer; must be in Clair's auth.psk.iss"),
    deadline: float = typer.Option(900.0, "--deadline", min=1, help="seconds for the whole scan, retries included"),
) -> None:
    """Scan an image with Clair v4 and judge it by the policy."""
    results_dir = results if results is not None else (target.parent if target.is_file() else target)
    pol = load_policy(policy)
    if not clair:
        found = record_unscanned(target, results_dir, "no Clair endpoint given")
        where = f" (recorded as unscanned: {found[1]})" if found else ""
        raise LlmrackError(f"no Clair endpoint: the image is unscanned{where}",
                           hint="give --clair URL or set LLMRACK_CLAIR_URL; environments that allow unscanned "
                                "images (lab, dev) will still run it, prod will not")
    psk = None
    if psk_file is not None:
        try:
            psk = load_psk(psk_file.read_text())
        except OSError as exc:
            raise UsageError(f"--psk-file {psk_file}: {exc.strerror}") from exc
    opts = ScanOptions(clair_url=clair, policy=pol, policy_path=os.path.relpath(policy) if policy.exists() else
                       str(policy), listen=listen, advertise=advertise, psk=psk, issuer=issuer, deadline_s=deadline)
    try:
        outcome = scan_image(target, opts, log=info)
    except LlmrackError as exc:
        found = record_unscanned(target, results_dir, f"scan not completed: {exc.message}")
        if found:
            info(f"recorded {found[0]} as unscanned (an earlier verdict is kept): {found[1]}")
        raise
    written = finish(outcome, report_dir=report, results_dir=results_dir)
    _print_table(outcome.evaluation)
    for entry in outcome.evaluation.expired_allowlist:
        warn(f"allowlist entry {entry} in {policy} has expired: renew it with a new reason or fix the image")
    for path in written:
        info(f"wrote {path}")
    if not outcome.evaluation.passed:
        blocking = outcome.evaluation.blocking
        stderr.print(f"[red]FAILED[/red] {outcome.digest}: {len(blocking)} blocking vulnerabilit"
                     f"{'y' if len(blocking) == 1 else 'ies'}", highlight=False)
        for f in blocking:
            stderr.print(f"  {f.id}  {f.package} {f.installed_version} -> {f.fixed_in_version or '(no fix yet)'}"
                         f"  [{f.severity.value}]", highlight=False, markup=False)
        raise typer.Exit(EXIT_FAILURE)
    stderr.print(f"[green]PASSED[/green] {outcome.digest}: {len(outcome.evaluation.findings)} known "
                 "vulnerabilities, none blocking under the policy", highlight=False)


def _print_table(evaluation: Evaluation) -> None:
    shown = [f for f in evaluation.findings if f.verdict in (Verdict.blocking, Verdict.allowed)]
    hidden = len(evaluation.findings) - len(shown)
    table = Table(title=f"vulnerabilities blocking or allowlisted ({hidden} more below the policy's thresholds "
                        "or not affected)")
    for col in ("verdict", "severity", "id", "package", "installed", "fixed in", "note"):
        table.add_column(col)
    style = {Verdict.blocking: "red", Verdict.allowed: "yellow"}
    for f in shown:
        table.add_row(f"[{style[f.verdict]}]{f.verdict.value}[/]", f.severity.value, f.id, f.package,
                      f.installed_version, f.fixed_in_version or "-", f.note)
    stdout.print(table)
