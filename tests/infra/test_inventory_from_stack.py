"""`llmrack inventory from-stack` on the outputs of a stack run under the mocks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from llmrack.spec import parse_spec
from tests.infra.harness import ROOT, run_stack


def test_from_stack_writes_the_inventory_ansible_reads(tmp_path: Path, scan_results: Path) -> None:
    run, error, _ = run_stack("prod", plain={"llmrack:scanResultsDir": str(scan_results)})
    assert error is None and run is not None
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(run.outputs))  # what `pulumi stack output --json` prints
    cli = [sys.executable, "-m", "llmrack", "inventory", "from-stack"]
    done = subprocess.run([*cli, str(outputs), "--out", str(tmp_path / "inv")], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    hosts = yaml.safe_load((tmp_path / "inv" / "hosts.yml").read_text())
    nvidia = hosts["all"]["children"]["serving_nodes"]["children"]["nvidia_nodes"]["hosts"]
    assert len(nvidia) == 3 and all(h["llmrack_serving_url"].endswith(":8000") for h in nvidia.values())
    deployment = yaml.safe_load((tmp_path / "inv" / "group_vars" / "all" / "deployment.yml").read_text())
    assert parse_spec(deployment["llmrack_deployment"], "inventory").name == "r1-llama70b"
    # The same from stdin.
    done = subprocess.run([*cli, "-", "--out", str(tmp_path / "inv2")], input=outputs.read_text(),
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0 and (tmp_path / "inv2" / "hosts.yml").is_file()


def test_from_stack_without_a_fleet_output_is_a_usage_error(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"namespace": "llmrack"}))
    done = subprocess.run([sys.executable, "-m", "llmrack", "inventory", "from-stack", str(outputs), "--out",
                           str(tmp_path / "inv")], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 2
    assert "no stack output 'inventory'" in done.stderr


def test_from_stack_malformed_hosts_or_unwritable_out_is_a_usage_error(tmp_path: Path, scan_results: Path) -> None:
    run, error, _ = run_stack("dev", plain={"llmrack:scanResultsDir": str(scan_results)})
    assert error is None and run is not None
    cli = [sys.executable, "-m", "llmrack", "inventory", "from-stack"]
    broken = dict(run.outputs, inventory={**run.outputs["inventory"], "hosts": {"all": ["not", "a", "mapping"]}})
    outputs = tmp_path / "broken.json"
    outputs.write_text(json.dumps(broken))
    done = subprocess.run([*cli, str(outputs), "--out", str(tmp_path / "inv")], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 2 and "lists no serving node" in done.stderr and "Traceback" not in done.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps(run.outputs))
    (tmp_path / "file").write_text("")
    done = subprocess.run([*cli, str(good), "--out", str(tmp_path / "file" / "inv")], capture_output=True,
                          text=True, cwd=ROOT, check=False)
    assert done.returncode == 2 and "cannot write the inventory" in done.stderr and "Traceback" not in done.stderr
