"""`llmrack image ...`: build the serving image offline, write its SBOM, ask the scan gate about a digest."""

from __future__ import annotations

from pathlib import Path

import typer

from llmrack.cli.output import emit_json, info, stderr
from llmrack.errors import EXIT_FAILURE
from llmrack.images.build import BuildOptions, default_cache_dir, default_source_dir
from llmrack.images.build import build as do_build
from llmrack.images.sbom import write_sbom
from llmrack.scan import gate_decision

app = typer.Typer(help="Serving images: build (offline), SBOM, and the vulnerability gate by digest.",
                  no_args_is_help=True)


@app.command("build")
def build(
    variant: str = typer.Option("cpu", "--variant", help="cpu | cuda | ascend, or vLLM: cpu-vllm | cuda-vllm | "
                                "ascend-vllm (images/<variant>.Containerfile)"),
    out: Path = typer.Option(..., "--out", help="directory for the OCI archive, the SBOM and image.json"),
    cache_dir: Path | None = typer.Option(None, "--cache-dir",
                                          help="cache for the Debian base, wheels and build context "
                                               "[default: $LLMRACK_CACHE_DIR/images or ~/.cache/llmrack/images]"),
    source: Path | None = typer.Option(None, "--source", help="llmrack checkout to build [default: this one]"),
    base_image: str | None = typer.Option(None, "--base-image",
                                          help="base image by digest (NAME@sha256:...); cpu and cpu-vllm "
                                               "default: a local debootstrap of Debian 12"),
    apt_mirror: str = typer.Option("http://deb.debian.org/debian", "--apt-mirror", envvar="LLMRACK_APT_MIRROR",
                                   help="Debian mirror for debootstrap and apt inside the build"),
    security_mirror: str = typer.Option("http://deb.debian.org/debian-security", "--security-mirror",
                                        envvar="LLMRACK_APT_SECURITY_MIRROR", help="Debian security mirror"),
    refresh_base: bool = typer.Option(False, "--refresh-base",
                                      help="bootstrap the Debian base again (today's packages; rebuilds every "
                                           "layer): do it when a scan reports fixes the image lacks"),
    extra_ca_certs: list[Path] = typer.Option([], "--extra-ca-certs", envvar="LLMRACK_EXTRA_CA_CERTS",
                                              help="PEM file of CA certificates to trust inside the build and the "
                                                   "image (TLS-inspecting proxies, internal mirrors); repeatable"),
    torch: str | None = typer.Option(None, "--torch", help="torch requirement [default: the host's torch version]"),
    extra_wheel: list[str] = typer.Option([], "--extra-wheel", help="more requirements (e.g. torch_npu==X)"),
) -> None:
    """Build the serving image with podman, export an OCI archive, print its digest, write the SBOM."""
    result = do_build(BuildOptions(
        variant=variant, out=out.resolve(), cache_dir=(cache_dir or default_cache_dir()).resolve(),
        source_dir=(source or default_source_dir()).resolve(), base_image=base_image, apt_mirror=apt_mirror,
        security_mirror=security_mirror, refresh_base=refresh_base,
        extra_ca=list(extra_ca_certs), torch=torch, extra_wheels=list(extra_wheel),
    ), log=info)
    t = result.timings_s
    info(f"built {result.reference} in {sum(t.values()):.0f}s "
         f"({', '.join(f'{k} {v:.0f}s' for k, v in t.items())}); image {result.image_size_bytes / 2**20:.0f} MiB, "
         f"archive {result.archive_size_bytes / 2**20:.0f} MiB")
    info(f"SBOM: {result.debian_packages} Debian packages, {result.python_distributions} Python distributions "
         f"-> {result.sbom}")
    info(f"archive: {result.archive}")
    print(result.digest)


@app.command("sbom")
def sbom(
    archive: Path = typer.Argument(..., help="OCI archive or OCI layout directory"),
    out: Path = typer.Option(..., "--out", help="CycloneDX 1.5 JSON file to write"),
) -> None:
    """Write the CycloneDX SBOM of any OCI image (Debian packages + Python distributions)."""
    inv = write_sbom(archive, out)
    info(f"{inv.digest}: {len(inv.debian)} Debian packages, {len(inv.python)} Python distributions -> {out}")


@app.command("check-gate")
def check_gate(
    digest: str = typer.Option(..., "--digest", help="image digest (sha256:...)"),
    results: Path = typer.Option(..., "--results", help="directory holding scan-results/<digest-hex>.json"),
    allow_unscanned: bool = typer.Option(False, "--allow-unscanned/--no-allow-unscanned",
                                         help="let an unscanned image run (lab/dev; the spec's "
                                              "images.allow_unscanned); a failed scan is always refused"),
    as_json: bool = typer.Option(False, "--json", help="print {digest, ok, reason} on stdout"),
) -> None:
    """Exit 0 when an image with this digest may run, 1 when the gate refuses it."""
    ok, reason = gate_decision(digest, results, allow_unscanned)
    if as_json:
        emit_json({"digest": digest, "ok": ok, "reason": reason})
    if not ok:
        stderr.print(f"[red]gate:[/red] {reason}", highlight=False)
        raise typer.Exit(EXIT_FAILURE)
    if reason.startswith("WARNING"):
        # Loud on purpose: an unscanned image is running somewhere (lab/dev only).
        stderr.print(f"[bold yellow]WARNING: UNSCANNED IMAGE[/bold yellow] {reason.removeprefix('WARNING: ')}",
                     highlight=False)
    else:
        info(f"gate: {reason}")


@app.command("push")
def push(
    archive: Path = typer.Argument(..., help="the OCI archive `llmrack image build` wrote"),
    to: str = typer.Option(..., "--to", help="repository in the rack's registry: host[:port]/path"),
    digest: str | None = typer.Option(None, "--digest", help="the image to push when the archive holds several"),
    results: Path | None = typer.Option(None, "--results",
                                        help="scan-results directory: push only a digest the gate passes"),
    allow_unscanned: bool = typer.Option(False, "--allow-unscanned/--no-allow-unscanned",
                                         help="with --results: let an unscanned image through (lab/dev)"),
    plain_http: bool = typer.Option(False, "--plain-http", help="the registry speaks plain HTTP (closed networks)"),
    ca_cert: Path | None = typer.Option(None, "--ca-cert", help="PEM of the CA that signed the registry's certificate"),
) -> None:
    """Push an image to the rack's registry under its own digest; prints REPOSITORY@DIGEST for the inventory's
    serving_image_repository / serving_image_digest. Credentials, if the registry needs them, come from
    $LLMRACK_REGISTRY_CREDS (user:password)."""
    from llmrack.images.push import archive_digest  # noqa: PLC0415
    from llmrack.images.push import push as do_push  # noqa: PLC0415

    if results is not None:
        ok, reason = gate_decision(digest or archive_digest(archive), results, allow_unscanned)
        if not ok:
            stderr.print(f"[red]gate:[/red] {reason}; nothing was pushed", highlight=False)
            raise typer.Exit(EXIT_FAILURE)
        info(f"gate: {reason}")
    pushed = do_push(archive, to, digest=digest, plain_http=plain_http, ca_file=ca_cert)
    info(f"pushed {archive.name} as {pushed.repository}:{pushed.tag}")
    print(pushed.reference)
