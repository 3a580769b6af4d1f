"""Every run ends by saying where its time went: per module, and the slowest tests (the suite has a budget)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from _pytest.terminal import TerminalReporter

TOP_TESTS = 10


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
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
    write(f"{len(per_test)} tests, {total / 60:.1f} min in tests (set-up and tear-down included)")
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
