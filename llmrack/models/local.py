"""A model directory on disk: write its manifest, read it back, verify the files against it."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from llmrack.contracts.model_manifest import (
    MANIFEST_FILE,
    PARTIAL_SUFFIX,
    FileEntry,
    Manifest,
    ManifestError,
    VerifyLevel,
    version_of,
)
from llmrack.models.errors import ModelError, VerifyError

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def model_files(directory: Path) -> list[str]:
    """Every regular file under the directory (relative, '/'-separated), except the manifest itself."""
    out = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.endswith(PARTIAL_SUFFIX))
        for name in files:
            rel = (Path(root) / name).relative_to(directory).as_posix()
            if rel != MANIFEST_FILE:
                out.append(rel)
    return sorted(out)


def build_manifest(directory: Path, name: str | None = None) -> Manifest:
    if not directory.is_dir():
        raise ModelError(f"{directory} is not a directory", hint="give the directory that holds config.json")
    paths = model_files(directory)
    if not paths:
        raise ModelError(f"{directory} holds no files")
    entries = []
    for rel in paths:
        path = directory / rel
        entries.append(FileEntry(rel, path.stat().st_size, sha256_file(path)))
    return Manifest(name=name or directory.resolve().name, files=tuple(entries))


def write_manifest(directory: Path, name: str | None = None) -> str:
    """Hash every file, write llmrack-model.json; returns the version. Unchanged files keep the same version."""
    data = build_manifest(directory, name).to_bytes()
    target = directory / MANIFEST_FILE
    if not target.exists() or target.read_bytes() != data:
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        tmp.chmod(0o644)
        tmp.replace(target)
    return version_of(data)


def read_manifest(directory: Path) -> tuple[Manifest, str]:
    """The directory's manifest and the version it names."""
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ModelError(f"{path} not found",
                         hint=f"write it with `llmrack model manifest {directory}` (or pull the model again)")
    data = path.read_bytes()
    try:
        return Manifest.from_bytes(data), version_of(data)
    except ManifestError as exc:
        raise ModelError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Verified:
    directory: Path
    version: str
    files: int
    bytes: int
    level: VerifyLevel


def check_files(directory: Path, manifest: Manifest, level: VerifyLevel) -> list[str]:
    """One line per file that does not match the manifest (empty when all match)."""
    problems = []
    for entry in manifest.files:
        path = directory / entry.path
        if not path.is_file():
            problems.append(f"{entry.path}: missing")
            continue
        size = path.stat().st_size
        if size != entry.size:
            problems.append(f"{entry.path}: {size} bytes, the manifest says {entry.size}")
        elif level is VerifyLevel.standard and (actual := sha256_file(path)) != entry.sha256:
            problems.append(f"{entry.path}: sha256 {actual[:16]}... but the manifest says {entry.sha256[:16]}...")
    listed = {e.path for e in manifest.files}
    # A file the manifest does not list could be loaded (an extra weight shard): it is refused too.
    problems += [f"{rel}: not in the manifest" for rel in model_files(directory) if rel not in listed]
    return problems


def verify(directory: Path, level: VerifyLevel = VerifyLevel.standard, version: str | None = None) -> Verified:
    """Raise VerifyError naming every file that does not match; ModelError for a missing/bad manifest."""
    manifest, actual = read_manifest(directory)
    if version is not None and actual != version:
        raise VerifyError(f"{directory} holds model version {actual}, not {version}")
    problems = check_files(directory, manifest, level)
    if problems:
        raise VerifyError(
            f"model {manifest.name} ({actual}) in {directory} does not verify ({level.value}):\n  "
            + "\n  ".join(problems),
            hint=f"remove {directory} and pull the version again (`llmrack model pull`)",
        )
    return Verified(directory, actual, len(manifest.files), manifest.total_bytes, level)
