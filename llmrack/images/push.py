"""Push a serving image's OCI archive to the rack's registry, by digest (`llmrack image push`).

Nodes pull `<repository>@<digest>` (the serving role), so the digest that `llmrack image build` printed and the scan
gate filed must be the one the registry serves: skopeo copies with `--preserve-digests` (it refuses rather than
convert the manifest), and the push is checked by asking the registry for the manifest under that digest. A
registry needs a tag to push to; the tag is derived from the digest (`sha-<12 hex>`), so pushing the same image
twice names the same tag and is a no-op.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from llmrack.errors import LlmrackError, UsageError

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REPOSITORY = re.compile(r"^(?P<host>[A-Za-z0-9.-]+(?::\d+)?)/(?P<path>[a-z0-9]+(?:[._/-][a-z0-9]+)*)$")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
# Read from the environment, never from the command line (it would show in `ps` and in shell history).
CREDENTIALS_ENV = "LLMRACK_REGISTRY_CREDS"


class PushError(LlmrackError):
    """skopeo is missing, the push failed, or the registry does not serve the digest afterwards."""


@dataclass(frozen=True)
class Pushed:
    repository: str
    digest: str
    tag: str

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


def archive_digest(archive: Path) -> str:
    """The manifest digest of a one-image OCI archive (its index.json's only entry)."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("index.json")
            if member is None:
                raise KeyError("index.json")
            index = json.load(member)
    except (OSError, tarfile.TarError, KeyError, json.JSONDecodeError) as exc:
        raise UsageError(f"{archive} is not an OCI archive ({exc})",
                         hint="give the .oci.tar that `llmrack image build` wrote") from exc
    entries = index.get("manifests") or []
    if len(entries) != 1:
        raise UsageError(f"{archive} holds {len(entries)} images; give the digest to push with --digest")
    digest = str(entries[0]["digest"])
    return digest


def parse_repository(repository: str) -> tuple[str, str]:
    """(host[:port], path) of `host[:port]/path`; a repository without a registry host is refused."""
    m = REPOSITORY.match(repository)
    if m is None or ("." not in m["host"] and ":" not in m["host"] and m["host"] != "localhost"):
        raise UsageError(f"--to {repository!r} is not a repository in a registry",
                         hint="write host[:port]/path, e.g. registry.rack1.internal:5000/llmrack-serving")
    return m["host"], m["path"]


def push(archive: Path, repository: str, *, digest: str | None = None, plain_http: bool = False,
         ca_file: Path | None = None) -> Pushed:
    """Copy the archive's image to `repository` keeping its digest, then check the registry serves it."""
    if not archive.is_file():
        raise UsageError(f"{archive} not found", hint="give the .oci.tar that `llmrack image build` wrote")
    host, path = parse_repository(repository)
    in_archive = archive_digest(archive) if digest is None else digest
    if not DIGEST.match(in_archive):
        raise UsageError(f"--digest {in_archive!r} is not a sha256 digest (sha256:<64 hex>)")
    if ca_file is not None and not ca_file.is_file():
        raise UsageError(f"--ca-cert {ca_file} not found")
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise PushError("skopeo is not installed", hint="apt-get install skopeo (scripts/setup.sh installs it)")
    tag = "sha-" + in_archive.removeprefix("sha256:")[:12]
    with tempfile.TemporaryDirectory(prefix="llmrack-push-") as certs:
        argv = [skopeo, "copy", "--quiet", "--preserve-digests", "--retry-times", "2"]
        if plain_http:
            argv.append("--dest-tls-verify=false")
        elif ca_file is not None:
            # skopeo reads a directory of certificates; the CA alone is what a private registry needs.
            shutil.copy(ca_file, Path(certs) / "ca.crt")
            argv += ["--dest-cert-dir", certs]
        creds = os.environ.get(CREDENTIALS_ENV)
        if creds:
            argv += ["--dest-creds", creds]
        source = f"oci-archive:{archive}" if digest is None else f"oci-archive:{archive}@{digest}"
        argv += [source, f"docker://{host}/{path}:{tag}"]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.strip().replace(creds or "\0", "***")
        raise PushError(f"pushing {archive.name} to {host}/{path} failed: {err[-1500:]}",
                        hint="--plain-http for a registry without TLS, --ca-cert for one with a private CA")
    served = served_digest(host, path, tag, plain_http=plain_http, ca_file=ca_file)
    if served != in_archive:
        raise PushError(f"{host}/{path}:{tag} serves {served}, not {in_archive}: the registry changed the "
                        "manifest, so nodes could not pull the image by the digest the gate judged")
    return Pushed(f"{host}/{path}", in_archive, tag)


def served_digest(host: str, path: str, reference: str, *, plain_http: bool = False,
                  ca_file: Path | None = None) -> str:
    """The digest the registry answers for `reference` (a tag or a digest) in `path`."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    url = f"{'http' if plain_http else 'https'}://{host}/v2/{path}/manifests/{reference}"
    try:
        resp = httpx.head(url, headers={"Accept": ", ".join(MANIFEST_TYPES)}, verify=verify, timeout=30)
    except httpx.HTTPError as exc:
        raise PushError(f"cannot ask {url}: {exc}") from exc
    if resp.status_code != 200:
        raise PushError(f"{url} answered {resp.status_code} after the push")
    return str(resp.headers.get("Docker-Content-Digest", ""))
