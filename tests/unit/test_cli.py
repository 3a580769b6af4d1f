"""The `llmrack` command as users run it: a real process, its stdout, stderr and exit code."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def llmrack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmrack", *args], capture_output=True, text=True, cwd=ROOT,
                          check=False)


REQUIRED_KEYS = {"weights_bytes", "kv_cache_bytes_per_token", "kv_cache_bytes", "count", "tensor_parallel",
                 "pipeline_parallel", "nodes", "fits", "max_concurrent_sequences", "decode_tokens_per_s_upper_bound",
                 "warnings", "headroom", "within_headroom", "target_tokens_per_s",
                 "decode_tokens_per_s_within_headroom"}


def test_plan_json_has_the_documented_fields():
    r = llmrack("plan", "--model", "deepseek-r1-distill-llama-70b", "--accelerator", "h100", "--context", "8192",
                "--concurrency", "16", "--weights-dtype", "fp8", "--kv-dtype", "fp8", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= REQUIRED_KEYS
    assert out["model"]["params"] > 70e9 and out["model"]["active_params"] == out["model"]["params"]
    assert out["fits"] is True and out["tensor_parallel"] * out["pipeline_parallel"] == out["count"]


def test_plan_headroom_option_and_its_warning():
    base = ["plan", "--model", "deepseek-r1-distill-qwen-32b", "--accelerator", "a100-80g", "--context", "8192",
            "--concurrency", "2", "--json"]
    kept = json.loads(llmrack(*base).stdout)
    assert kept["headroom"] == 0.2 and kept["within_headroom"] and kept["count"] == 2
    none = json.loads(llmrack(*base, "--headroom", "0").stdout)
    assert none["count"] == 1 and none["memory_per_device"]["headroom_bytes"] == 0
    eaten = llmrack(*base[:-1], "--tp", "1", "--max-nodes", "1")
    assert eaten.returncode == 0 and "fits only by eating the 20% headroom" in eaten.stderr
    bad = llmrack(*base, "--headroom", "1.5")
    assert bad.returncode == 2 and "headroom must be between 0 and 0.9" in bad.stderr


def test_comparison_json_is_a_list_sorted_by_cost():
    r = llmrack("plan", "--model", "deepseek-r1-distill-qwen-14b", "--context", "4096", "--concurrency", "8", "--json")
    assert r.returncode == 0, r.stderr
    plans = json.loads(r.stdout)
    costs = [p["cost"]["usd_per_million_tokens"] for p in plans if p["fits"]]
    assert len(plans) >= 10 and costs == sorted(costs)


def test_comparison_table_lists_every_accelerator():
    r = llmrack("plan", "--model", "deepseek-r1-distill-qwen-32b", "--context", "8192", "--concurrency", "32")
    assert r.returncode == 0, r.stderr
    for name in ("a100-40g", "a100-80g-pcie", "h200", "h20", "l40s", "ascend-910b4"):
        assert name in r.stdout
    assert "estimated figures" in r.stdout  # Ascend rows say their figures are estimates


def test_unknown_accelerator_names_nearest_and_exits_2():
    r = llmrack("plan", "--model", "deepseek-r1", "--accelerator", "h10")
    assert r.returncode == 2
    assert "unknown accelerator 'h10': did you mean" in r.stderr and "h100" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_model_exits_2_without_traceback():
    r = llmrack("plan", "--model", "deepseek-r2", "--accelerator", "h100")
    assert r.returncode == 2 and "unknown model 'deepseek-r2'" in r.stderr and "Traceback" not in r.stderr


def test_bad_choice_is_a_usage_error():
    r = llmrack("plan", "--model", "deepseek-r1", "--weights-dtype", "fp4")
    assert r.returncode == 2 and "fp4" in r.stderr and "Traceback" not in r.stderr


def test_malformed_config_names_the_missing_field(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096, "num_attention_heads": 32}))
    r = llmrack("plan", "--config", str(cfg), "--accelerator", "h100")
    assert r.returncode == 2 and "'num_hidden_layers' is missing" in r.stderr


def test_does_not_fit_exits_1_and_says_why():
    r = llmrack("plan", "--model", "opt-175b", "--accelerator", "a100-40g", "--weights-dtype", "fp16",
                "--max-nodes", "1", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["fits"] is False and "GiB of weights" in out["reason"]


def test_nothing_fits_anywhere_exits_1():
    r = llmrack("plan", "--model", "deepseek-v3", "--weights-dtype", "bf16", "--max-nodes", "1", "--json")
    assert r.returncode == 1
    assert all(not p["fits"] for p in json.loads(r.stdout))
    assert "fits on no accelerator" in r.stderr


@pytest.mark.parametrize("spec", ["r1-distill-qwen-7b.yaml", "deepseek-r1-h200.yaml"])
def test_spec_check_prints_the_plan(spec):
    r = llmrack("spec", "check", f"examples/{spec}", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["plan"]["fits"] and out["spec"]["serving"]["max_num_seqs"] == out["plan"]["concurrency"]


def test_spec_check_reports_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nenvironment: prod\naccelerator: a100-80\nmodel: {name: deepseek-r1, source: /m}\n"
                   "serving: {max_model_len: 4096, max_num_seqs: -1, tensor_parallel: 3}\n")
    r = llmrack("spec", "check", str(bad))
    assert r.returncode == 2
    assert "accelerator: 'a100-80' is not valid" in r.stderr and "serving.max_num_seqs: -1" in r.stderr


def test_spec_that_does_not_fit_exits_1(tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text("name: big\nenvironment: prod\naccelerator: l40s\nnodes: 1\n"
                    "model: {name: deepseek-r1, source: /m, weights_dtype: bf16}\n"
                    "serving: {max_model_len: 4096, max_num_seqs: 4}\n")
    r = llmrack("spec", "check", str(spec))
    assert r.returncode == 1 and "does not fit" in r.stderr


def test_price_override_and_bad_price():
    ok = llmrack("plan", "--model", "deepseek-r1-distill-qwen-7b", "-a", "a100-80g", "--price", "a100-80g=7500",
                 "--json")
    assert json.loads(ok.stdout)["cost"]["price_usd_per_accelerator"] == 7500
    bad = llmrack("plan", "--model", "deepseek-r1-distill-qwen-7b", "--price", "a100-80g")
    assert bad.returncode == 2 and "expected NAME=USD" in bad.stderr


def test_catalog_listings():
    r = llmrack("catalog", "accelerators", "--json")
    assert r.returncode == 0 and "huawei.com/Ascend910" in r.stdout
    r = llmrack("catalog", "models")
    assert r.returncode == 0 and "deepseek-r1-distill-llama-70b" in r.stdout
