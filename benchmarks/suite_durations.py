"""Where the test suite's time goes: per module and the slowest tests, from a JUnit XML report of one run.

    PYTEST_ADDOPTS="--junitxml=/tmp/suite.xml" make test        # or .ci/run, which runs the same command
    .venv/bin/python benchmarks/suite_durations.py /tmp/suite.xml [--top 15]

Prints a Markdown table (docs/reliability.md keeps the last one). A module's time includes its fixtures' set-up
(pytest charges a shared fixture, such as the session lab, to the first test that uses it).
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def _module(classname: str) -> str:
    """`tests.lab.test_gateway` (or `tests.lab.test_gateway.TestX`) -> `tests/lab/test_gateway.py`."""
    parts = classname.split(".")
    while parts and not parts[-1].startswith("test_"):
        parts.pop()
    return "/".join(parts) + ".py" if parts else classname


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("junit", type=Path, help="pytest --junitxml report")
    ap.add_argument("--top", type=int, default=15, help="how many of the slowest tests to list")
    args = ap.parse_args(argv)
    try:
        root = ET.parse(args.junit).getroot()
    except (OSError, ET.ParseError) as exc:
        print(f"error: cannot read {args.junit} as a JUnit XML report: {exc}", file=sys.stderr)
        return 2
    cases = [(c.get("classname", ""), c.get("name", ""), float(c.get("time", 0)), c) for c in root.iter("testcase")]
    if not cases:
        print(f"error: {args.junit} holds no test cases", file=sys.stderr)
        return 2
    total = sum(t for _, _, t, _ in cases)
    per_module: dict[str, list[float]] = defaultdict(list)
    for cls, _, t, _ in cases:
        per_module[_module(cls)].append(t)
    status = {"failed": sum(1 for *_, c in cases if c.find("failure") is not None or c.find("error") is not None),
              "skipped": sum(1 for *_, c in cases if c.find("skipped") is not None)}
    print(f"{len(cases)} tests, {total / 60:.1f} min of test time ({status['failed']} failed, "
          f"{status['skipped']} skipped)\n")
    print("| module | tests | seconds | share |\n| --- | ---: | ---: | ---: |")
    for module, times in sorted(per_module.items(), key=lambda kv: -sum(kv[1])):
        secs = sum(times)
        if secs < 0.01 * total:
            continue
        print(f"| `{module}` | {len(times)} | {secs:.0f} | {100 * secs / total:.0f}% |")
    rest = [sum(v) for v in per_module.values() if sum(v) < 0.01 * total]
    print(f"| {len(rest)} other modules (each under 1%) | | {sum(rest):.0f} | {100 * sum(rest) / total:.0f}% |")
    print(f"\nThe {args.top} slowest tests:\n\n| test | seconds |\n| --- | ---: |")
    for cls, name, t, _ in sorted(cases, key=lambda c: -c[2])[: args.top]:
        print(f"| `{_module(cls)}::{name}` | {t:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
