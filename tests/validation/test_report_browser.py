"""report.html as headless Chromium renders it: one table per node, failures first, values against thresholds."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.validation.conftest import FIXTURES, llmrack, report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Tables(HTMLParser):
    """Rows of every rendered table.node: {node: [(status, cells...)]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.node: str | None = None
        self.row: list[str] | None = None
        self.cell: str | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("class") == "node":
            self.node = a["data-node"]
            self.tables[self.node or ""] = []
        elif tag == "tr" and self.node and a.get("data-check"):
            self.row = []
        elif tag == "td" and self.row is not None:
            self.cell = ""
        elif tag == "h1":
            self._in_title = True

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.row is not None and self.cell is not None:
            self.row.append(" ".join(self.cell.split()))
            self.cell = None
        elif tag == "tr" and self.row is not None and self.node:
            self.tables[self.node].append(self.row)
            self.row = None
        elif tag == "table":
            self.node = None
        elif tag == "h1":
            self._in_title = False


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
@pytest.mark.slow
def test_html_report_in_headless_chromium(tmp_path: Path) -> None:
    dumps = [FIXTURES / n for n in ("nvidia-smi-a100-hgx-pcie-downtrained", "nvidia-smi-a100-hgx-nvlink-inactive")]
    out = tmp_path / "r"
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nenvironment: prod\nmodel: {name: deepseek-r1-distill-qwen-7b, source: /m}\n"
                    "accelerator: a100-80g\nserving: {max_model_len: 4096, max_num_seqs: 8}\n")
    proc = llmrack("validate", "analyze", *map(str, dumps), "--spec", str(spec), "--report", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert CHROMIUM is not None
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             f"--user-data-dir={tmp_path / 'chrome'}"]
    url = (out / "report.html").as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1400,900", url],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    parsed = Tables()
    parsed.feed(dom)
    # The overview table links each node's table.
    assert '<table class="nodes">' in dom and 'href="#node-a100-node4"' in dom and 'id="node-a100-node5"' in dom
    assert parsed.title.strip() == "llmrack validation: FAILED"
    rep = report(out)
    assert set(parsed.tables) == set(rep["nodes"]) == {"a100-node4", "a100-node5"}
    for node, rows in parsed.tables.items():
        statuses = [row[2] for row in rows]
        # Failures first, then skips, then passes; every check of the node is a row.
        order = {"fail": 0, "error": 1, "skip": 2, "pass": 3}
        assert statuses == sorted(statuses, key=order.__getitem__), node
        assert statuses[0] == "fail"
        assert len(rows) == sum(1 for c in rep["checks"] if c["node"] == node)
    downtrained = next(r for r in parsed.tables["a100-node4"] if r[0] == "nvidia.pcie_link" and r[1] == "gpu2")
    assert downtrained[2:6] == ["fail", "Gen4 x8", ">= Gen4 x16", ""]
    nvlink = next(r for r in parsed.tables["a100-node5"] if r[0] == "nvidia.nvlink" and r[1] == "gpu6")
    assert nvlink[2:6] == ["fail", "11", "== 12", "active links"]
