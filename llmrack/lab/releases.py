"""New releases of the lab's serving image, for rollouts, canaries and benchmarks.

A release here is the lab's image under a new manifest digest (the same config and layers, one more annotation):
what the serving role pins and runs by changes, while nothing needs rebuilding. It reaches the nodes either way a
rack's does: pushed to the lab's registry (the lab's default) or as an OCI archive in the lab's mirror (a site
without a registry); `extra_vars` are what `serving.yml -e` takes to roll it out.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from llmrack.errors import LlmrackError
from llmrack.lab import registry
from llmrack.lab.nodes import MIRROR_ON_NODE
from llmrack.lab.state import LabState


@dataclass(frozen=True)
class Release:
    digest: str
    archive: Path
    extra_vars: list[str]  # for ansible-playbook: -e ... -e ...


def lab_archive(state: LabState) -> Path:
    """The image archive `lab up` put in the mirror (the built one, not a release made from it)."""
    found = [p for p in (state.lab_dir / "mirror" / "serving").glob("*.oci.tar") if not p.name.startswith("release-")]
    if len(found) != 1:
        raise LlmrackError(f"expected one serving image archive in {state.lab_dir / 'mirror' / 'serving'}, "
                           f"found {len(found)}")
    return found[0]


def make_release(state: LabState, revision: str, *, via: str = "registry", extra_bytes: int = 0) -> Release:
    """A new release named `revision` of the lab's image, published `via` the registry or the mirror's archive.
    `extra_bytes` > 0 adds a layer of that many random-looking bytes (a release that is slow to pull)."""
    serving_dir = state.lab_dir / "mirror" / "serving"
    archive = serving_dir / f"release-{revision}.oci.tar"
    digest = rewrite_manifest(lab_archive(state), archive, revision, extra_bytes)
    if via == "archive":
        return Release(digest, archive, ["-e", f"serving_image_digest={digest}",
                                         "-e", f"serving_image_archive_url=file://{MIRROR_ON_NODE}/serving/{archive.name}",
                                         "-e", "serving_image_repository="])
    if via != "registry":
        raise ValueError(f"via must be registry or archive, not {via!r}")
    reg = registry.load(state)
    if reg is None:
        raise LlmrackError(f"the lab in {state.lab_dir} has no registry")
    registry.push_image(reg, archive)
    return Release(digest, archive, ["-e", f"serving_image_digest={digest}"])


def rewrite_manifest(src: Path, dst: Path, revision: str, extra_bytes: int = 0) -> str:
    """Copy the OCI archive `src` to `dst` with its manifest annotated with `revision` (and, with `extra_bytes`,
    one more layer); returns the new manifest digest."""
    with tarfile.open(src) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        entry = index["manifests"][0]
        old = tar.extractfile(f"blobs/sha256/{entry['digest'].split(':', 1)[1]}").read()  # type: ignore[union-attr]
        manifest = json.loads(old)
        manifest.setdefault("annotations", {})["org.opencontainers.image.revision"] = revision
        new_files: dict[str, bytes] = {}
        if extra_bytes:
            layer = _padding_layer(revision, extra_bytes)
            layer_digest = hashlib.sha256(layer).hexdigest()
            new_files[f"blobs/sha256/{layer_digest}"] = layer
            manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": f"sha256:{layer_digest}", "size": len(layer)})
            config_digest = manifest["config"]["digest"].split(":", 1)[1]
            config = json.loads(tar.extractfile(f"blobs/sha256/{config_digest}").read())  # type: ignore[union-attr]
            config["rootfs"]["diff_ids"].append(f"sha256:{layer_digest}")
            config_blob = json.dumps(config, separators=(",", ":")).encode()
            config_new = hashlib.sha256(config_blob).hexdigest()
            new_files[f"blobs/sha256/{config_new}"] = config_blob
            manifest["config"].update(digest=f"sha256:{config_new}", size=len(config_blob))
        blob = json.dumps(manifest, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        entry.update(digest=digest, size=len(blob))
        ref = entry.setdefault("annotations", {}).get("org.opencontainers.image.ref.name", "llmrack-serving")
        entry["annotations"]["org.opencontainers.image.ref.name"] = f"{ref.split(':')[0]}:{revision}"
        new_files["index.json"] = json.dumps(index).encode()
        new_files[f"blobs/sha256/{digest.split(':', 1)[1]}"] = blob
        partial = dst.with_name(dst.name + ".part")
        with tarfile.open(partial, "w") as out:
            for member in tar:
                if member.name in new_files:
                    continue
                out.addfile(member, tar.extractfile(member) if member.isfile() else None)
            for name, data in new_files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                out.addfile(info, io.BytesIO(data))
    partial.chmod(0o644)
    partial.replace(dst)
    return digest


def _padding_layer(revision: str, size: int) -> bytes:
    """An uncompressed layer holding one file of `size` bytes that do not compress (a hash chain)."""
    chunks: list[bytes] = []
    block = hashlib.sha256(revision.encode()).digest()
    while len(chunks) * 32 < size:
        block = hashlib.sha256(block).digest()
        chunks.append(block)
    data = b"".join(chunks)[:size]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"opt/llmrack-padding-{revision}")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
