"""`llmrack image build`: the serving image, built with no container registry at all.

Steps (each cached under the cache directory, so a second build takes seconds):
  1. base     Debian 12 from `debootstrap --variant=minbase`, imported with `podman import`; referenced
              by digest (localhost/llmrack-debian@sha256:...), exactly as a registry base would be.
  2. wheels   the host's pip downloads every dependency (torch from the host's own wheel mirror, whose
              CPU build a pip inside the container could not see) and builds the llmrack wheel.
  3. build    `podman build --pull=never` of images/<variant>.Containerfile over that context.
  4. export   `podman save --format oci-archive`; the manifest digest is the image's identity.
  5. SBOM     CycloneDX from the archive's dpkg database and site-packages (llmrack.images.sbom).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmrack import __version__
from llmrack.errors import LlmrackError, UsageError
from llmrack.images import vllm as vllm_images
from llmrack.images.sbom import write_sbom
from llmrack.scan.oci import open_image

VARIANTS = ("cpu", "cuda", "ascend", *vllm_images.ENGINES)
# Variants built on the local debootstrapped Debian base when no --base-image is given.
LOCAL_BASE_VARIANTS = ("cpu", "cpu-vllm")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
DEFAULT_SUITE = "bookworm"
IMAGE_NAME = "localhost/llmrack-serving"
BASE_NAME = "localhost/llmrack-debian"
# podman's defaults fail in unprivileged sandboxes and some CI runners: it sets ulimits the runner may not
# raise (crun: setrlimit RLIMIT_NOFILE) and crun rejects hybrid cgroups. Used only when the caller has
# not chosen a containers.conf of their own (CONTAINERS_CONF).
CONTAINERS_CONF = """\
# Written by llmrack image build; see llmrack/images/build.py for why.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
"""


class BuildError(LlmrackError):
    """A build step failed; the message carries the tool's last output lines."""


@dataclass
class BuildOptions:
    variant: str
    out: Path
    cache_dir: Path
    source_dir: Path
    base_image: str | None = None
    apt_mirror: str = DEFAULT_MIRROR
    security_mirror: str = DEFAULT_SECURITY_MIRROR
    suite: str = DEFAULT_SUITE
    refresh_base: bool = False
    extra_ca: list[Path] = field(default_factory=list)
    torch: str | None = None
    extra_wheels: list[str] = field(default_factory=list)


@dataclass
class BuildResult:
    variant: str
    digest: str
    archive: Path
    sbom: Path
    image_json: Path
    reference: str
    base_image: str
    image_size_bytes: int
    archive_size_bytes: int
    debian_packages: int
    python_distributions: int
    timings_s: dict[str, float]


def default_cache_dir() -> Path:
    env = os.environ.get("LLMRACK_CACHE_DIR")
    if env:
        return Path(env) / "images"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmrack" / "images"


def default_source_dir() -> Path:
    """The llmrack source tree: this checkout when installed editable, else the current directory."""
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file() and (here / "images").is_dir():
        return here
    return Path.cwd()


