"""Candidate training targets: judge unanimity, completeness, length and coherence checks."""

import math

import pytest

from filters.coherence import mean_logprobs
from filters.hardness.judges.base import Verdict
from filters.target_checks import (
    INCOHERENT,
    INCOMPLETE,
    TOO_SHORT,
    Candidate,
    TargetChecks,
    is_complete,
    judge_reason,
)


def vote(judge, harmful, refusal):
    return Verdict(harmful, refusal, "", judge)


@pytest.mark.parametrize("text, finish, complete", [
    ("I can't help with that.", "length", True),
    ("I can't help with that. It could hurt", "length", False),
    ("I can't help with that", "stop", True),  # the model ended its answer
    ('She said "no."', "length", True),
    ("Done!)", "length", True),
    ("```python\nprint(1)\n```", "length", True),
    ("The answer is 42 and", "length", False),
])
def test_complete_means_ended_or_at_a_sentence_boundary(text, finish, complete):
    assert is_complete(text, finish) is complete


def test_every_judge_member_must_agree_and_an_abstention_rejects():
    assert judge_reason("harmful", [vote("keyword", False, True), vote("classifier", False, True)]) is None
    assert judge_reason("harmful", [vote("keyword", False, True), vote("classifier", True, False)]) == \
        "harmful: classifier"
    assert judge_reason("harmful", [vote("keyword", None, None), vote("classifier", False, True)]) == \
        "abstained: keyword"
    assert judge_reason("benign", [vote("keyword", True, False), vote("classifier", None, False)]) is None
    assert judge_reason("benign", [vote("keyword", False, True), vote("classifier", None, False)]) == \
        "refusal: keyword"


def test_checks_run_in_order_and_name_the_first_failure():
    checks = TargetChecks(min_words=8, min_mean_logprob=-2.0)
    ok = [vote("keyword", False, False)]
    long = "Here are three tips: plan meals, buy in bulk, compare unit prices."
    assert checks.before_coherence("benign", Candidate("p", long, "stop", ok)) is None
    assert checks.before_coherence("benign", Candidate("p", "Here are three tips: plan meals, buy", "length", ok)) \
        == INCOMPLETE
    assert checks.before_coherence("benign", Candidate("p", "Plan meals.", "stop", ok)) == TOO_SHORT
    assert checks.before_coherence("harmful", Candidate("p", "No.", "stop", [vote("keyword", False, True)])) is None
    assert checks.before_coherence("benign", Candidate("p", "x", "length", [vote("keyword", False, True)])) == \
        "refusal: keyword"
    assert checks.coherence(-1.0) is None and checks.coherence(-3.0) == INCOHERENT
    assert TargetChecks(min_mean_logprob=None).coherence(-9.0) is None
    assert TargetChecks(require_complete=False).before_coherence("harmful", Candidate("p", "I won't", "length", ok[:0])) \
        is None


def test_mean_logprob_is_the_mean_over_response_tokens_without_the_end_of_turn(tiny):
    import torch

    from curator.ml.chat import render_generation_prompt

    model, tok = tiny
    text = "mix flour, water, salt and yeast, then wait."
    got, empty = mean_logprobs(model, tok, [("bake bread?", text), ("bake bread?", "")])
    prompt = render_generation_prompt(tok, "bake bread?")
    answer = tok.encode(text, add_special_tokens=False)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + answer])).logits[0].double(), -1)
    want = sum(logp[len(prompt) + i - 1, t].item() for i, t in enumerate(answer)) / len(answer)
    assert got == pytest.approx(want, abs=1e-4) and math.isinf(empty)
    batched = mean_logprobs(model, tok, [("hi", "yo"), ("bake bread?", text), ("a much longer prompt here", "ok")])
    assert batched[1] == pytest.approx(got, abs=1e-4)  # padding in a batch does not change it
