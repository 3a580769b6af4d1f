"""Read an OCI image from an OCI archive (a tar of an OCI layout) or an OCI layout directory.

Only what a scan needs: the manifest digest (the image's identity everywhere in llmrack), the layers in
order, and a way to read each blob. Uncompressed archives (what `podman save --format oci-archive`
writes) are read in place through the tar members' offsets, so a multi-GB image is never copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from llmrack.contracts.scan_results import DIGEST_RE
from llmrack.errors import LlmrackError

MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}


class BadImageError(LlmrackError):
    """The target is not a readable OCI image (exit 2: the scan could not be completed)."""


@dataclass(frozen=True)
class LayerBlob:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class _Extent:
    """Where a blob's bytes lie: a whole file, or a slice of the archive file."""

    path: Path
    offset: int
    size: int


class OciImage:
    def __init__(self, source: Path, manifest_digest: str, manifest: dict[str, Any], blobs: dict[str, _Extent],
                 ref_name: str | None) -> None:
        self.source = source
        self.manifest_digest = manifest_digest
        self.manifest = manifest
        self.ref_name = ref_name
        self._blobs = blobs
        self.layers = [
            LayerBlob(digest=str(d["digest"]), media_type=str(d.get("mediaType", "")), size=int(d.get("size", 0)))
            for d in manifest.get("layers", [])
        ]

    def blob_size(self, digest: str) -> int:
        return self._blobs[digest].size

    def has_blob(self, digest: str) -> bool:
        return digest in self._blobs

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[io.BufferedReader]:
        ext = self._blobs[digest]
        with ext.path.open("rb") as fh:
            fh.seek(ext.offset)
            yield io.BufferedReader(_Window(fh, ext.size), buffer_size=1 << 20)

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as fh:
            return fh.read()

    def verify(self) -> None:
        """Check every layer blob against its digest and size (a truncated or altered archive fails here)."""
        for layer in self.layers:
            if layer.digest not in self._blobs:
                raise BadImageError(f"{self.source}: layer {layer.digest} is listed in the manifest but missing")
            h = hashlib.sha256()
            with self.open_blob(layer.digest) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            if f"sha256:{h.hexdigest()}" != layer.digest:
                raise BadImageError(f"{self.source}: layer {layer.digest} does not match its digest (corrupt archive)")


class _Window(io.RawIOBase):
    """A read-only view of `size` bytes of an open file from its current position."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        super().__init__()
        self._fh = fh
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._left)
        if n <= 0:
            return 0
        got = self._fh.readinto(view[:n])  # type: ignore[attr-defined]
        self._left -= got
        return int(got)


@contextlib.contextmanager
def open_image(target: Path) -> Iterator[OciImage]:
    """Open an OCI archive or layout directory; raises BadImageError with what is wrong."""
    target = Path(target)
    if target.is_dir():
        yield _from_layout(target, target)
        return
    if not target.is_file():
        raise BadImageError(f"{target}: no such file or directory")
    if _is_plain_tar(target):
        with tarfile.open(target, "r:") as tar:
            blobs: dict[str, _Extent] = {}
            files: dict[str, tarfile.TarInfo] = {}
            for member in tar:
                name = os.path.normpath(member.name).lstrip("./")
                if member.isfile():
                    files[name] = member
                    m = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", name)
                    if m:
                        blobs[f"sha256:{m.group(1)}"] = _Extent(target, member.offset_data, member.size)
            if "index.json" not in files:
                raise BadImageError(f"{target}: not an OCI archive (no index.json; give an OCI archive or layout)")
            index_file = tar.extractfile(files["index.json"])
            assert index_file is not None
            index = _json(index_file.read(), f"{target}:index.json")
        yield _resolve(target, index, blobs)
        return
    # Compressed archives: unpack once into a scratch directory.
    scratch = Path(tempfile.mkdtemp(prefix="llmrack-oci-"))
    try:
        try:
            with tarfile.open(target, "r:*") as ctar:
                ctar.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BadImageError(f"{target}: not a readable OCI archive ({exc})") from exc
        yield _from_layout(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _is_plain_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:"):
            return True
    except tarfile.TarError:
        return False


def _from_layout(root: Path, source: Path) -> OciImage:
    index_path = root / "index.json"
    if not index_path.is_file():
        raise BadImageError(f"{source}: not an OCI layout (no index.json)")
    blobs = {
        f"sha256:{p.name}": _Extent(p, 0, p.stat().st_size)
        for p in (root / "blobs" / "sha256").glob("*")
        if p.is_file() and re.fullmatch(r"[0-9a-f]{64}", p.name)
    }
    return _resolve(source, _json(index_path.read_bytes(), f"{source}:index.json"), blobs)


def _json(data: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise BadImageError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise BadImageError(f"{where}: expected a JSON object")
    return value


def _blob_json(source: Path, blobs: dict[str, _Extent], digest: str) -> dict[str, Any]:
    if not DIGEST_RE.match(digest) or digest not in blobs:
        raise BadImageError(f"{source}: blob {digest} is referenced but not in the image")
    ext = blobs[digest]
    with ext.path.open("rb") as fh:
        fh.seek(ext.offset)
        data = fh.read(ext.size)
    if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
        raise BadImageError(f"{source}: blob {digest} does not match its digest (corrupt archive)")
    return _json(data, f"{source}:{digest}")


def _resolve(source: Path, index: dict[str, Any], blobs: dict[str, _Extent]) -> OciImage:
    """Follow index.json to one image manifest: the only one, or the linux/amd64 entry of an index."""
    descriptors = index.get("manifests")
    if not isinstance(descriptors, list) or not descriptors:
        raise BadImageError(f"{source}: index.json lists no manifests")
    for _depth in range(3):
        chosen = _pick(descriptors)
        digest = str(chosen.get("digest", ""))
        doc = _blob_json(source, blobs, digest)
        media = str(chosen.get("mediaType") or doc.get("mediaType") or "")
        if media in INDEX_TYPES or "manifests" in doc:
            descriptors = doc.get("manifests") or []
            if not descriptors:
                raise BadImageError(f"{source}: image index {digest} lists no manifests")
            continue
        if media and media not in MANIFEST_TYPES:
            raise BadImageError(f"{source}: {digest} has unsupported media type {media}")
        if not isinstance(doc.get("layers"), list) or not doc["layers"]:
            raise BadImageError(f"{source}: manifest {digest} has no layers")
        ref = (chosen.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        return OciImage(source, digest, doc, blobs, ref)
    raise BadImageError(f"{source}: image indexes nested too deep")


def _pick(descriptors: list[Any]) -> dict[str, Any]:
    for d in descriptors:
        plat = d.get("platform") or {}
        if plat.get("os") == "linux" and plat.get("architecture") == "amd64":
            return dict(d)
    return dict(descriptors[0])