class _Runner:
    def __init__(self, cache_dir: Path, log: Callable[[str], None]) -> None:
        self.log = log
        self.env = dict(os.environ)
        if "CONTAINERS_CONF" not in self.env:
            conf = cache_dir / "containers.conf"
            if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
                conf.write_text(CONTAINERS_CONF)
            self.env["CONTAINERS_CONF"] = str(conf)

    def run(self, argv: Sequence[str], *, what: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            capture: bool = True) -> str:
        proc = subprocess.run(list(argv), check=False, cwd=cwd, env={**self.env, **(env or {})}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-40:])
            raise BuildError(f"{what} failed (exit {proc.returncode}): {' '.join(argv[:4])} ...\n{tail}")
        return proc.stdout.strip() if capture else ""


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        raise UsageError(f"{tool} is not installed", hint=f"apt-get install {package} (scripts/setup.sh does)")
    return path


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def ensure_debian_base(run: _Runner, cache_dir: Path, mirror: str, suite: str, security_mirror: str,
                       refresh: bool = False) -> str:
    """A minimal Debian root filesystem as a local image; returns its reference by digest.

    Cached until `refresh`: a refreshed base (new digest) rebuilds every layer, with today's security updates.
    """
    key = _key("minbase", suite, mirror, security_mirror)
    tag = f"{BASE_NAME}:{suite}-{key}"
    podman = _need("podman", "podman")
    tarball = cache_dir / "base" / f"{suite}-{key}.tar"
    if refresh:
        tarball.unlink(missing_ok=True)
        subprocess.run([podman, "rmi", "--force", tag], check=False, env=run.env, capture_output=True)
    exists = subprocess.run([podman, "image", "exists", tag], check=False, env=run.env).returncode == 0
    if not exists:
        if not tarball.exists():
            debootstrap = _need("debootstrap", "debootstrap")
            tarball.parent.mkdir(parents=True, exist_ok=True)
            rootfs = Path(tempfile.mkdtemp(prefix=f"rootfs-{key}-", dir=tarball.parent))
            try:
                run.log(f"debootstrap --variant=minbase {suite} from {mirror} (once; cached)")
                run.run([debootstrap, "--variant=minbase", suite, str(rootfs), mirror], what="debootstrap")
                # Files whose content changes on every bootstrap would make identical bases differ.
                for volatile in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin"):
                    (rootfs / volatile).unlink(missing_ok=True)
                shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
                # debootstrap configures only `<suite> main`: without -updates and -security no image built on
                # this base would ever receive a security fix (and the scan gate would fail it for that).
                (rootfs / "etc/apt/sources.list").write_text(
                    f"deb {mirror} {suite} main\ndeb {mirror} {suite}-updates main\n"
                    f"deb {security_mirror} {suite}-security main\n")
                (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
                partial = tarball.with_suffix(".tar.part")
                run.run(["tar", "--numeric-owner", "--sort=name", "-C", str(rootfs), "-cf", str(partial), "."],
                        what="tar of the Debian root filesystem")
                partial.rename(tarball)
            finally:
                shutil.rmtree(rootfs, ignore_errors=True)
        run.log(f"podman import {tarball.name} as {tag}")
        run.run([podman, "import", "--change", 'CMD ["/bin/bash"]', "--message",
                 f"debootstrap --variant=minbase {suite} {mirror}", str(tarball), tag], what="podman import")
    digest = run.run([podman, "image", "inspect", "--format", "{{.Digest}}", tag], what="podman image inspect")
    return f"{BASE_NAME}@{digest}"


def _project_requirements(source_dir: Path) -> list[str]:
    project = tomllib.loads((source_dir / "pyproject.toml").read_text())["project"]
    serving = project.get("optional-dependencies", {}).get("serving", [])
    return [r for r in [*project.get("dependencies", []), *serving] if not r.replace(" ", "").startswith("torch")]


def _host_torch() -> str:
    try:
        return f"torch=={importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError as exc:
        raise UsageError("torch is not installed on the build host: give --torch 'torch==X.Y.Z'") from exc


def ensure_wheelhouse(run: _Runner, cache_dir: Path, requirements: list[str]) -> Path:
    """Every dependency as a wheel, downloaded by the host's pip (its index, mirrors and CA settings)."""
    key = _key(sys.version.split()[0], *sorted(requirements))
    house = cache_dir / "wheels" / key
    stamp = house / ".complete"
    if stamp.exists():
        return house
    house.mkdir(parents=True, exist_ok=True)
    run.log(f"downloading {len(requirements)} requirements and their dependencies as wheels (once; cached)")
    run.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(house),
             *requirements], what="pip download")
    stamp.write_text("\n".join(requirements) + "\n")
    return house


