"""CycloneDX SBOM of an OCI image, read from the image itself (no container run needed).

The layers are replayed in order (with OCI whiteouts) just far enough to know the final content of the
dpkg database (`var/lib/dpkg/status`), the os-release file and every `*.dist-info/METADATA` under a
site-packages/dist-packages directory. Works for any variant's archive, including ones built elsewhere.
"""

from __future__ import annotations

import gzip
import posixpath
import re
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot5
from packageurl import PackageURL

from llmrack import __version__
from llmrack.scan.oci import BadImageError, OciImage, open_image

DPKG_STATUS = "var/lib/dpkg/status"
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_METADATA_RE = re.compile(r".*/(site|dist)-packages/[^/]+\.dist-info/METADATA$")


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str
    source: str | None


@dataclass(frozen=True)
class PyDist:
    name: str
    version: str
    license: str | None
    location: str  # the site-packages directory, e.g. opt/llmrack/lib/python3.11/site-packages


@dataclass
class ImageInventory:
    digest: str
    ref_name: str | None
    os_release: dict[str, str]
    debian: list[DebPackage]
    python: list[PyDist]


def _wanted(path: str) -> bool:
    return path == DPKG_STATUS or path in OS_RELEASE or bool(_METADATA_RE.match(path))


def _layer_members(image: OciImage, digest: str) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    with image.open_blob(digest) as raw:
        head = raw.read(2)
    with image.open_blob(digest) as raw:
        stream: Any = gzip.GzipFile(fileobj=raw, mode="rb") if head == b"\x1f\x8b" else raw
        if head[:1] == b"\x28":  # zstd magic 28 b5 2f fd
            raise BadImageError(f"layer {digest} is zstd-compressed; rebuild with gzip or uncompressed layers")
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                yield member, tar


def inventory(image: OciImage) -> ImageInventory:
    files: dict[str, bytes] = {}
    for layer in image.layers:
        for member, tar in _layer_members(image, layer.digest):
            path = posixpath.normpath(member.name).lstrip("/")
            path = path[2:] if path.startswith("./") else path
            base = posixpath.basename(path)
            parent = posixpath.dirname(path)
            if base == ".wh..wh..opq":  # opaque directory: hide everything below it from lower layers
                files = {p: v for p, v in files.items() if not p.startswith(parent + "/")}
                continue
            if base.startswith(".wh."):
                gone = posixpath.join(parent, base[4:])
                files = {p: v for p, v in files.items() if p != gone and not p.startswith(gone + "/")}
                continue
            if member.isfile() and _wanted(path):
                fh = tar.extractfile(member)
                if fh is not None:
                    files[path] = fh.read()
            elif member.issym() and path in OS_RELEASE:
                target = posixpath.normpath(posixpath.join(parent, member.linkname)).lstrip("/")
                files[path] = files.get(target, b"")
    os_release = {}
    for name in OS_RELEASE:
        if files.get(name):
            os_release = _parse_os_release(files[name].decode(errors="replace"))
            break
    python = []
    for path, data in files.items():
        if _METADATA_RE.match(path):
            msg = BytesHeaderParser().parsebytes(data)
            if msg.get("Name") and msg.get("Version"):
                lic = msg.get("License-Expression") or msg.get("License")
                lic = lic.strip().splitlines()[0] if lic and lic.strip() and lic.strip() != "UNKNOWN" else None
                python.append(PyDist(str(msg["Name"]), str(msg["Version"]), lic, path.rsplit("/", 2)[0]))
    return ImageInventory(
        digest=image.manifest_digest,
        ref_name=image.ref_name,
        os_release=os_release,
        debian=parse_dpkg_status(files.get(DPKG_STATUS, b"").decode(errors="replace")),
        python=sorted(python, key=lambda d: (d.name.lower(), d.version)),
    )


def _parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip('"')
    return out


def parse_dpkg_status(text: str) -> list[DebPackage]:
    """Installed packages from a dpkg status file (RFC 822 paragraphs; continuation lines start with space)."""
    packages = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "Package" not in fields or not fields.get("Status", "").endswith(" installed"):
            continue
        source = fields.get("Source", "").split(" ")[0] or None
        packages.append(DebPackage(fields["Package"], fields.get("Version", ""), fields.get("Architecture", ""),
                                   source))
    return sorted(packages, key=lambda p: p.name)


def _pep503(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build_bom(inv: ImageInventory, name: str) -> Bom:
    distro = inv.os_release.get("ID", "debian")
    distro_q = f"{distro}-{inv.os_release['VERSION_ID']}" if inv.os_release.get("VERSION_ID") else distro
    components = []
    for deb in inv.debian:
        qualifiers = {"arch": deb.arch, "distro": distro_q}
        purl = PackageURL(type="deb", namespace=distro, name=deb.name, version=deb.version, qualifiers=qualifiers)
        props = [Property(name="llmrack:package-db", value=DPKG_STATUS)]
        if deb.source and deb.source != deb.name:
            props.append(Property(name="llmrack:deb-source", value=deb.source))
        components.append(Component(type=ComponentType.LIBRARY, name=deb.name, version=deb.version, purl=purl,
                                    bom_ref=purl.to_string(), properties=props))
    seen: set[str] = set()
    for dist in inv.python:
        purl = PackageURL(type="pypi", name=_pep503(dist.name), version=dist.version)
        ref = f"{purl.to_string()}#{dist.location}"
        if ref in seen:
            continue
        seen.add(ref)
        props = [Property(name="llmrack:site-packages", value="/" + dist.location)]
        if dist.license:
            props.append(Property(name="llmrack:declared-license", value=dist.license[:200]))
        components.append(Component(type=ComponentType.LIBRARY, name=dist.name, version=dist.version, purl=purl,
                                    bom_ref=ref, properties=props))
    root = Component(type=ComponentType.CONTAINER, name=name, version=inv.digest, bom_ref=inv.digest,
                     properties=[Property(name="llmrack:os", value=inv.os_release.get("PRETTY_NAME", ""))])
    bom = Bom(components=components, serial_number=uuid.uuid4(), metadata=BomMetaData(component=root))
    # Everything found is in the image: a flat graph under the image itself (package-level edges are not known).
    bom.register_dependency(root, components)
    bom.metadata.tools.components.add(Component(type=ComponentType.APPLICATION, name="llmrack",
                                                version=__version__))
    return bom


def write_sbom(archive: Path, out: Path, name: str | None = None) -> ImageInventory:
    with open_image(archive) as image:
        inv = inventory(image)
    bom = build_bom(inv, name or (inv.ref_name or archive.name).split(":")[0])
    out.write_text(JsonV1Dot5(bom).output_as_string(indent=2) + "\n")
    return inv
