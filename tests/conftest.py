"""Every run ends by saying where its time went: per module, and the slowest tests (the suite has a budget).

The suite runs on two pytest-xdist workers (pyproject's addopts: `-n 2`), scheduled by `LabFirstScheduling`
below: each module is one work unit, so a module's fixtures start once; every module that uses the session lab
(tests/lab/conftest.py's `lab_up`) is one unit together, so that lab boots once. The labs are the long poles:
their units go first, one per worker, and the other modules fill the second worker while the session lab's tests
run on the first. `-n 0` runs everything in one process, in the same order.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from _pytest.terminal import TerminalReporter

TOP_TESTS = 10
SESSION_LAB_UNIT = "session-lab"
LAB_TESTS = Path(__file__).parent / "lab"
# Session-lab modules that run after the others, in this order: the batch job's traffic (hundreds of requests of
# another length) would otherwise fall in the windows test_gateway.py's drift check reads as "one traffic shape all
# along"; serving.tls, once on, leaves the nodes' plain URLs that every other lab test uses without an answer.
SESSION_LAB_LAST = ("tests/lab/test_batch.py", "tests/lab/test_serving_tls.py")


def _this_suite(config: pytest.Config) -> bool:
    """pytest also loads this file for runs started in the checkout that are not this suite: `llmrack validate`
    (`make lab`) runs its shipped suite with its own rootdir and the checkout as the working directory, and pytest
    loads conftest.py from the working directory's test* folders. Those runs are left alone."""
    return config.rootpath == LAB_TESTS.parent.parent


def _session_lab_modules() -> set[str]:
    """The lab modules whose tests use the session lab, as nodeid prefixes (tests/lab/test_x.py)."""
    return {f"{p.relative_to(LAB_TESTS.parents[1]).as_posix()}" for p in LAB_TESTS.glob("test_*.py")
            if re.search(r"\blab_up\b", p.read_text())}


def _work_unit(nodeid: str, session_lab: set[str]) -> tuple[int, str]:
    """(rank, unit) of a test: lower ranks are handed out first."""
    module = nodeid.split("::", 1)[0]
    if module in session_lab:
        return 0, SESSION_LAB_UNIT
    return (1 if module.startswith("tests/lab/") else 2), module


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # xdist's own `--dist loadgroup` cannot be used: it renames each test's nodeid, which pytest 9 no longer allows.
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    session_lab = _session_lab_modules()

    class LabFirstScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(nodeid, session_lab)[1]

    return LabFirstScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The order the scheduler hands units out in: the session lab's, the other labs', then the rest."""
    if not _this_suite(config):
        return
    session_lab = _session_lab_modules()
    def order(item: pytest.Item) -> tuple[int, int]:
        module = item.nodeid.split("::", 1)[0]
        last = SESSION_LAB_LAST.index(module) + 1 if module in SESSION_LAB_LAST else 0
        return _work_unit(item.nodeid, session_lab)[0], last

    items.sort(key=order)  # stable: each unit keeps its tests' order


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    if not _this_suite(config):
        return
    per_test: dict[str, float] = defaultdict(float)
    for reports in terminalreporter.stats.values():
        for report in reports:
            # Set-up counts too: a shared fixture (the session lab) is charged to the first test that uses it.
            if isinstance(report, pytest.TestReport):
                per_test[report.nodeid] += report.duration
    if not per_test:
        return
    per_module: dict[str, list[float]] = defaultdict(list)
    for nodeid, secs in per_test.items():
        per_module[nodeid.split("::", 1)[0]].append(secs)
    total = sum(per_test.values())
    write = terminalreporter.write_line
    terminalreporter.section("where the time went")
    workers = getattr(config.option, "numprocesses", None) or 1
    write(f"{len(per_test)} tests, {total / 60:.1f} min in tests (set-up and tear-down included"
          + (f"; summed over {workers} workers, so more than the wall time)" if workers > 1 else ")"))
    write(f"{'seconds':>8} {'share':>6} {'tests':>6}  module")
    ranked = sorted(per_module.items(), key=lambda kv: -sum(kv[1]))
    shown = [(m, t) for m, t in ranked if sum(t) >= 0.01 * total]
    for module, times in shown:
        write(f"{sum(times):8.0f} {sum(times) / total:6.0%} {len(times):6d}  {module}")
    rest = ranked[len(shown):]
    if rest:
        secs = sum(sum(t) for _, t in rest)
        write(f"{secs:8.0f} {secs / total:6.0%} {sum(len(t) for _, t in rest):6d}  {len(rest)} other modules")
    write(f"slowest {TOP_TESTS}:")
    for nodeid, secs in sorted(per_test.items(), key=lambda kv: -kv[1])[:TOP_TESTS]:
        write(f"{secs:8.1f} s  {nodeid}")
