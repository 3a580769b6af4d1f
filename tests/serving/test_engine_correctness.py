"""Greedy output of the continuous-batching engine equals transformers' generate(), token for token.

For each architecture: every prompt alone, all prompts in one mixed-length batch, and requests joining a batch
that is already decoding (the continuous-batching case, where rows of different ages share each step).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from serving.engine import Engine, EngineConfig, SamplingParams
from tests.serving.conftest import ARCHS

PROMPTS = [
    "Hello there, how is the rack",
    "Why",
    "The model is not fast and the queue will drain when the gate is ready and then what happens to the node",
    "one two three",
    "Deploy 42 nodes",
]
NEW_TOKENS = 20


def reference(loaded: Any, prompt_ids: list[int], n: int = NEW_TOKENS) -> list[int]:
    with torch.inference_mode():
        out = loaded.model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False)
    return [int(t) for t in out[0, len(prompt_ids):]]


def engine_for(loaded: Any, **config: Any) -> Engine:
    return Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids, EngineConfig(**config))


def tokens(outputs: list[Any]) -> list[int]:
    return [t for o in outputs for t in o.new_token_ids]


GREEDY = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)


@pytest.fixture(scope="module", params=ARCHS)
def case(request: pytest.FixtureRequest, load_model: Any) -> tuple[Any, list[list[int]], list[list[int]]]:
    loaded = load_model(request.param)
    prompts = [loaded.tokenizer.encode(p) for p in PROMPTS]
    return loaded, prompts, [reference(loaded, p) for p in prompts]


def test_alone(case: Any) -> None:
    loaded, prompts, refs = case
    engine = engine_for(loaded)
    for prompt, ref in zip(prompts, refs, strict=True):
        rid = engine.submit(prompt, GREEDY)
        assert tokens(engine.run_until_idle()[rid]) == ref


def test_mixed_batch(case: Any) -> None:
    loaded, prompts, refs = case
    engine = engine_for(loaded)
    ids = [engine.submit(p, GREEDY) for p in prompts]
    out = engine.run_until_idle()
    assert [tokens(out[i]) for i in ids] == refs


def test_joining_a_running_batch(case: Any) -> None:
    loaded, prompts, refs = case
    engine = engine_for(loaded, max_num_seqs=3)  # fewer slots than requests: some wait, then join mid-flight
    collected: dict[str, list[Any]] = {}
    ids = [engine.submit(prompts[0], GREEDY), engine.submit(prompts[1], GREEDY)]
    for _ in range(5):
        for o in engine.step():
            collected.setdefault(o.request_id, []).append(o)
    ids += [engine.submit(p, GREEDY) for p in prompts[2:]]
    while engine.has_work():
        for o in engine.step():
            collected.setdefault(o.request_id, []).append(o)
    assert [tokens(collected[i]) for i in ids] == refs
    assert engine.kv_cache_bytes() == 0 and engine.num_running == 0


def test_eos_stops_like_generate(load_model: Any) -> None:
    # The llama model ends this prompt with EOS after a few tokens: both stop there, EOS included.
    loaded = load_model("llama")
    engine = engine_for(loaded)
    found = False
    for text in ["one two three", "Why", "Deploy 42 nodes", "a", "b c", "metric", "the gpu"]:
        prompt = loaded.tokenizer.encode(text)
        ref = reference(loaded, prompt, 60)
        rid = engine.submit(prompt, SamplingParams(max_tokens=60, temperature=0))
        out = engine.run_until_idle()[rid]
        assert tokens(out) == ref
        if ref[-1] in loaded.eos_token_ids and len(ref) < 60:
            found = True
            assert out[-1].finish_reason == "stop"
    assert found, "no prompt reached EOS: pick prompts that do"


def test_a_receiver_that_reads_outputs_late_gets_each_token_once(case: Any) -> None:
    # The server's event loop reads what on_outputs handed it some time after the call, while the engine thread
    # goes on: every list handed over must stay as it was when handed over.
    loaded, prompts, refs = case
    engine = engine_for(loaded)
    handed: list[tuple[list[Any], int]] = []
    engine.on_outputs = lambda outputs: handed.append((outputs, len(outputs)))
    ids = [engine.submit(p, GREEDY) for p in prompts]
    engine.run_until_idle()
    assert [len(outputs) for outputs, _ in handed] == [n for _, n in handed]
    late = [o for outputs, _ in handed for o in outputs]
    assert [tokens([o for o in late if o.request_id == i]) for i in ids] == refs
