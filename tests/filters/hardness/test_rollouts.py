"""Rollout sampling (determinism, explicit parameters, k growth) and the content-addressed stores."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from curator.errors import RecipeError
from curator.ml.chat import render_generation_prompt
from filters.hardness.judges import EnsembleJudge, KeywordRefusalJudge, Verdict
from filters.hardness.rollouts import (
    ROLLOUT_SCHEMA,
    GenParams,
    PartStore,
    RolloutGenerator,
    TransformersSampler,
    VerdictCache,
    VLLMSampler,
    check_backend,
    choose_tokens,
    rollout_seed,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


PROMPTS = ["hello there", "how do i bake bread at home? mix flour", "the quick brown fox jumps over the lazy dog"]


def blocks(tok, prompts, js, seed=0):
    return [(render_generation_prompt(tok, p), [rollout_seed(seed, p, j) for j in js]) for p in prompts]


def test_choose_tokens_filters_and_inverse_cdf():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]] * 2)
    u = np.array([0.0, 0.999999])
    assert choose_tokens(logits, u, GenParams(temperature=0)).tolist() == [3, 3]
    assert choose_tokens(logits, u, GenParams(top_k=1)).tolist() == [3, 3]
    assert choose_tokens(logits, u, GenParams(top_p=0.01)).tolist() == [3, 3]
    # top_k=2 keeps tokens 2, 3: u=0 -> the first kept token in id order, u~1 -> the last one
    assert choose_tokens(logits, u, GenParams(top_k=2)).tolist() == [2, 3]
    # the empirical distribution of inverse-CDF draws matches softmax
    many = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).expand(20000, -1)
    draws = choose_tokens(many, np.random.default_rng(0).random(20000), GenParams()).numpy()
    freq = np.bincount(draws, minlength=4) / 20000
    assert np.allclose(freq, torch.softmax(torch.tensor([0.0, 1, 2, 3]), 0).numpy(), atol=0.01)


def test_bad_gen_params_are_recipe_errors():
    with pytest.raises(RecipeError, match="top_p"):
        GenParams(top_p=0)
    with pytest.raises(RecipeError, match="backend"):
        GenParams(backend="tgi")


def test_block_output_independent_of_other_prompts_and_order(tiny):
    model, tok = tiny
    s = TransformersSampler(model, tok)
    g = GenParams(max_new_tokens=12, block=3)
    alone = [s.sample(blocks(tok, [p], range(3)), g)[0] for p in PROMPTS]
    together = s.sample(blocks(tok, PROMPTS, range(3)), g)
    reverse = s.sample(blocks(tok, PROMPTS[::-1], range(3)), g)[::-1]
    assert alone == together == reverse
    assert len({x.text for b in together for x in b}) == 9  # rows of a block differ (own seeds)
    assert s.n_rows == 27


def test_sampling_ignores_generation_config(tiny):
    model, tok = tiny
    s = TransformersSampler(model, tok)
    g = GenParams(max_new_tokens=10, block=2)
    before = s.sample(blocks(tok, PROMPTS[:1], range(2)), g)
    model.generation_config.temperature, model.generation_config.top_k, model.generation_config.do_sample = 0.1, 1, False
    assert s.sample(blocks(tok, PROMPTS[:1], range(2)), g) == before


def test_finish_reason_stop_when_end_of_turn_is_forced(tiny):
    model, tok = tiny
    from curator.ml.chat import end_of_turn_id

    eot = end_of_turn_id(tok)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[eot] = 1.0
        model.model.norm.weight.fill_(50.0)
    out = TransformersSampler(model, tok).sample(blocks(tok, PROMPTS[:1], range(2)), GenParams(max_new_tokens=5, block=2))
    assert [(x.finish_reason, x.n_tokens, x.text) for x in out[0]] == [("stop", 0, "")] * 2


def test_generator_reuses_rollouts_when_k_grows(tiny_model_dir, tmp_path):
    gen = GenParams(max_new_tokens=8, block=2)
    a = RolloutGenerator(tmp_path / "run", str(tiny_model_dir))
    first = a.rollouts(PROMPTS[:2], 2, gen)
    assert a.sampler().n_rows == 4
    again = a.rollouts(PROMPTS[:2], 2, gen)
    assert again == first and a.sampler().n_rows == 4  # same config: no generation
    b = RolloutGenerator(tmp_path / "run", str(tiny_model_dir))  # a fresh process reads the store
    grown = b.rollouts(PROMPTS[:2], 6, gen)
    assert b.sampler().n_rows == 8  # only j = 2..5 of each prompt
    assert [rs[:2] for rs in grown] == first
    assert [r["j"] for r in grown[0]] == list(range(6))
    # a brand-new run dir with k=6 at once gives the same rollouts as growing 2 -> 6
    c = RolloutGenerator(tmp_path / "other", str(tiny_model_dir))
    assert [[r["text"] for r in rs] for rs in c.rollouts(PROMPTS[:2], 6, gen)] == \
           [[r["text"] for r in rs] for rs in grown]
    table = pq.read_table(tmp_path / "run" / "cache" / "rollouts")
    assert table.num_rows == 12 and set(ROLLOUT_SCHEMA.names) <= set(table.column_names)
    row = table.to_pylist()[0]
    assert json.loads(row["gen_params"])["max_new_tokens"] == 8 and row["finish_reason"] in ("stop", "length")
    # another seed is another rollout identity
    other = a.rollouts(PROMPTS[:1], 2, GenParams(max_new_tokens=8, block=2, seed=1))
    assert other[0][0]["group_id"] != first[0][0]["group_id"]


def test_part_store_add_get(tmp_path):
    store = PartStore(tmp_path, "k", __import__("pyarrow").schema([("k", "string"), ("v", "int64")]))
    store.add([{"k": "a", "v": 1}, {"k": "b", "v": 2}])
    store.add([{"k": "c", "v": 3}])
    assert len(list(tmp_path.glob("part-*.parquet"))) == 2
    fresh = PartStore(tmp_path, "k", store.schema)
    assert fresh.get(["a", "c", "zz"]) == {"a": {"k": "a", "v": 1}, "c": {"k": "c", "v": 3}}


class CountingJudge:
    name = "counting"

    def __init__(self):
        self.calls = 0

    def fingerprint(self):
        return "counting-v1"

    def judge(self, pairs):
        self.calls += len(pairs)
        return [Verdict(len(r) % 2 == 0, None, "len parity", self.name) for _, r in pairs]


def test_verdict_cache_judges_only_new_pairs_and_caches_ensemble_members(tmp_path):
    cache = VerdictCache(tmp_path)
    j = CountingJudge()
    pairs = [("p", "aa"), ("p", "abc"), ("q", "aa")]
    first = cache.judge(j, pairs)
    assert j.calls == 3 and [v.harmful for v in first] == [True, False, True]
    assert cache.judge(j, pairs + [("p", "zzzz")]) == first + [Verdict(True, None, "len parity", "counting")]
    assert j.calls == 4
    ens = EnsembleJudge([j, KeywordRefusalJudge()])
    out = VerdictCache(tmp_path).judge(ens, [("p", "aa"), ("p", "I cannot help with that.")])
    assert j.calls == 5  # "aa" was cached; only the refusal text is new to the counting judge
    assert [v.harmful for v in out] == [True, None]  # (T,T) -> harmful; (T,F) with J=2 -> tie


def test_vllm_missing_is_a_clear_error(tiny_model_dir):
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(RecipeError, match="vllm"):
            VLLMSampler(tiny_model_dir, None)
        with pytest.raises(RecipeError, match="pip install vllm"):
            check_backend("vllm")
    check_backend("transformers")


@pytest.mark.slow
def test_default_model_blocks_are_batch_composition_invariant():
    """On SmolLM2 (where cross-prompt padding does move logits), blocks stay bit-identical."""
    from curator.ml.models import load_model
    from curator.refdata.anchors import advbench

    lm = load_model("default", device="cpu")
    s = TransformersSampler(lm.model, lm.tokenizer)
    prompts = advbench()["prompt"].to_pylist()[:3]
    g = GenParams(max_new_tokens=24, block=4)
    together = s.sample(blocks(lm.tokenizer, prompts, range(4)), g)
    alone = [s.sample(blocks(lm.tokenizer, [p], range(4)), g)[0] for p in prompts[::-1]][::-1]
    assert together == alone
