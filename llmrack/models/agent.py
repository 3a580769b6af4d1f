"""The model agent: what the serving role runs on each node to pull, verify and prune model versions.

It is these same modules (llmrack.contracts.model_manifest, llmrack.models) and the `oras` client, packed by
`build_zipapp` into one file the role copies to the node and runs with the node's python3 (plus Debian's
python3-requests and python3-jsonschema, which oras imports). Every command prints one JSON object on stdout;
errors go to stderr as one line with exit code 1 (verification or transfer failed) or 2 (bad arguments).

  python3 llmrack-model-agent.pyz pull --source SRC --version sha256:... --store DIR [--max-rate MBPS]
  python3 llmrack-model-agent.pyz verify --dir DIR [--level quick|standard] [--version sha256:...]
  python3 llmrack-model-agent.pyz prune --store DIR --keep N [--protect sha256:...]...
  python3 llmrack-model-agent.pyz list --store DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from pathlib import Path

from llmrack.contracts.model_manifest import VerifyLevel, version_dir
from llmrack.errors import EXIT_FAILURE, EXIT_USAGE, LlmrackError
from llmrack.models import local, transfer

# The modules the agent needs, relative to the llmrack package (all standard library + oras).
MODULES = ("__init__.py", "errors.py", "contracts/__init__.py", "contracts/model_manifest.py",
           "models/__init__.py", "models/errors.py", "models/local.py", "models/sources.py",
           "models/transfer.py", "models/agent.py")
MAIN = "from llmrack.models.agent import main\nraise SystemExit(main())\n"


def build_zipapp(out: Path) -> Path:
    """Write the agent as a zipapp (deterministic bytes, so the role's copy is a no-op when nothing changed)."""
    import oras  # noqa: PLC0415  (the controller's oras is what the nodes run)

    llmrack_root = Path(__file__).resolve().parents[1]
    oras_root = Path(oras.__file__).resolve().parent
    entries: list[tuple[str, Path]] = [(f"llmrack/{m}", llmrack_root / m) for m in MODULES]
    entries += [(f"oras/{p.relative_to(oras_root).as_posix()}", p) for p in sorted(oras_root.rglob("*.py"))
                if "tests" not in p.relative_to(oras_root).parts]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # several nodes' plays may build it at once
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("__main__.py", (1980, 1, 1, 0, 0, 0)), MAIN)
        for name, path in entries:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), path.read_bytes())
    tmp.replace(out)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmrack-model-agent", description="pull, verify and prune model versions")
    sub = p.add_subparsers(dest="cmd", required=True)
    pull = sub.add_parser("pull", help="pull a version into <store>/<hex> (resumes, verifies, renames into place)")
    pull.add_argument("--source", required=True)
    pull.add_argument("--version", required=True)
    pull.add_argument("--store", required=True, type=Path)
    pull.add_argument("--max-rate", type=float, default=0, help="MB/s cap (0: none)")
    ver = sub.add_parser("verify", help="check a version directory against its manifest")
    ver.add_argument("--dir", required=True, type=Path)
    ver.add_argument("--level", choices=[v.value for v in VerifyLevel], default="standard")
    ver.add_argument("--version")
    ver.add_argument("--touch", action="store_true", help="mark the version as just used (it is being switched to)")
    prune = sub.add_parser("prune", help="keep the newest N versions, never the protected ones")
    prune.add_argument("--store", required=True, type=Path)
    prune.add_argument("--keep", required=True, type=int)
    prune.add_argument("--protect", action="append", default=[])
    lst = sub.add_parser("list", help="versions in the store, most recently used first")
    lst.add_argument("--store", required=True, type=Path)
    return p


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.cmd == "pull":
        def log(message: str) -> None:
            print(message, file=sys.stderr)
        dest = version_dir(args.store, args.version)
        return transfer.pull(args.source, dest, args.version, max_rate=args.max_rate * 1e6 or None, log=log).as_dict()
    if args.cmd == "verify":
        v = local.verify(args.dir, VerifyLevel(args.level), args.version)
        if args.touch:
            transfer.mark_used(args.dir)
        return {"version": v.version, "files": v.files, "bytes": v.bytes, "level": v.level.value, "changed": False}
    if args.cmd == "prune":
        removed = transfer.prune(args.store, args.keep, args.protect)
        return {"removed": [f"sha256:{d.name}" for d in removed], "changed": bool(removed),
                "kept": [f"sha256:{d.name}" for d in transfer.installed_versions(args.store)]}
    return {"versions": [f"sha256:{d.name}" for d in transfer.installed_versions(args.store)], "changed": False}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(json.dumps(run(args)))
    except LlmrackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # a malformed --version and the like
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # A disk that filled mid-pull (something else wrote after the role's space check), a store not writable:
        # the node's fault, not a bug. What a pull wrote stays in <version>.partial, where the next pull resumes.
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}: free or fix that filesystem and run the same command again "
              "(a pull resumes from what it kept)", file=sys.stderr)
        return EXIT_FAILURE
    return 0
