"""Write small but real OCI images for the scan tests: real tar layers, real sha256 blobs, an OCI layout in a tar."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

BOOKWORM_OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
    'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
)


def dpkg_status(packages: list[tuple[str, str, str | None]]) -> str:
    paras = []
    for name, version, source in packages:
        lines = [f"Package: {name}", "Status: install ok installed", "Priority: optional", "Architecture: amd64"]
        if source:
            lines.append(f"Source: {source}")
        lines += [f"Version: {version}", f"Description: {name} (test package)", " Long description line."]
        paras.append("\n".join(lines))
    return "\n\n".join(paras) + "\n"


def layer(files: dict[str, bytes | str], *, gz: bool = False, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(path)
            info.size = len(raw)
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(raw))
        for path, target in (symlinks or {}).items():
            info = tarfile.TarInfo(path)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return gzip.compress(buf.getvalue(), mtime=0) if gz else buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_archive(path: Path, layers: list[bytes], *, ref: str = "localhost/test:1", corrupt_layer: int | None = None,
                  as_layout_dir: bool = False) -> str:
    """Write an OCI archive (or layout directory); returns the manifest digest."""
    blobs: dict[str, bytes] = {}
    descs = []
    for data in layers:
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if data[:2] == b"\x1f\x8b" else "")
        blobs[_sha(data)] = data
        descs.append({"mediaType": media, "digest": _sha(data), "size": len(data)})
    diff_ids = [_sha(gzip.decompress(d) if d[:2] == b"\x1f\x8b" else d) for d in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": "10001"},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    blobs[_sha(config)] = config
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config),
                   "size": len(config)},
        "layers": descs,
    }).encode()
    blobs[_sha(manifest)] = manifest
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": ref}}]}).encode()
    if corrupt_layer is not None:
        d = descs[corrupt_layer]["digest"]
        blobs[d] = blobs[d][:-1] + bytes([blobs[d][-1] ^ 0xFF])
    files = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
    files.update({f"blobs/sha256/{d.split(':')[1]}": b for d, b in blobs.items()})
    if as_layout_dir:
        for name, data in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    else:
        with tarfile.open(path, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return _sha(manifest)


def debian_image(path: Path, packages: list[tuple[str, str, str | None]], *, python: dict[str, str] | None = None,
                 **kw: object) -> str:
    """A two-layer Debian-like image: base (os-release, dpkg status) + a layer with Python distributions."""
    base = layer({"usr/lib/os-release": BOOKWORM_OS_RELEASE, "var/lib/dpkg/status": dpkg_status(packages)},
                 symlinks={"etc/os-release": "../usr/lib/os-release"})
    site = "opt/llmrack/lib/python3.11/site-packages"
    py = layer({f"{site}/{n}-{v}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {n}\nVersion: {v}\n"
                for n, v in (python or {"llmrack": "0.1.0"}).items()}, gz=True)
    return write_archive(path, [base, py], **kw)  # type: ignore[arg-type]
