"""One bad request never affects the others, and cancelling a request frees its KV cache rows at once."""

from __future__ import annotations

from typing import Any

from serving.engine import Engine, EngineConfig, SamplingParams
from tests.serving.test_engine_correctness import reference, tokens

GREEDY = SamplingParams(max_tokens=12, temperature=0)


def test_a_failing_request_fails_alone(load_model: Any) -> None:
    loaded = load_model("qwen2")
    engine = Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids, EngineConfig())
    good = [loaded.tokenizer.encode(p) for p in ["Hello there", "Why is the queue", "one"]]
    ids = [engine.submit(good[0], GREEDY), engine.submit([5, 10_000, 7], GREEDY)]  # token id beyond the vocab
    ids += [engine.submit(p, GREEDY) for p in good[1:]]
    out = engine.run_until_idle()
    bad = out[ids[1]]
    assert bad[-1].finish_reason == "error" and bad[-1].error
    assert "10000" not in bad[-1].error  # internal detail stays in the log
    for rid, prompt in zip([ids[0], *ids[2:]], good, strict=True):
        assert tokens(out[rid]) == reference(loaded, prompt, 12)
    # The engine keeps serving afterwards.
    rid = engine.submit(good[0], GREEDY)
    assert tokens(engine.run_until_idle()[rid]) == reference(loaded, good[0], 12)


def test_abort_frees_kv_at_once(load_model: Any) -> None:
    loaded = load_model("deepseek_v3")
    engine = Engine(loaded.model, loaded.tokenizer, loaded.eos_token_ids, EngineConfig())
    long = SamplingParams(max_tokens=500, temperature=0, ignore_eos=True)
    keep = engine.submit(loaded.tokenizer.encode("the rack"), long)
    cancel = engine.submit(loaded.tokenizer.encode("the model is not fast and the queue will drain " * 3), long)
    for _ in range(4):
        engine.step()
    both = engine.kv_cache_bytes()
    assert engine.num_running == 2 and both > 0
    engine.abort(cancel)
    outs = engine.step()
    assert [o.finish_reason for o in outs if o.request_id == cancel] == ["abort"]
    assert engine.num_running == 1
    # The longer, cancelled row is gone and the padding it forced on the other row is trimmed.
    assert engine.kv_cache_bytes() < both / 2
    engine.abort(keep)
    engine.step()
    assert engine.kv_cache_bytes() == 0 and engine.num_running == 0
