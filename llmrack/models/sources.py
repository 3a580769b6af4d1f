"""Where a model version comes from: an OCI registry (through `oras`), an HTTP(S) mirror or a directory.

`model.source` in the spec (and REF on the command line) is one of:
  oci://HOST[:PORT]/REPO[:TAG|@DIGEST]       a registry over HTTPS (Harbor, Quay, the reference registry)
  oci+http://HOST[:PORT]/REPO[:TAG|@DIGEST]  the same over plain HTTP (a lab, a trusted rack network)
  http(s)://HOST/PATH                         a mirror publishing a model directory, or a store of versions
  /PATH or file:///PATH                       a local (or mounted) model directory, or a store of versions
A store of versions is a directory of `<hex>/` version directories (a node's store is one); with a version
given, `<base>/<hex>/` is tried before `<base>/` itself.

Each source hands out the manifest's bytes and each file's bytes from an offset, in chunks, so a pull can
resume where it stopped.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmrack.contracts.model_manifest import (
    MANIFEST_FILE,
    MANIFEST_MEDIA_TYPE,
    FileEntry,
    version_hex,
    version_tag,
)
from llmrack.models.errors import ModelError, TransferError

CHUNK = 1 << 20
OCI_MANIFEST_TYPES = ["application/vnd.oci.image.manifest.v1+json"]
OCI_REF = re.compile(r"^(?P<host>[^/]+)/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)(?::(?P<tag>[\w][\w.-]{0,127}))?"
                     r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


class Source(Protocol):
    def describe(self) -> str: ...

    def manifest_bytes(self, version: str | None) -> bytes: ...

    def read(self, entry: FileEntry, offset: int) -> Iterator[bytes]: ...


def parse_source(text: str) -> Source:
    if text.startswith(("oci://", "oci+http://")):
        return OciSource.parse(text)
    if text.startswith(("http://", "https://")):
        return HttpSource(text.rstrip("/"))
    if text.startswith("file://"):
        return DirSource(Path(text[len("file://"):]))
    if "://" in text:
        raise ModelError(f"model source {text!r}: unknown scheme",
                         hint="use oci://, oci+http://, http(s)://, file:// or a directory path")
    return DirSource(Path(text))


@dataclass
class DirSource:
    base: Path
    _root: Path | None = None

    def describe(self) -> str:
        return str(self.base)

    def manifest_bytes(self, version: str | None) -> bytes:
        candidates = ([self.base / version_hex(version)] if version else []) + [self.base]
        for root in candidates:
            if (root / MANIFEST_FILE).is_file():
                self._root = root
                return (root / MANIFEST_FILE).read_bytes()
        raise TransferError(f"no {MANIFEST_FILE} in {' or '.join(str(c) for c in candidates)}",
                            hint="give a model directory with a manifest (`llmrack model manifest DIR`)")

    def read(self, entry: FileEntry, offset: int) -> Iterator[bytes]:
        assert self._root is not None, "manifest_bytes() first"
        path = self._root / entry.path
        try:
            f = path.open("rb")
        except OSError as exc:
            raise TransferError(f"{path}: {exc.strerror}") from None
        with f:
            f.seek(offset)
            while block := f.read(CHUNK):
                yield block


@dataclass
class HttpSource:
    base: str
    _root: str | None = None

    def describe(self) -> str:
        return self.base

    def _open(self, url: str, offset: int = 0) -> Any:
        req = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        return urllib.request.urlopen(req, timeout=60)

    def manifest_bytes(self, version: str | None) -> bytes:
        candidates = ([f"{self.base}/{version_hex(version)}"] if version else []) + [self.base]
        errors = []
        for root in candidates:
            try:
                with self._open(f"{root}/{MANIFEST_FILE}") as resp:
                    self._root = root
                    return bytes(resp.read())
            except urllib.error.HTTPError as exc:
                errors.append(f"{root}/{MANIFEST_FILE}: HTTP {exc.code}")
            except (urllib.error.URLError, OSError) as exc:
                raise TransferError(f"mirror {self.base} unreachable: {getattr(exc, 'reason', exc)}") from None
        raise TransferError("no model manifest on the mirror: " + "; ".join(errors))

    def read(self, entry: FileEntry, offset: int) -> Iterator[bytes]:
        assert self._root is not None, "manifest_bytes() first"
        url = f"{self._root}/{entry.path}"
        try:
            resp = self._open(url, offset)
        except (urllib.error.URLError, OSError) as exc:
            raise TransferError(f"{url}: {getattr(exc, 'reason', exc)}") from None
        with resp:
            # A server that ignores Range answers 200 with the whole file: skip what we have.
            skip = offset if resp.status == 200 else 0
            yield from _skip(iter(lambda: resp.read(CHUNK), b""), skip)


def _skip(chunks: Iterator[bytes], skip: int) -> Iterator[bytes]:
    for block in chunks:
        if skip >= len(block):
            skip -= len(block)
            continue
        yield block[skip:]
        skip = 0


@dataclass
class OciSource:
    """A model version in an OCI registry, read with the `oras` client (auth, token refresh, retries)."""

    host: str
    repository: str
    tag: str | None
    digest: str | None
    plain_http: bool

    @classmethod
    def parse(cls, text: str) -> OciSource:
        plain = text.startswith("oci+http://")
        rest = text.split("://", 1)[1]
        m = OCI_REF.match(rest)
        if not m:
            raise ModelError(f"model source {text!r} is not an OCI reference",
                             hint="write oci://HOST[:PORT]/REPOSITORY[:TAG] (lower-case repository)")
        return cls(m["host"], m["repo"], m["tag"], m["digest"], plain)

    def describe(self) -> str:
        return f"{'oci+http' if self.plain_http else 'oci'}://{self.reference()}"

    def reference(self, tag: str | None = None) -> str:
        if tag:
            return f"{self.host}/{self.repository}:{tag}"
        if self.digest:
            return f"{self.host}/{self.repository}@{self.digest}"
        return f"{self.host}/{self.repository}:{self.tag or 'latest'}"

    def registry(self) -> Any:
        import oras.provider  # noqa: PLC0415  (only OCI sources need it)

        return oras.provider.Registry(hostname=self.host, insecure=self.plain_http)

    def _get(self, reg: Any, url: str, **kw: Any) -> Any:
        try:
            return reg.do_request(url, "GET", **kw)
        except Exception as exc:  # requests' and oras' errors: the registry did not answer
            raise TransferError(f"registry {self.host} did not answer: {exc}") from None

    def manifest_bytes(self, version: str | None) -> bytes:
        reg = self.registry()
        # With a version and no explicit tag/digest, pull by the version's own tag (sha256-<hex>).
        ref = self.reference(version_tag(version)) if version and not (self.tag or self.digest) else self.reference()
        container = reg.get_container(ref)
        resp = self._get(reg, f"{reg.prefix}://{container.manifest_url()}",
                         headers={"Accept": ", ".join(OCI_MANIFEST_TYPES)})
        if resp.status_code == 404:
            raise TransferError(f"{self.describe()}: no artifact {ref}",
                                hint="push it first: `llmrack model push DIR REF`")
        if resp.status_code != 200:
            raise TransferError(f"{ref}: registry answered HTTP {resp.status_code}")
        config = resp.json().get("config", {})
        if config.get("mediaType") != MANIFEST_MEDIA_TYPE:
            raise TransferError(f"{ref} is not an llmrack model (config media type {config.get('mediaType')!r})")
        blob = self._get(reg, f"{reg.prefix}://{container.get_blob_url(config['digest'])}")
        if blob.status_code != 200:
            raise TransferError(f"{ref}: manifest blob {config['digest']}: HTTP {blob.status_code}")
        self._reg, self._container = reg, container
        return bytes(blob.content)

    def read(self, entry: FileEntry, offset: int) -> Iterator[bytes]:
        reg, container = self._reg, self._container
        # oras' download_blob always starts at byte 0; a resumed pull asks the registry for the rest (Range).
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._get(reg, f"{reg.prefix}://{container.get_blob_url(entry.digest)}", headers=headers, stream=True)
        if resp.status_code not in (200, 206):
            raise TransferError(f"{entry.path}: blob {entry.digest}: HTTP {resp.status_code}")
        with resp:
            skip = offset if resp.status_code == 200 else 0
            yield from _skip(resp.iter_content(CHUNK), skip)