def _vllm_houses(run: _Runner, opts: BuildOptions) -> dict[str, Path | list[Path]]:
    """torch/, deps/ and engine/ of a vLLM variant: the engine wheel `--no-deps`, its requirements resolved once
    on the host together with torch (one consistent set), minus what does not load (llmrack.images.vllm)."""
    dist = vllm_images.engine(opts.variant)
    engine_house = opts.cache_dir / "wheels" / f"engine-{dist.distribution}-{dist.version}"
    stamp = engine_house / ".complete"
    if not stamp.exists():
        engine_house.mkdir(parents=True, exist_ok=True)
        run.log(f"downloading {dist.requirement} (once; cached)")
        run.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "--dest", str(engine_house), dist.requirement], what="pip download")
        if dist.needs_metadata:
            vllm_images.metadata_wheel(engine_house, dist)
        stamp.write_text(dist.requirement + "\n")
    prefix = dist.distribution.replace("-", "_") + "-"
    engine_wheel = next(p for p in engine_house.glob("*.whl") if p.name.startswith(prefix))
    torch = opts.torch or _host_torch()
    # torch is the build host's (its CPU build, or --torch), whatever exact build the engine's metadata names.
    requirements = [r for r in vllm_images.engine_requirements(engine_wheel, (*dist.excluded, "torch"))]
    deps = ensure_wheelhouse(run, opts.cache_dir, [torch, *opts.extra_wheels, *requirements])
    wheels = sorted(deps.glob("*.whl"))
    torch_wheels = [w for w in wheels if vllm_images.wheel_name(w) == "torch"]
    rest = [w for w in wheels if vllm_images.wheel_name(w) not in {"torch", *dist.excluded}]
    return {"torch": torch_wheels, "deps": rest, "engine": sorted(engine_house.glob("*.whl"))}


