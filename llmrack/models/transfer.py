"""Pull a model version into a directory (resumable, verified, renamed into place) and push one to a registry."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmrack.contracts.model_manifest import (
    FILE_MEDIA_TYPE,
    MANIFEST_FILE,
    MANIFEST_MEDIA_TYPE,
    TITLE_ANNOTATION,
    Manifest,
    ManifestError,
    VerifyLevel,
    check_version,
    partial_dir,
    version_of,
    version_tag,
)
from llmrack.models import local
from llmrack.models.errors import ModelError, TransferError, VerifyError
from llmrack.models.sources import OciSource, Source, parse_source

Log = Callable[[str], None]


@dataclass(frozen=True)
class PullResult:
    version: str
    directory: Path
    total_bytes: int
    fetched_bytes: int  # bytes this run transferred
    resumed_bytes: int  # bytes an earlier, interrupted run had already transferred
    seconds: float
    changed: bool

    def as_dict(self) -> dict[str, object]:
        return {"version": self.version, "directory": str(self.directory), "total_bytes": self.total_bytes,
                "fetched_bytes": self.fetched_bytes, "resumed_bytes": self.resumed_bytes,
                "seconds": round(self.seconds, 3), "changed": self.changed}


class _Throttle:
    """Caps a transfer's rate (bytes/s), e.g. to leave a shared uplink to serving traffic."""

    def __init__(self, rate: float | None) -> None:
        self.rate, self.start, self.sent = rate, time.monotonic(), 0

    def __call__(self, n: int) -> None:
        self.sent += n
        if self.rate:
            ahead = self.sent / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)


