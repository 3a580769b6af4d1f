"""Where a gateway host installs the batch service from when it has no route to PyPI (an air-gapped rack, the lab).

`wheelhouse(DIR)` puts llmrack's own wheel and every wheel `llmrack[batch]` needs into DIR; the batch role installs
from it with `pip install --no-index --find-links DIR` (role variables batch_pip_find_links and batch_wheel), so
nothing is resolved against an index on the host. The wheel is built from a copy of the sources (the checkout gets
no build/ directory) with SOURCE_DATE_EPOCH fixed, so the same sources give the same bytes: the role reinstalls
llmrack only when its code changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from llmrack.errors import LlmrackError

SOURCE_ROOT = Path(__file__).resolve().parents[2]
# What the distribution is built from (pyproject.toml's packages and package data).
SOURCES = ("pyproject.toml", "README.md", "llmrack", "serving", "infra")
# Any fixed time: zip entries carry it instead of the files' mtimes.
SOURCE_DATE_EPOCH = "1700000000"


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise LlmrackError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")


def build_wheel(dest: Path, source: Path = SOURCE_ROOT) -> Path:
    """llmrack's wheel in `dest` (replacing an older build of it); returns its path."""
    missing = [name for name in SOURCES if not (source / name).exists()]
    if missing:
        raise LlmrackError(f"cannot build llmrack's wheel: {', '.join(missing)} not in {source} "
                           "(a source checkout is needed)")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmrack-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in SOURCES:
            if (source / name).is_dir():
                shutil.copytree(source / name, src / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
            else:
                shutil.copy2(source / name, src / name)
        out = Path(tmp) / "out"
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
              "--wheel-dir", str(out), str(src)], "building llmrack's wheel",
             env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
        built = next(out.glob("llmrack-*.whl"))
        target = dest / built.name
        if not target.exists() or target.read_bytes() != built.read_bytes():
            shutil.copyfile(built, target)
    return target


def wheelhouse(dest: Path, extra: str = "batch", cache: Path | None = None) -> Path:
    """llmrack's wheel and the wheels of `llmrack[extra]`'s dependencies in `dest`; returns llmrack's wheel.

    Wheels already in `cache` (default: `dest`) are used first: when they are all there, no index is asked."""
    wheel = build_wheel(dest)
    store = cache or dest
    store.mkdir(parents=True, exist_ok=True)
    download = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", str(store),
                f"{wheel}[{extra}]"]
    try:
        # Everything already there (a second lab up, a machine offline since): no index is asked.
        _run([*download, "--no-index", "--find-links", str(store)], "resolving from the wheels already there")
    except LlmrackError:
        _run(download, f"downloading the wheels llmrack[{extra}] needs")
    if cache is not None:
        for dep in cache.glob("*.whl"):
            if dep.name.startswith("llmrack-"):
                dep.unlink()  # the build in `dest` is the one to install
            elif not (dest / dep.name).exists():
                shutil.copyfile(dep, dest / dep.name)
    return wheel
