"""The deployment spec: valid files load, mistakes name the key, the bad value and what is allowed."""

import json
from pathlib import Path

import pytest
import yaml

from llmrack import catalog
from llmrack.spec import SpecError, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

VALID = {
    "name": "chat",
    "environment": "staging",
    "model": {"name": "deepseek-r1-distill-qwen-7b", "source": "/models/r1-qwen-7b"},
    "accelerator": "h100",
    "serving": {"max_model_len": 8192, "max_num_seqs": 32},
}


def with_(path: str, value):
    data = json.loads(json.dumps(VALID))
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return data


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid_and_plan(path):
    spec = load_spec(path)
    req = spec.plan_request()
    assert req.context == spec.serving.max_model_len and req.concurrency == spec.serving.max_num_seqs


def test_defaults():
    spec = parse_spec(VALID, "x")
    assert spec.serving.tensor_parallel == "auto" and spec.serving.replicas == 1
    assert spec.model.weights_dtype.value == "bf16" and spec.model.kv_cache_dtype.value == "auto"
    assert spec.plan_request().tensor_parallel is None


@pytest.mark.parametrize(("env", "allowed"), [("lab", True), ("dev", True), ("staging", False), ("prod", False)])
def test_unscanned_images_default_by_environment(env, allowed):
    assert parse_spec(with_("environment", env), "x").unscanned_images_allowed is allowed
    if env != "prod":
        assert parse_spec({**with_("environment", env), "images": {"allow_unscanned": not allowed}}, "x")\
            .unscanned_images_allowed is (not allowed)


def test_prod_refuses_unscanned_images_whatever_the_spec_says():
    with pytest.raises(SpecError, match=r"images.allow_unscanned: true is not allowed in environment prod"):
        parse_spec({**with_("environment", "prod"), "images": {"allow_unscanned": True}}, "x")


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("accelerator", "a100", "accelerator: 'a100' is not valid: unknown accelerator 'a100': did you mean"),
        ("model.name", "deepseek-r1-distil-qwen-7b", "did you mean deepseek-r1-distill-qwen-7b"),
        ("model.weights_dtype", "fp4", "model.weights_dtype: 'fp4' is not valid: Input should be 'bf16', 'fp16'"),
        ("model.kv_cache_dtype", "int8", "model.kv_cache_dtype: 'int8' is not valid"),
        ("environment", "qa", "environment: 'qa' is not valid: Input should be 'lab', 'dev', 'staging' or 'prod'"),
        ("serving.max_num_seqs", 0, "serving.max_num_seqs: 0 is not valid: Input should be greater than or equal to 1"),
        ("serving.tensor_parallel", "three", "serving.tensor_parallel: 'three' is not valid: must be 'auto' or an"),
        ("serving.tensor_parallel", 0, "must be 'auto' or an integer from 1 to 64"),
        ("serving.max_num_seq", 8, "serving.max_num_seq: unknown key; did you mean 'max_num_seqs'?"),
        ("name", "Chat Bot", "name: 'Chat Bot' is not valid"),
        ("model.source", None, "model.source"),
    ],
)
def test_errors_name_key_value_and_allowed(path, value, expected):
    with pytest.raises(SpecError) as err:
        parse_spec(with_(path, value), "deploy.yaml")
    assert str(err.value).startswith("deploy.yaml: invalid deployment spec")
    assert expected in str(err.value)


def test_missing_keys_are_listed_together():
    with pytest.raises(SpecError) as err:
        parse_spec({"name": "x"}, "deploy.yaml")
    for key in ("environment", "model", "accelerator", "serving"):
        assert f"{key}: required key is missing" in str(err.value)


def test_model_name_or_config_required():
    with pytest.raises(SpecError, match=r"give model\.name .* or model\.config"):
        parse_spec(with_("model", {"source": "/m"}), "x")


def test_config_path_is_relative_to_the_spec_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(catalog.model("deepseek-r1-distill-llama-8b").config))
    data = with_("model", {"config": "m/config.json", "name": "my-llama", "source": "/models/my-llama"})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(data))
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.arch() == catalog.model("deepseek-r1-distill-llama-8b").arch
    assert spec.plan_request().model_name == "my-llama"


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read spec"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(bad)
    bad.write_text("- a list\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(bad)


def test_tensor_parallel_must_divide_the_heads_and_stay_in_a_node():
    with pytest.raises(SpecError, match=r"serving.tensor_parallel: 8 is not valid: tensor parallel 8 does not divide"
                                        " the 28 attention heads of deepseek-r1-distill-qwen-7b"):
        parse_spec(with_("serving.tensor_parallel", 8), "x")
    data = with_("serving.tensor_parallel", 16)
    data["model"]["name"] = "deepseek-r1"
    with pytest.raises(SpecError, match="a h100 node has 8 devices"):
        parse_spec(data, "x")


def test_missing_model_config_file_names_the_key(tmp_path):
    data = with_("model", {"config": "nope/config.json", "source": "/m"})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"model.config: cannot read model config"):
        load_spec(tmp_path / "s.yaml")


def test_replicas_across_nodes_are_checked_against_layers_nodes_and_experts():
    data = with_("serving.pipeline_parallel", 4)
    data["nodes"] = 3
    with pytest.raises(SpecError, match=r"serving.pipeline_parallel: 4 stages x serving.replicas 1 need 4 nodes.*"
                                        r"nodes is 3: raise nodes"):
        parse_spec(data, "x")
    data = with_("serving.pipeline_parallel", 40)
    data["nodes"] = 64
    with pytest.raises(SpecError, match=r"serving.pipeline_parallel: 40 stages for 28 layers"):
        parse_spec(data, "x")
    with pytest.raises(SpecError, match=r"serving.expert_parallel: true, but deepseek-r1-distill-qwen-7b has no "
                                        "experts: set it to false"):
        parse_spec(with_("serving.expert_parallel", True), "x")
    data = with_("serving.pipeline_parallel", 2)
    data["serving"]["engine"] = "llmrack"
    data["nodes"] = 2
    with pytest.raises(SpecError, match=r"serving.engine: llmrack serves one device.*TP 1 x PP 2"):
        parse_spec(data, "x")
    with pytest.raises(SpecError, match=r"serving.executor: 'slurm' is not valid: Input should be 'mp' or 'ray'"):
        parse_spec(with_("serving.executor", "slurm"), "x")
    data = with_("serving.pipeline_parallel", 2)
    data["nodes"] = 2
    assert parse_spec(data, "x").plan_request().pipeline_parallel == 2
