"""report.html as headless Chromium renders it: per node a matrix (checks down, devices across, failing rows
first) and the detail of every result not passed below it."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.validation.conftest import FIXTURES, llmrack, report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Boards(HTMLParser):
    """What Chromium rendered per node: the matrix {check: {column: status}} in row order, its column headers,
    and the detail rows [check, device, status, measured, threshold, unit, detail] below it."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix: dict[str, dict[str, dict[str, str]]] = {}
        self.columns: dict[str, list[str]] = {}
        self.details: dict[str, list[list[str]]] = {}
        self.table: tuple[str, str] | None = None  # (kind, node)
        self.check: str | None = None
        self.column: str | None = None
        self.row: list[str] | None = None
        self.cell: str | None = None
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("class") in ("matrix", "details") and a.get("data-node"):
            self.table = (str(a["class"]), str(a["data-node"]))
            getattr(self, "matrix" if a["class"] == "matrix" else "details")[self.table[1]] = \
                {} if a["class"] == "matrix" else []
            self.columns.setdefault(self.table[1], [])
        elif self.table and self.table[0] == "matrix":
            if tag == "th" and a.get("data-column"):
                self.columns[self.table[1]].append(str(a["data-column"]))
            elif tag == "tr" and a.get("data-check"):
                self.check = str(a["data-check"])
                self.matrix[self.table[1]][self.check] = {}
            elif tag == "td" and self.check and a.get("data-column"):
                self.column, self.cell = str(a["data-column"]), ""
        elif self.table and tag == "tr" and a.get("data-check"):
            self.row = []
        elif self.table and tag == "td" and self.row is not None:
            self.cell = ""
        elif tag == "h1":
            self._in_title = True

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None and self.table:
            text = " ".join(self.cell.split())
            if self.table[0] == "matrix" and self.check and self.column:
                if text:
                    self.matrix[self.table[1]][self.check][self.column] = text
            elif self.row is not None:
                self.row.append(text)
            self.cell = self.column = None
        elif tag == "tr" and self.table:
            if self.row is not None:
                self.details[self.table[1]].append(self.row)
            self.row = self.check = None
        elif tag == "table":
            self.table = None
        elif tag == "h1":
            self._in_title = False


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
@pytest.mark.slow
def test_html_report_in_headless_chromium(tmp_path: Path) -> None:
    dumps = [FIXTURES / n for n in ("nvidia-smi-a100-hgx-pcie-downtrained", "nvidia-smi-a100-hgx-xid79")]
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

    parsed = Boards()
    parsed.feed(dom)
    # The overview table links each node's board.
    assert '<table class="nodes">' in dom and 'href="#node-a100-node4"' in dom and 'id="node-a100-node2"' in dom
    assert parsed.title.strip() == "llmrack validation: FAILED"
    rep = report(out)
    assert set(parsed.matrix) == set(rep["nodes"]) == {"a100-node4", "a100-node2"}
    order = {"fail": 0, "error": 1, "skip": 2, "pass": 3}
    for node, board in parsed.matrix.items():
        # Checks down, the node then its 8 GPUs across, one cell per result; rows with a failure first.
        assert parsed.columns[node] == ["node"] + [f"gpu{i}" for i in range(8)]
        mine = [c for c in rep["checks"] if c["node"] == node]
        assert sum(len(cells) for cells in board.values()) == len(mine)
        worst = [min(cells.values(), key=order.__getitem__) for cells in board.values()]
        assert worst == sorted(worst, key=order.__getitem__) and worst[0] == "fail", node
        # Every result not passed is listed below the board with its detail, failures first.
        details = parsed.details[node]
        assert [r[2] for r in details] == sorted((c["status"] for c in mine if c["status"] != "pass"),
                                                 key=order.__getitem__)
    assert parsed.matrix["a100-node4"]["nvidia.pcie_link"]["gpu2"] == "fail"
    downtrained = next(r for r in parsed.details["a100-node4"] if r[0] == "nvidia.pcie_link" and r[1] == "gpu2")
    assert downtrained[2:6] == ["fail", "Gen4 x8", ">= Gen4 x16", ""]
    # The GPU that fell off the bus fails its own XID cell (attributed by PCI bus id), next to the node summary.
    xid = parsed.matrix["a100-node2"]["nvidia.gpu_xid"]
    assert xid["gpu3"] == "fail" and {xid[f"gpu{i}"] for i in (0, 1, 2, 4, 5, 6, 7)} == {"pass"}
    assert parsed.matrix["a100-node2"]["nvidia.xid"] == {"node": "fail"}
    lost = next(r for r in parsed.details["a100-node2"] if r[0] == "nvidia.gpu_xid" and r[1] == "gpu3")
    assert lost[2] == "fail" and lost[6].startswith("XID 79 on GPU 3: GPU has fallen off the bus")
