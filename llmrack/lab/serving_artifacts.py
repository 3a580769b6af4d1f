"""What the lab serves: the CPU serving image and a tiny model, built once and cached, put in the lab mirror.

They come from the library behind `llmrack image build` and `llmrack model make-tiny` (llmrack.images.build,
serving.model.tiny); the serving role installs them from the mirror (mounted at /srv/mirror on every node) as it
would from a rack's mirror. The lab's deployment spec is the file data/lab-spec.yaml of this package.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmrack.images import build as image_build
from llmrack.lab.nodes import MIRROR_ON_NODE
from serving.model.tiny import make_tiny

MODEL_NAME = "tiny-qwen2"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
SERVED_NAME = "tiny"
LAB_SPEC = Path(__file__).resolve().parent / "data" / "lab-spec.yaml"


@dataclass(frozen=True)
class ServingArtifacts:
    archive: Path
    digest: str
    reference: str
    model_dir: Path
    # Set once the model is in the lab's registry (llmrack.lab.registry): nodes pull that version.
    model_source: str = ""
    model_version: str = ""
    # Set once the image is in the lab's registry: nodes pull <image_repository>@<digest> from it, over plain
    # HTTP on the lab's closed network (containerd's hosts.toml for registry_host says so).
    image_repository: str = ""
    registry_host: str = ""

    @property
    def ansible_vars(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "serving_image_digest": self.digest,
            "serving_image_reference": self.reference,
        }
        if self.image_repository:
            out["serving_image_repository"] = self.image_repository
            out["containerd_registries"] = {self.registry_host: {"plain_http": True}}
        else:
            out["serving_image_archive_url"] = f"file://{MIRROR_ON_NODE}/serving/{self.archive.name}"
        if not self.model_version:
            out["serving_model_dir"] = f"{MIRROR_ON_NODE}/models/{MODEL_NAME}"
        return out


SOURCE_ROOT = Path(__file__).resolve().parents[2]
# What the served code is built from: a change here means a new image (the lab runs only `python -m serving`).
IMAGE_INPUTS = ("serving", "images", "pyproject.toml")
# The vLLM image holds no llmrack code: only its Containerfile and the engine's pins (llmrack.images.vllm).
VLLM_IMAGE_INPUTS = ("images/cpu-vllm.Containerfile", "llmrack/images/vllm.py")
# The image each engine serves from in the lab (its nodes are CPUs).
VARIANT_OF_ENGINE = {"llmrack": "cpu", "vllm": "cpu-vllm"}


def cache_dir(lab_dir: Path) -> Path:
    """Shared by every lab on this machine (a test lab reuses what `llmrack lab up` built), outside the lab dir."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "llmrack" / "lab"


def source_key(variant: str = "cpu") -> str:
    """Hash of the sources the image is built from, so a stale cached image is never served."""
    digest = hashlib.sha256()
    for name in VLLM_IMAGE_INPUTS if variant == "cpu-vllm" else IMAGE_INPUTS:
        root = SOURCE_ROOT / name
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            # The vLLM Containerfiles build other images (the lab's cpu-vllm has a key of its own).
            if "__pycache__" in f.parts or f.suffix == ".pyc" or f.name.endswith("-vllm.Containerfile"):
                continue
            digest.update(str(f.relative_to(SOURCE_ROOT)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def api_key_file(lab_dir: Path) -> Path:
    return lab_dir / "api-key"


def api_key(lab_dir: Path) -> str:
    path = api_key_file(lab_dir)
    if not path.exists():
        lab_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("lab-" + secrets.token_urlsafe(24) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and dst.stat().st_ino == src.stat().st_ino:
        return
    dst.unlink(missing_ok=True)
    os.link(src, dst)


def serving_image(lab_dir: Path, mirror: Path, variant: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The serving image of `variant` (built once per source key, cached), linked into the mirror; its image.json
    with `archive` made absolute."""
    image_dir = cache_dir(lab_dir) / (f"serving-image-{source_key()}" if variant == "cpu"
                                      else f"serving-image-{variant}-{source_key(variant)}")
    meta = image_dir / "image.json"
    if not meta.exists():
        log(f"building the {variant} serving image (llmrack image build --variant {variant}; cached afterwards)")
        # Builds run behind the same TLS-inspecting egress as the nodes: trust the host's local CAs.
        image_build.build(image_build.BuildOptions(
            variant=variant, out=image_dir, cache_dir=image_build.default_cache_dir(),
            source_dir=image_build.default_source_dir(), extra_ca=sorted(HOST_CA_DIR.glob("*.crt")),
        ), log=log)
    info: dict[str, Any] = json.loads(meta.read_text())
    archive = Path(info["archive"])
    info["archive"] = archive if archive.is_absolute() else image_dir / archive
    _link(info["archive"], mirror / "serving" / info["archive"].name)
    return info


def prepare(lab_dir: Path, mirror: Path, log: Callable[[str], None],
            engine: str = "llmrack", arch: str = "qwen2") -> ServingArtifacts:
    """The image of `engine` (llmrack or vllm) and the tiny model of `arch` (qwen2; deepseek_v3 for a replica
    across nodes), in the mirror."""
    cache = cache_dir(lab_dir)
    info = serving_image(lab_dir, mirror, VARIANT_OF_ENGINE[engine], log)
    archive = info["archive"]
    model_dir = cache / "models" / (MODEL_NAME if arch == "qwen2" else f"tiny-{arch}")
    if not (model_dir / "config.json").exists():
        log(f"writing a tiny {arch} model (llmrack model make-tiny)")
        make_tiny(arch, model_dir)
    for f in model_dir.rglob("*"):
        if f.is_file():
            # The serving process runs as an unprivileged user in the image: weights must be world-readable.
            f.chmod(0o644)
            _link(f, mirror / "models" / MODEL_NAME / f.relative_to(model_dir))
    return ServingArtifacts(archive=archive, digest=info["digest"], reference=info.get("reference", ""),
                            model_dir=model_dir)


def deployment(artifacts: ServingArtifacts | None, engine: str = "auto",
               tensor_parallel: int | str = "auto", pipeline_parallel: int | str = "auto") -> dict[str, Any]:
    """The lab's deployment spec (data/lab-spec.yaml, parsed by llmrack.spec like any other), serving the model
    the lab built when there is one; `engine` and `tensor_parallel` are its serving.engine and
    serving.tensor_parallel (`llmrack lab up --engine vllm`)."""
    spec: dict[str, Any] = yaml.safe_load(LAB_SPEC.read_text())
    if artifacts is not None:
        spec["model"] = {
            "name": MODEL_NAME,
            "config": str(artifacts.model_dir / "config.json"),
            "source": artifacts.model_source or f"{MIRROR_ON_NODE}/models/{MODEL_NAME}",
            "served_name": SERVED_NAME,
        }
        if artifacts.model_version:
            spec["model"]["version"] = artifacts.model_version
    spec["serving"].update(engine=engine, tensor_parallel=tensor_parallel)
    if pipeline_parallel != "auto":
        # A replica of pipeline_parallel nodes, one stage each (docs/multinode.md).
        spec["serving"]["pipeline_parallel"] = pipeline_parallel
        spec["nodes"] = max(int(spec["nodes"]), int(pipeline_parallel) * int(spec["serving"]["replicas"]))
    return spec
