"""Per-request sampling parameters, through the engine: seed, stop strings, stop ids, min_tokens, ignore_eos."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from serving.engine import Engine, EngineConfig, SamplingParams
from serving.engine.sampling import RowState, sample
from tests.serving.test_engine_correctness import reference, tokens


@pytest.fixture(scope="module")
def qwen(load_model: Any) -> Any:
    return load_model("qwen2")


def run(loaded: Any, prompt: str, others: int = 0, **params: Any) -> Any:
    """Run one request (optionally alongside `others` unrelated sampled requests); returns its outputs."""
    engine = Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids, EngineConfig())
    noise = [engine.submit(loaded.tokenizer.encode(f"other request {i} " * (i + 1)),
                           SamplingParams(max_tokens=12, temperature=1.0)) for i in range(others)]
    rid = engine.submit(loaded.tokenizer.encode(prompt), SamplingParams(**params))
    out = engine.run_until_idle()
    assert all(out[n][-1].finished for n in noise)
    return out[rid]


def text(outputs: list[Any]) -> str:
    return "".join(o.delta_text for o in outputs)


def test_seed_reproducible_whatever_the_batch(qwen: Any) -> None:
    a = tokens(run(qwen, "The rack", max_tokens=16, temperature=1.0, seed=7))
    b = tokens(run(qwen, "The rack", others=3, max_tokens=16, temperature=1.0, seed=7))
    c = tokens(run(qwen, "The rack", max_tokens=16, temperature=1.0, seed=8))
    assert a == b
    assert a != c
    assert a != reference(qwen, qwen.tokenizer.encode("The rack"), 16)  # really sampled, not greedy


def test_top_k_one_and_tiny_top_p_are_greedy(qwen: Any) -> None:
    ref = reference(qwen, qwen.tokenizer.encode("The rack"), 12)
    assert tokens(run(qwen, "The rack", max_tokens=12, temperature=1.0, top_k=1, seed=1)) == ref
    assert tokens(run(qwen, "The rack", max_tokens=12, temperature=1.0, top_p=1e-6, seed=1)) == ref


def test_top_k_limits_the_support() -> None:
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(200, 1)
    gen = torch.Generator().manual_seed(0)
    rows = [RowState(SamplingParams(temperature=5.0, top_k=2), gen)] * 200
    picked = set(sample(logits, rows))
    assert picked == {0, 1}


def test_top_p_limits_the_support() -> None:
    logits = torch.tensor([[3.0, 3.0, -3.0, -3.0]]).repeat(300, 1)  # ~99% of the mass on tokens 0 and 1
    rows = [RowState(SamplingParams(temperature=1.0, top_p=0.9), None)] * 300
    assert set(sample(logits, rows)) == {0, 1}


def test_stop_string_truncates(qwen: Any) -> None:
    full = text(run(qwen, "Hello there", max_tokens=24, temperature=0, ignore_eos=True))
    stop = full[8:11]
    assert len(stop) == 3 and stop not in full[:8]
    out = run(qwen, "Hello there", max_tokens=24, temperature=0, ignore_eos=True, stop=(stop,))
    assert text(out) == full[: full.index(stop)]
    assert out[-1].finish_reason == "stop"


def test_stop_token_ids(qwen: Any) -> None:
    ref = reference(qwen, qwen.tokenizer.encode("Hello there"), 16)
    target = ref[5]
    out = run(qwen, "Hello there", max_tokens=16, temperature=0, stop_token_ids=(target,))
    assert tokens(out) == ref[: ref.index(target) + 1]
    assert out[-1].finish_reason == "stop"


def test_min_tokens_bans_stops_until_reached(qwen: Any) -> None:
    first = reference(qwen, qwen.tokenizer.encode("Hello there"), 1)[0]
    # Without min_tokens the first token is a stop token and the request ends at once...
    assert len(tokens(run(qwen, "Hello there", max_tokens=10, temperature=0, stop_token_ids=(first,)))) == 1
    # ...with min_tokens=4 it cannot be chosen for the first four tokens.
    out = tokens(run(qwen, "Hello there", max_tokens=10, temperature=0, stop_token_ids=(first,), min_tokens=4))
    assert len(out) >= 4 and first not in out[:4]


def test_ignore_eos_and_max_tokens(load_model: Any) -> None:
    llama = load_model("llama")
    for prompt in ["one two three", "Why", "Deploy 42 nodes", "a", "b c", "metric", "the gpu"]:
        ref = reference(llama, llama.tokenizer.encode(prompt), 40)
        if ref[-1] in llama.eos_token_ids and len(ref) < 40:
            break
    else:
        pytest.fail("no prompt reaches EOS")
    stopped = run(llama, prompt, max_tokens=40, temperature=0)
    assert len(tokens(stopped)) == len(ref) and stopped[-1].finish_reason == "stop"
    ignored = run(llama, prompt, max_tokens=40, temperature=0, ignore_eos=True)
    assert len(tokens(ignored)) == 40 and ignored[-1].finish_reason == "length"
    assert tokens(ignored)[: len(ref)] == ref
    short = run(llama, prompt, max_tokens=3, temperature=0)
    assert tokens(short) == ref[:3] and short[-1].finish_reason == "length"


def test_invalid_params_are_refused() -> None:
    for bad in ({"max_tokens": 0}, {"temperature": -1}, {"top_p": 0}, {"min_tokens": 5, "max_tokens": 2}):
        with pytest.raises(ValueError, match="must be"):
            SamplingParams(**bad)
