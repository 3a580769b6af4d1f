"""What `llmrack validate` calls: run the shipped suite through pytest.main, collect and load evidence dumps.

Exit codes: 0 every check passed (or skipped with a reason); 1 a check failed or could not measure (error);
2 the suite could not run (bad inventory, spec or options; nothing to check).
"""

from __future__ import annotations

import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import testinfra  # type: ignore[import-untyped]

from llmrack.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from llmrack.validation import expect
from llmrack.validation import hosts as hosts_mod
from llmrack.validation.evidence import Evidence, GatherError, ServingImageProbe, gather


class Level(StrEnum):
    quick = "quick"
    standard = "standard"
    full = "full"


@dataclass
class RunOptions:
    inventory: Path | None = None
    limit: str = "all"
    local: bool = False
    dumps: list[Path] = field(default_factory=list)
    level: Level = Level.quick
    report: Path | None = None
    spec: Path | None = None
    kind: str | None = None
    serving_url: str | None = None
    api_key_file: Path | None = None
    expect: list[str] = field(default_factory=list)  # NAME=VALUE pins over the spec and inventory
    verbose: bool = False
    pytest_args: list[str] = field(default_factory=list)


def suite_dir() -> Path:
    return Path(str(resources.files("llmrack.validation.suite")))


def _ansible_on_path() -> None:
    # testinfra runs `ansible-inventory` from PATH; a venv's console script is not on PATH unless activated.
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def pytest_args(opts: RunOptions) -> list[str]:
    """The pytest command line `llmrack validate` runs (also printed by --verbose, to rerun by hand)."""
    suite = suite_dir()
    args = [
        "-p", "llmrack.validation.plugin",
        f"--rootdir={suite}", f"--confcutdir={suite}", f"--config-file={suite / 'pytest.ini'}",
        f"--llmrack-level={opts.level.value}", "-rN",  # the plugin prints its own summary
        # The plugin imports testinfra before pytest loads it as a plugin; nothing to rewrite there.
        "-W", "ignore::pytest.PytestAssertRewriteWarning", "--tb=no" if not opts.verbose else "--tb=short",
    ]
    modes = sum([opts.local, bool(opts.dumps), opts.inventory is not None and not opts.dumps])
    if modes != 1:
        raise UsageError("give exactly one of --inventory INV, --local or dumps to analyze")
    if (opts.serving_url or opts.api_key_file) and not opts.local:
        # An inventory names each node's URL and keys (llmrack_serving_url, serving_api_keys); a dump has none.
        raise UsageError("--serving-url and --api-key-file go with --local")
    if opts.api_key_file and not opts.serving_url:
        raise UsageError("--api-key-file needs --serving-url (the server whose keys they are)")
    if opts.local:
        args.append("--llmrack-local")
    for dump in opts.dumps:
        args.append(f"--llmrack-dump={dump}")
    if opts.inventory is not None:
        if not opts.inventory.exists():
            raise UsageError(f"inventory {opts.inventory} does not exist")
        args.append(f"--ansible-inventory={opts.inventory}")
        if not opts.dumps:
            # Several patterns, comma-separated, as `ansible --limit` takes them (each an fnmatch pattern).
            args.append("--hosts=" + ",".join(f"ansible://{p.strip()}" for p in opts.limit.split(",") if p.strip()))
    if opts.report is not None:
        args.append(f"--llmrack-report={opts.report}")
    if opts.spec is not None:
        args.append(f"--llmrack-spec={opts.spec}")
    if opts.kind:
        args.append(f"--llmrack-kind={opts.kind}")
    if opts.serving_url:
        args.append(f"--llmrack-serving-url={opts.serving_url}")
    if opts.api_key_file:
        args.append(f"--llmrack-api-key-file={opts.api_key_file}")
    args += [f"--llmrack-expect={pin}" for pin in opts.expect]
    if not opts.verbose:
        args.append("-q")
    return [*args, *opts.pytest_args, "--pyargs", "llmrack.validation.suite"]


def run(opts: RunOptions) -> int:
    args = pytest_args(opts)
    _ansible_on_path()
    # The suite is llmrack's, not the caller's tests: options a CI job sets for its own pytest runs (say
    # PYTEST_ADDOPTS=--junitxml=...) would otherwise redirect the suite's junit.xml or change what runs.
    addopts = os.environ.pop("PYTEST_ADDOPTS", None)
    try:
        code = int(pytest.main(args))
    finally:
        if addopts is not None:
            os.environ["PYTEST_ADDOPTS"] = addopts
    if code == int(pytest.ExitCode.OK):
        return EXIT_OK
    if code == int(pytest.ExitCode.TESTS_FAILED):
        return EXIT_FAILURE
    return EXIT_USAGE


def collect(out: Path, level: Level, local: bool, inventory: Path | None, limit: str, python: str | None) -> list[Path]:
    """Write each selected node's raw evidence to `out` (a directory or .tar.gz for one node; a directory with
    one <host>.tar.gz per node for several)."""
    _ansible_on_path()
    if local == (inventory is not None):
        raise UsageError("give exactly one of --local or --inventory INV")
    targets: list[tuple[str, Any, str, ServingImageProbe | None]] = []
    if local:
        targets.append((socket.gethostname(), testinfra.get_host("local://"), python or sys.executable, None))
    else:
        assert inventory is not None
        patterns = [f"ansible://{p.strip()}" for p in limit.split(",") if p.strip()]
        for host in hosts_mod.get_hosts(patterns, str(inventory)):
            name = host.backend.get_hostname()
            exp = expect.build(name, hosts_mod.host_vars(str(inventory), name), where=str(inventory))
            targets.append((name, host, python or exp.python, exp.probe_image))
    if not targets:
        raise UsageError(f"no host in {inventory} matches {limit!r}")
    if len(targets) > 1 and out.name.endswith((".tar.gz", ".tgz")):
        raise UsageError(f"{len(targets)} hosts selected: give a directory for --out (one archive per host)")
    # Made before any node is read: a probe at level standard takes minutes to be thrown away otherwise.
    where = out.parent if out.name.endswith((".tar.gz", ".tgz")) else out
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = f"{exc.filename} is a file" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
        raise UsageError(f"cannot write the evidence to {out}: {why}") from None
    # Nodes are read in parallel, as during a run; a node that cannot be read stops the collection.
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        futures = [pool.submit(gather, host, name, level.value, node_python, image)
                   for name, host, node_python, image in targets]
        try:
            evidence = [f.result() for f in futures]
        except GatherError as exc:
            raise UsageError(str(exc)) from None
    written = []
    for (name, *_), ev in zip(targets, evidence, strict=True):
        dest = out if len(targets) == 1 else out / f"{name}.tar.gz"
        try:
            written.append(ev.write(dest))
        except OSError as exc:
            raise UsageError(f"cannot write the evidence to {dest}: {exc.strerror or exc}") from None
    return written


def load_dump(path: Path) -> Evidence:
    return Evidence.load(path)
