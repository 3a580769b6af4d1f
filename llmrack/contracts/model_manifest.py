"""The model manifest: what a model version is, on disk, in a registry and on every serving node.

A model version is content-addressed. Its manifest lists every file of the model directory with its size and
sha256; the sha256 of the manifest's bytes, written ``sha256:<hex>``, IS the version. Two directories with the
same files have the same version; one changed byte anywhere gives another. Everything that moves or checks
weights (``llmrack model push/pull/verify``, the serving role, the validation suite) reads this module and
nothing else for these names.

Manifest file
    ``llmrack-model.json`` at the top of the model directory, UTF-8 JSON written canonically (keys sorted, no
    spaces, ``\\n`` at the end)::

        {"files":[{"path":"config.json","sha256":"<64 hex>","size":712}, ...],"name":"tiny-qwen2","schema":1}

    ``files`` is sorted by ``path``; paths are relative, use ``/``, never ``..``, never the manifest itself.
    The version is computed over the bytes as stored, so a reader never re-serialises before hashing.

In an OCI registry (pushed with the ``oras`` client)
    One OCI image manifest per version: its ``config`` is the manifest file (media type
    ``MANIFEST_MEDIA_TYPE``, so the config digest equals the version) and each model file is one layer (media
    type ``FILE_MEDIA_TYPE``, digest = the file's sha256, annotation ``org.opencontainers.image.title`` = its
    relative path). Every push also tags the artifact ``version_tag(version)`` (``sha256-<hex>``), so a node
    pulls a version by its digest from any repository that holds it, whatever human tag it was pushed under.

HTTP(S) mirror or local directory
    A model directory published as is: ``<base>/llmrack-model.json`` and ``<base>/<path>`` for each file.

On a node (the serving role's model store, ``serving_models_dir``, default ``NODE_STORE``)
    ``<store>/<hex>/`` holds one complete, verified version (its files and its manifest). A pull writes into
    ``<store>/<hex>.partial/`` and renames it to ``<store>/<hex>/`` only once every file has its manifest size
    and sha256, so a version directory is never half-installed; an interrupted pull resumes from the bytes
    already in the ``.partial`` directory. The newest ``keep`` versions stay (the running one always).
    ``NODE_RELEASES`` is the node's release history, newest first: ``[{"image": "sha256:...", "model":
    "sha256:..."}, ...]``, the first entry being what runs.

Verification levels: ``quick`` compares sizes, ``standard`` also hashes every byte.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

SCHEMA = 1
MANIFEST_FILE = "llmrack-model.json"
MANIFEST_MEDIA_TYPE = "application/vnd.llmrack.model.manifest.v1+json"
FILE_MEDIA_TYPE = "application/vnd.llmrack.model.file.v1"
TITLE_ANNOTATION = "org.opencontainers.image.title"
PARTIAL_SUFFIX = ".partial"
DEFAULT_KEEP = 3
# Where the serving role keeps them on a node (its defaults serving_models_dir, serving_releases_file and
# serving_model_agent); the validation suite reads the same places.
NODE_STORE = "/var/lib/llmrack/models"
NODE_RELEASES = "/var/lib/llmrack/releases.json"
NODE_AGENT = "/usr/local/lib/llmrack/llmrack-model-agent.pyz"
VERSION_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class VerifyLevel(StrEnum):
    quick = "quick"  # sizes
    standard = "standard"  # sizes and sha256 of every byte


class ManifestError(ValueError):
    """A manifest that does not follow this contract; the message names the field."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


@dataclass(frozen=True)
class Manifest:
    name: str
    files: tuple[FileEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.name,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ManifestError(f"{MANIFEST_FILE} is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ManifestError(f"{MANIFEST_FILE}: schema must be {SCHEMA}")
        name, files = doc.get("name"), doc.get("files")
        if not isinstance(name, str) or not name:
            raise ManifestError(f"{MANIFEST_FILE}: name must be a non-empty string")
        if not isinstance(files, list) or not files:
            raise ManifestError(f"{MANIFEST_FILE}: files must be a non-empty list")
        entries = []
        for i, f in enumerate(files):
            if not isinstance(f, dict):
                raise ManifestError(f"{MANIFEST_FILE}: files[{i}] must be an object")
            path, size, sha = f.get("path"), f.get("size"), f.get("sha256")
            if not isinstance(path, str) or not _safe_path(path):
                raise ManifestError(f"{MANIFEST_FILE}: files[{i}].path {path!r} must be a relative path without '..'")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ManifestError(f"{MANIFEST_FILE}: files[{i}].size must be a byte count")
            if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
                raise ManifestError(f"{MANIFEST_FILE}: files[{i}].sha256 must be 64 lower-case hex digits")
            entries.append(FileEntry(path, size, sha))
        paths = [e.path for e in entries]
        if paths != sorted(set(paths)):
            raise ManifestError(f"{MANIFEST_FILE}: files must be sorted by path, each path once")
        return cls(name=name, files=tuple(entries))


def _safe_path(path: str) -> bool:
    p = PurePosixPath(path)
    return bool(path) and not p.is_absolute() and ".." not in p.parts and "\\" not in path and path != MANIFEST_FILE


def version_of(manifest_bytes: bytes) -> str:
    """The version a manifest's stored bytes name."""
    return "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise ManifestError(f"model version {version!r} must be sha256: and 64 lower-case hex digits")
    return version


def version_hex(version: str) -> str:
    return check_version(version).split(":", 1)[1]


def version_tag(version: str) -> str:
    """The OCI tag every push adds, so a version can be pulled by its digest alone."""
    return f"sha256-{version_hex(version)}"


def version_dir(store: Path, version: str) -> Path:
    return store / version_hex(version)


def partial_dir(final: Path) -> Path:
    return final.with_name(final.name + PARTIAL_SUFFIX)