def pull(source: Source | str, dest: Path, version: str | None = None, *, max_rate: float | None = None,
         log: Log = lambda _m: None) -> PullResult:
    """Make `dest` hold the model version: nothing to do if it already does (sizes checked), else fetch into
    `<dest>.partial` (resuming what an interrupted pull left there), verify every file's sha256 and only then
    rename it to `dest`. A file that does not match its manifest is removed and named in the error."""
    src = parse_source(source) if isinstance(source, str) else source
    if version is not None:
        try:
            check_version(version)
        except ManifestError as exc:
            raise ModelError(str(exc)) from None
    t0 = time.monotonic()
    if dest.exists():
        manifest, have = local.read_manifest(dest)
        if version is not None and have != version:
            raise ModelError(f"{dest} already holds model version {have}, not {version}",
                             hint="pull into another directory (a node's store names each version by its digest)")
        local.verify(dest, VerifyLevel.quick)
        return PullResult(have, dest, manifest.total_bytes, 0, 0, time.monotonic() - t0, changed=False)

    data = src.manifest_bytes(version)
    actual = version_of(data)
    if version is not None and actual != version:
        raise TransferError(f"{src.describe()} holds model version {actual}, not {version}")
    try:
        manifest = Manifest.from_bytes(data)
    except ManifestError as exc:
        raise TransferError(f"{src.describe()}: {exc}") from None

    staging = partial_dir(dest)
    staged = staging / MANIFEST_FILE
    if staging.exists() and (not staged.is_file() or staged.read_bytes() != data):
        log(f"{staging} holds another version's partial download: starting over")
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(data)

    throttle = _Throttle(max_rate)
    fetched = resumed = 0
    for entry in manifest.files:
        target = staging / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        have_bytes = target.stat().st_size if target.exists() else 0
        if have_bytes > entry.size:
            target.unlink()
            have_bytes = 0
        resumed += have_bytes
        if have_bytes == entry.size:
            continue
        if have_bytes:
            log(f"{entry.path}: resuming at {have_bytes} of {entry.size} bytes")
        with target.open("ab") as out:
            for block in src.read(entry, have_bytes):
                out.write(block)
                fetched += len(block)
                throttle(len(block))
        if (size := target.stat().st_size) != entry.size:
            raise TransferError(f"{entry.path}: {src.describe()} delivered {size} of {entry.size} bytes",
                                hint="run the pull again: it resumes from what arrived")

    problems = local.check_files(staging, manifest, VerifyLevel.standard)
    if problems:
        for line in problems:
            (staging / line.split(": ", 1)[0]).unlink(missing_ok=True)
        raise VerifyError(
            f"model version {actual} from {src.describe()} refused, files do not match its manifest:\n  "
            + "\n  ".join(problems),
            hint="those files were removed from the partial download; fix the source and pull again",
        )
    for path in [staging, *staging.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # the serving process runs unprivileged
    staging.rename(dest)
    return PullResult(actual, dest, manifest.total_bytes, fetched, resumed, time.monotonic() - t0, changed=True)


@dataclass(frozen=True)
class PushResult:
    version: str
    references: list[str]
    total_bytes: int
    seconds: float


def push(directory: Path, ref: str, *, chunk_size: int = 64 << 20, log: Log = lambda _m: None) -> PushResult:
    """Push a model directory as an OCI artifact (oras): config = the manifest, one layer per file; tagged with
    the reference's tag and with the version's own tag. Blobs the registry already holds are not sent again,
    so an interrupted push resumes file by file."""
    target = parse_source(ref)
    if not isinstance(target, OciSource) or target.digest:
        raise ModelError(f"{ref!r} is not an OCI reference to push to",
                         hint="write oci://HOST[:PORT]/REPOSITORY[:TAG] (oci+http:// for a plain-HTTP registry)")
    t0 = time.monotonic()
    if (directory / MANIFEST_FILE).exists():
        version = local.verify(directory, VerifyLevel.standard).version
    else:
        version = local.write_manifest(directory)
        log(f"wrote {directory / MANIFEST_FILE}")
    manifest, _ = local.read_manifest(directory)
    base = directory.resolve()
    files = [f"{base / e.path}:{FILE_MEDIA_TYPE}" for e in manifest.files]
    refs = [target.reference(target.tag or "latest"), target.reference(version_tag(version))]
    reg = target.registry()
    with tempfile.TemporaryDirectory() as tmp:
        # oras titles a layer with the file's base name; the annotations file gives it the relative path.
        annotations = Path(tmp) / "annotations.json"
        annotations.write_text(json.dumps({str(base / e.path): {TITLE_ANNOTATION: e.path} for e in manifest.files}))
        try:
            reg.push(target=refs[0], files=files, disable_path_validation=True, annotation_file=str(annotations),
                     manifest_config=f"{base / MANIFEST_FILE}:{MANIFEST_MEDIA_TYPE}",
                     do_chunked=True, chunk_size=chunk_size, quiet=True)
            pushed = reg.get_manifest(refs[0])
            resp = reg.upload_manifest(pushed, reg.get_container(refs[1]))
        except Exception as exc:  # oras raises ValueError/requests errors with the registry's message
            raise TransferError(f"push to {target.describe()} failed: {exc}",
                                hint="run it again: blobs already in the registry are not sent again") from None
        if resp.status_code not in (200, 201):
            raise TransferError(f"tagging {refs[1]} failed: HTTP {resp.status_code}")
    prefix = "oci+http://" if target.plain_http else "oci://"
    return PushResult(version, [prefix + r for r in refs], manifest.total_bytes, time.monotonic() - t0)


def installed_versions(store: Path) -> list[Path]:
    """Complete version directories in a store, most recently used first."""
    dirs = [d for d in store.iterdir() if d.is_dir() and len(d.name) == 64 and (d / MANIFEST_FILE).is_file()] \
        if store.is_dir() else []
    return sorted(dirs, key=lambda d: d.stat().st_mtime, reverse=True)


def mark_used(directory: Path) -> None:
    """A version switched to counts as the newest for `prune` (it is what a rollback returns to)."""
    os.utime(directory)


def prune(store: Path, keep: int, protect: list[str]) -> list[Path]:
    """Remove all but the `keep` most recently used versions; protected ones (the running version and the one
    being rolled out) are never removed and count towards `keep`. Partial downloads of removed versions go too."""
    if keep < 1:
        raise ModelError(f"keep must be at least 1, got {keep}")
    protected = {p.split(":", 1)[-1] for p in protect if p}
    versions = installed_versions(store)
    kept = [d for d in versions if d.name in protected]
    removed = []
    for d in versions:
        if d.name in protected:
            continue
        if len(kept) < keep:
            kept.append(d)
            continue
        shutil.rmtree(d)
        shutil.rmtree(partial_dir(d), ignore_errors=True)
        removed.append(d)
    return removed