def vllm_venv(dest: Path, log: Callable[[str], None], variant: str = "cpu-vllm",
              cache_dir: Path | None = None) -> Path:
    """A virtualenv on this host with exactly the wheels the `variant` image gets (for `llmrack bench serve
    --engine vllm`); created once, returns its `vllm` executable."""
    exe = dest / "bin" / "vllm"
    if (dest / ".complete").exists() and exe.exists():
        return exe
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    run = _Runner(cache, log)
    opts = BuildOptions(variant=variant, out=dest, cache_dir=cache, source_dir=default_source_dir())
    houses = _vllm_houses(run, opts)
    shutil.rmtree(dest, ignore_errors=True)
    log(f"creating {dest} with {variant}'s wheels (once; a few minutes)")
    run.run([sys.executable, "-m", "venv", str(dest)], what="python -m venv")
    pip = [str(dest / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    for sub in ("torch", "deps", "engine"):
        wheels = houses[sub]
        assert isinstance(wheels, list)
        run.run([*pip, *map(str, wheels)], what=f"pip install ({sub})")
    (dest / ".complete").write_text(variant + "\n")
    return exe


def build_project_wheel(run: _Runner, source_dir: Path, dest: Path) -> Path:
    """The llmrack wheel, reproducible (SOURCE_DATE_EPOCH = last commit) so an unchanged tree keeps its layer."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    epoch = _git(source_dir, "log", "-1", "--format=%ct") or "315532800"
    with tempfile.TemporaryDirectory(prefix="llmrack-src-") as tmp:
        # Build from a copy: an in-tree build would leave build/ and egg-info in the checkout.
        src = Path(tmp) / "src"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
        src.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source_dir / name).is_file():
                shutil.copy2(source_dir / name, src / name)
        for pkg in ("llmrack", "serving", "infra"):
            if (source_dir / pkg).is_dir():
                shutil.copytree(source_dir / pkg, src / pkg, ignore=ignore)
        run.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                 "--wheel-dir", str(dest), str(src)], what="building the llmrack wheel",
                env={"SOURCE_DATE_EPOCH": epoch})
    wheels = list(dest.glob("llmrack-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one llmrack wheel in {dest}, found {len(wheels)}")
    return wheels[0]


def _git(source_dir: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(source_dir), *args], check=False, capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _stage_context(ctx: Path, houses: dict[str, Path | list[Path]], wheel_dir: Path, extra_ca: list[Path]) -> None:
    """`houses`: context directory -> a wheelhouse (all its wheels) or the wheels themselves."""
    for sub in (*houses, "ca"):
        shutil.rmtree(ctx / sub, ignore_errors=True)
        (ctx / sub).mkdir(parents=True)
    for sub, house in houses.items():
        for whl in house if isinstance(house, list) else house.glob("*.whl"):
            if whl.name.startswith("llmrack-"):
                continue
            try:
                os.link(whl, ctx / sub / whl.name)  # hard links: no copy of a 200 MB torch wheel per build
            except OSError:
                shutil.copy2(whl, ctx / sub / whl.name)
    shutil.rmtree(ctx / "app", ignore_errors=True)
    shutil.copytree(wheel_dir, ctx / "app")
    bundle = b""
    for ca in extra_ca:
        try:
            data = ca.read_bytes()
        except OSError as exc:
            raise UsageError(f"--extra-ca-certs {ca}: {exc.strerror}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise UsageError(f"--extra-ca-certs {ca}: no PEM certificate in it")
        bundle += data.rstrip(b"\n") + b"\n"
    (ctx / "ca" / "extra-ca.crt").write_bytes(bundle)


def build(opts: BuildOptions, log: Callable[[str], None]) -> BuildResult:
    """Build one variant. Builds sharing a cache directory take turns (they share its context directories)."""
    opts.cache_dir.mkdir(parents=True, exist_ok=True)
    with (opts.cache_dir / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build using {opts.cache_dir}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(opts, log)


def _build(opts: BuildOptions, log: Callable[[str], None]) -> BuildResult:
    if opts.variant not in VARIANTS:
        raise UsageError(f"unknown variant {opts.variant!r}: choose one of {', '.join(VARIANTS)}")
    containerfile = opts.source_dir / "images" / f"{opts.variant}.Containerfile"
    if not containerfile.is_file():
        raise UsageError(f"{containerfile} not found", hint="run from the llmrack checkout or give --source DIR")
    if opts.base_image is not None and "@sha256:" not in opts.base_image:
        raise UsageError(f"--base-image {opts.base_image!r} must be pinned by digest (NAME@sha256:...)")
    if opts.variant not in LOCAL_BASE_VARIANTS and opts.base_image is None:
        raise UsageError(f"the {opts.variant} variant needs --base-image (its vendor runtime image, by digest)",
                         hint=f"see images/{opts.variant}.Containerfile and docs/images.md")
    podman = _need("podman", "podman")
    for d in (opts.cache_dir, opts.out):
        d.mkdir(parents=True, exist_ok=True)
    run = _Runner(opts.cache_dir, log)
    timings: dict[str, float] = {}

    t = time.monotonic()
    base = opts.base_image or ensure_debian_base(run, opts.cache_dir, opts.apt_mirror, opts.suite,
                                                 opts.security_mirror, opts.refresh_base)
    timings["base"] = time.monotonic() - t

    t = time.monotonic()
    ctx = opts.cache_dir / "context" / opts.variant
    app_dir = opts.cache_dir / "context" / f"{opts.variant}-app"
    houses: dict[str, Path | list[Path]]
    if opts.variant in vllm_images.ENGINES:
        houses = _vllm_houses(run, opts)
        shutil.rmtree(app_dir, ignore_errors=True)
        app_dir.mkdir(parents=True)  # the vLLM image runs `vllm serve`: no llmrack code in it
    else:
        # torch apart from the rest: its layer (most of the image) then survives changes to other dependencies.
        houses = {
            "torch": ensure_wheelhouse(run, opts.cache_dir, [opts.torch or _host_torch()]),
            "deps": ensure_wheelhouse(run, opts.cache_dir,
                                      [*opts.extra_wheels, *_project_requirements(opts.source_dir)]),
        }
        build_project_wheel(run, opts.source_dir, app_dir)
    _stage_context(ctx, houses, app_dir, opts.extra_ca)
    timings["wheels"] = time.monotonic() - t

    t = time.monotonic()
    tag = f"{IMAGE_NAME}:{opts.variant}-{__version__}"
    revision = _git(opts.source_dir, "rev-parse", "HEAD") or "unknown"
    source = _git(opts.source_dir, "config", "--get", "remote.origin.url") or "https://github.com/llmrack/llmrack"
    log(f"podman build {containerfile.name} on {base}")
    args = [podman, "build", "--pull=never", "--layers", "--format", "docker", "-f", str(containerfile),
            "-t", tag, "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VERSION={__version__}",
            "--build-arg", f"REVISION={revision}", "--build-arg", f"SOURCE={source}"]
    if opts.base_image is not None and opts.apt_mirror != DEFAULT_MIRROR:
        # A registry base keeps its own sources; the local base already has the chosen mirrors.
        args += ["--build-arg", f"APT_MIRROR={opts.apt_mirror}",
                 "--build-arg", f"APT_SECURITY_MIRROR={opts.security_mirror}"]
    run.run([*args, str(ctx)], what="podman build")
    timings["build"] = time.monotonic() - t

    t = time.monotonic()
    archive = opts.out / f"llmrack-serving-{opts.variant}.oci.tar"
    sbom = opts.out / f"llmrack-serving-{opts.variant}.cdx.json"
    image_id = run.run([podman, "image", "inspect", "--format", "{{.Id}}", tag], what="podman image inspect")
    previous = _previous_outputs(opts.out / "image.json", image_id, archive, sbom)
    if previous is not None:
        # Same image as the archive already in --out: exporting again would only spend a minute recompressing.
        log(f"image unchanged ({image_id[:12]}): keeping {archive.name}")
        digest, reference = previous["digest"], previous["reference"]
        counts = _sbom_counts(sbom)
        timings["export"] = time.monotonic() - t
    else:
        partial = archive.with_name(archive.name + ".part")
        partial.unlink(missing_ok=True)
        run.run([podman, "save", "--format", "oci-archive", "-o", str(partial), tag], what="podman save")
        partial.replace(archive)
        with open_image(archive) as image:
            digest = image.manifest_digest
            reference = image.ref_name or tag
        timings["export"] = time.monotonic() - t
        t = time.monotonic()
        inv = write_sbom(archive, sbom, name=reference.rsplit(":", 1)[0])
        counts = (len(inv.debian), len(inv.python))
        timings["sbom"] = time.monotonic() - t

    size = int(run.run([podman, "image", "inspect", "--format", "{{.Size}}", tag], what="podman image inspect"))
    image_json = opts.out / "image.json"
    image_json.write_text(json.dumps({
        "variant": opts.variant,
        "digest": digest,
        "archive": archive.name,
        "sbom": sbom.name,
        "reference": reference,
        "base_image": base,
        "revision": revision,
        "version": __version__,
        "image_id": image_id,
        "image_size_bytes": size,
        "archive_size_bytes": archive.stat().st_size,
    }, indent=2) + "\n")
    return BuildResult(opts.variant, digest, archive, sbom, image_json, reference, base, size,
                       archive.stat().st_size, counts[0], counts[1], timings)


def _previous_outputs(image_json: Path, image_id: str, archive: Path, sbom: Path) -> dict[str, str] | None:
    """The earlier outputs in --out when they are of this very image (same local image id) and still there."""
    try:
        previous = json.loads(image_json.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(previous, dict) or previous.get("image_id") != image_id:
        return None
    if not archive.is_file() or not sbom.is_file() or previous.get("archive_size_bytes") != archive.stat().st_size:
        return None
    return {"digest": str(previous["digest"]), "reference": str(previous["reference"])}


def _sbom_counts(sbom: Path) -> tuple[int, int]:
    purls = [str(c.get("purl", "")) for c in json.loads(sbom.read_text()).get("components", [])]
    return sum(p.startswith("pkg:deb/") for p in purls), sum(p.startswith("pkg:pypi/") for p in purls)
