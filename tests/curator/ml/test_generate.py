"""``curator.ml.generate``: inverse-CDF token choice, batch-invariant seeded blocks, explicit parameters,
greedy decoding."""

import numpy as np
import pytest
import torch

from curator.hashing import sha256_text
from curator.ml.chat import end_of_turn_id, render_generation_prompt
from curator.ml.generate import BlockSampler, Sampling, choose_tokens, greedy_generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["hello there", "how do i bake bread at home? mix flour", "the quick brown fox jumps over the lazy dog"]


def blocks(tok, prompts, js, seed=0):
    return [(render_generation_prompt(tok, p), [int(sha256_text(seed, p, j)[:15], 16) for j in js]) for p in prompts]


def test_choose_tokens_filters_and_inverse_cdf():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]] * 2)
    u = np.array([0.0, 0.999999])
    assert choose_tokens(logits, u, Sampling(temperature=0)).tolist() == [3, 3]
    assert choose_tokens(logits, u, Sampling(top_k=1)).tolist() == [3, 3]
    assert choose_tokens(logits, u, Sampling(top_p=0.01)).tolist() == [3, 3]
    # top_k=2 keeps tokens 2, 3: u=0 -> the first kept token in id order, u~1 -> the last one
    assert choose_tokens(logits, u, Sampling(top_k=2)).tolist() == [2, 3]
    # the empirical distribution of inverse-CDF draws matches softmax
    many = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).expand(20000, -1)
    draws = choose_tokens(many, np.random.default_rng(0).random(20000), Sampling()).numpy()
    freq = np.bincount(draws, minlength=4) / 20000
    assert np.allclose(freq, torch.softmax(torch.tensor([0.0, 1, 2, 3]), 0).numpy(), atol=0.01)


def test_block_output_independent_of_other_prompts_and_order(tiny):
    model, tok = tiny
    s = BlockSampler(model, tok)
    g = Sampling(max_new_tokens=12)
    alone = [s.sample(blocks(tok, [p], range(3)), g)[0] for p in PROMPTS]
    together = s.sample(blocks(tok, PROMPTS, range(3)), g)
    reverse = s.sample(blocks(tok, PROMPTS[::-1], range(3)), g)[::-1]
    assert alone == together == reverse
    assert len({x.text for b in together for x in b}) == 9  # rows of a block differ (own seeds)
    assert s.n_rows == 27
    seeds = [sd for _, sd in blocks(tok, PROMPTS, range(3))]
    assert s.sample_prompts(PROMPTS, seeds, g) == together  # rendered with the chat template


def test_sampling_ignores_generation_config(tiny):
    model, tok = tiny
    s = BlockSampler(model, tok)
    g = Sampling(max_new_tokens=10)
    before = s.sample(blocks(tok, PROMPTS[:1], range(2)), g)
    model.generation_config.temperature, model.generation_config.top_k, model.generation_config.do_sample = 0.1, 1, False
    assert s.sample(blocks(tok, PROMPTS[:1], range(2)), g) == before


def test_finish_reason_stop_when_end_of_turn_is_forced(tiny):
    model, tok = tiny
    eot = end_of_turn_id(tok)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[eot] = 1.0
        model.model.norm.weight.fill_(50.0)
    out = BlockSampler(model, tok).sample(blocks(tok, PROMPTS[:1], range(2)), Sampling(max_new_tokens=5))
    assert [(x.finish_reason, x.n_tokens, x.text) for x in out[0]] == [("stop", 0, "")] * 2


def test_greedy_generate_matches_temperature_zero_blocks_and_is_batch_independent(tiny):
    model, tok = tiny
    texts = greedy_generate(model, tok, PROMPTS, 8, batch_size=2)
    assert texts == [greedy_generate(model, tok, [p], 8, batch_size=1)[0] for p in PROMPTS]
    blocks_greedy = BlockSampler(model, tok).sample_prompts(PROMPTS, [[0]] * 3, Sampling(temperature=0, max_new_tokens=8))
    assert [b[0].text.strip() for b in blocks_greedy] == texts


@pytest.mark.slow
def test_default_model_blocks_are_batch_composition_invariant():
    """On SmolLM2 (where cross-prompt padding does move logits), blocks stay bit-identical."""
    from curator.ml.models import load_model
    from curator.refdata.anchors import advbench

    lm = load_model("default", device="cpu")
    s = BlockSampler(lm.model, lm.tokenizer)
    prompts = advbench()["prompt"].to_pylist()[:3]
    g = Sampling(max_new_tokens=24)
    together = s.sample(blocks(lm.tokenizer, prompts, range(4)), g)
    alone = [s.sample(blocks(lm.tokenizer, [p], range(4)), g)[0] for p in prompts[::-1]][::-1]
    assert together == alone
