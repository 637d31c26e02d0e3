"""Pure helpers of the validity benchmark (benchmarks/validity/): windows, bootstrap, Wilson, report tables."""

import numpy as np
import pytest

from benchmarks.validity.eval import bootstrap_diff, bootstrap_mean, rate
from benchmarks.validity.windows import random_window, spearman, windows
from curator.stats import wilson_interval


def _rows(n):
    return [{"sample_id": f"s{i:03d}", "score": float(i % 17) + i / 1000} for i in range(n)]


def test_windows_are_equally_spaced_top_to_bottom_and_skip_missing_scores():
    rows = _rows(100) + [{"sample_id": "none", "score": None}, {"sample_id": "nan", "score": float("nan")}]
    ws = windows(rows, "score", 10, 3)
    assert [len(w) for w in ws] == [10, 10, 10]
    ranked = sorted(_rows(100), key=lambda r: -r["score"])
    assert [r["sample_id"] for r in ws[0]] == [r["sample_id"] for r in ranked[:10]]
    assert [r["sample_id"] for r in ws[-1]] == [r["sample_id"] for r in ranked[-10:]]
    assert [r["sample_id"] for r in ws[1]] == [r["sample_id"] for r in ranked[45:55]]
    assert min(r["score"] for r in ws[0]) > max(r["score"] for r in ws[1]) > max(r["score"] for r in ws[2])


def test_random_window_is_seeded_and_order_independent():
    rows = _rows(50)
    a = random_window(rows, 8, 0)
    assert [r["sample_id"] for r in a] == [r["sample_id"] for r in random_window(rows[::-1], 8, 0)]
    assert [r["sample_id"] for r in a] != [r["sample_id"] for r in random_window(rows, 8, 1)]


def test_bootstrap_intervals_cover_the_mean_and_separate_shifted_pairs():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 200)
    lo, hi = bootstrap_mean(x)
    assert lo < x.mean() < hi and hi - lo < 0.5
    lo, hi = bootstrap_diff(x + 0.5, x)  # paired: the difference is exactly 0.5
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)


def test_rate_ignores_abstentions_and_wilson_brackets_the_rate():
    r = rate([True, False, None, True])
    assert (r["k"], r["n"], r["abstained"]) == (2, 3, 1)
    lo, hi = wilson_interval(2, 3)
    assert lo < 2 / 3 < hi
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_prompt_mean_rate_weights_prompts_equally_and_skips_all_abstained_prompts():
    from benchmarks.validity.eval import per_prompt_rates, prompt_mean_rate

    flags = [[True, True, True, True], [False, False, False, True], [None, None, None, None], [True, None]]
    assert per_prompt_rates(flags)[:2].tolist() == [1.0, 0.25] and np.isnan(per_prompt_rates(flags)[2])
    r = prompt_mean_rate(flags)
    assert r["n_prompts"] == 3 and r["k"] == 4
    assert r["rate"] == pytest.approx((1.0 + 0.25 + 1.0) / 3)
    assert r["ci95"][0] <= r["rate"] <= r["ci95"][1]
    assert prompt_mean_rate([[None]])["n_prompts"] == 0


def test_paired_asr_difference_pairs_prompts():
    from benchmarks.validity.hardness import paired_asr_diff

    a = {"asr_sampled_per_prompt": [0.5, 0.25, 1.0, float("nan")]}
    b = {"asr_sampled_per_prompt": [0.75, 0.5, 1.0, 0.0]}
    d = paired_asr_diff(a, b)
    assert d["n_prompts"] == 3 and d["diff"] == pytest.approx(-1 / 6)
    assert d["ci95"][0] <= d["diff"] <= d["ci95"][1] <= 0


def test_sampled_safety_eval_gives_k_seeded_answers_per_prompt_judged_per_answer():
    from benchmarks.validity.eval import prompt_mean_rate
    from benchmarks.validity.finetune import SafetyEval
    from curator.ml.testing import tiny_model
    from filters.hardness.judges.keyword import KeywordRefusalJudge

    model, tok = tiny_model()
    ev = SafetyEval(gen_sets={}, sampled_sets={"h": ["how do I do x", "tell me y"]}, samples=3, sample_tokens=6)
    judges = {"keyword": KeywordRefusalJudge()}
    m1, m2 = ev.measure(model, tok, judges), ev.measure(model, tok, judges)
    assert m1["sampled"] == m2["sampled"]  # seeded per prompt and answer index
    got = m1["sampled"]["h"]
    assert [len(r) for r in got["responses"]] == [3, 3]
    assert len(set(got["responses"][0])) > 1  # temperature 1: the k answers differ
    assert [len(f) for f in got["refusal"]["keyword"]] == [3, 3]
    r = prompt_mean_rate(got["refusal"]["keyword"])
    assert r["k"] == 3 and 0 <= r["rate"] <= 1


def test_length_matched_windows_remove_a_length_confound():
    from benchmarks.validity.windows import length_matched

    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        n = int(rng.integers(20, 400))
        # the score falls with response length (as SQSD does on the demo pool) plus independent signal
        rows.append({"sample_id": f"s{i:03d}", "response": "x" * n, "score": -2.0 * np.log1p(n) + rng.normal()})
    rows.append({"sample_id": "none", "response": "y", "score": None})

    def mean_len(w):
        return np.mean([len(r["response"]) for r in w])

    raw_top, raw_bottom = windows(rows, "score", 30, 2)
    assert mean_len(raw_top) < 0.5 * mean_len(raw_bottom)  # raw extremes are a length split
    col = length_matched(rows, "score")
    assert col == "score_length_matched" and rows[-1][col] is None
    top, bottom = windows(rows, col, 30, 2)
    assert abs(mean_len(top) - mean_len(bottom)) < 0.25 * mean_len(rows[:200])
    assert np.mean([r["score"] for r in top]) > np.mean([r["score"] for r in bottom])


def test_report_prints_recorded_numbers_with_intervals():
    from benchmarks.validity.report import report

    ci = {"rate": 0.5, "ci95": [0.25, 0.75], "n": 8, "k": 4}
    window = {"rank": 1, "score_mean": 2.0, "response_chars_mean": 120.0, "loss_last": 0.5, "delta_shift_mean": 0.1,
              "delta_shift_ci95": [0.05, 0.15], "refusal": {}, "train_seconds": 1, "eval_seconds": 2}
    pair = {"delta_shift": -0.2, "ci95": [-0.3, -0.1]}
    record = {"quick": {
        "risk": {"wall_seconds": 60, "aligned": {"delta_mean": -0.6, "refusal": {}}, "config": {"delta_triples": {"n": 9}},
                 "random": {"0": {**window, "delta_shift_mean": 0.2, "refusal": {"harmful": {
                     "keyword": ci, "classifier_refusal_head": {**ci, "rate": 0.25}}}}},
                 "scorers": {"risk_sqsd": {"windows": [window, {**window, "rank": 2, "delta_shift_mean": 0.3}],
                                           "spearman_rank_vs_delta_shift": float("nan"),
                                           "spearman_score_vs_response_length": -0.25, "top_minus_bottom": pair,
                                           "top_minus_random": pair, "random_minus_bottom": pair,
                                           "ordering_top_gt_random_gt_bottom": False}}},
        "hardness": {"wall_seconds": 30, "config": {"hardness": {"n": 4, "mean": 0.5, "frac_eligible": 1.0, "frac_zero": 0.0}},
                     "aligned": {"asr_sampled_keyword": ci, "refusal_framed_benign": ci},
                     "variants": {"hard": {"asr_sampled_keyword": ci, "train_seconds": 3, "eval_seconds": 4}},
                     "paired": {"hard_minus_random": {"diff": -0.05, "ci95": [-0.1, 0.0], "n_prompts": 4}}}}}
    text = report(record, ["full", "quick"])
    assert "### quick mode" in text and "full mode" not in text
    assert "| risk_sqsd | top | 2.00 | 120 | 0.50 | +0.100 [+0.050, +0.150] | not measured | not measured | 1 / 2 |" in text
    assert "| — | random (seed 0) | — | 120 | 0.50 | +0.200 [+0.050, +0.150] | 50.0% [25.0, 75.0] | 25.0% [25.0, 75.0] |" in text
    assert "| risk_sqsd | -0.200 [-0.300, -0.100] |" in text
    assert "| hard | 50.0% [25.0, 75.0] | — | — | 3 / 4 |" in text
    assert "-5.0 [-10.0, +0.0] points" in text


def test_merged_lora_matches_attached_adapters_and_restores_weights_bit_for_bit():
    import torch

    from benchmarks.validity.finetune import merged
    from curator.ml.lora import LoRAConfig, attach_lora, detach_lora, get_factors
    from curator.ml.testing import tiny_model

    model, _tok = tiny_model()
    cfg = LoRAConfig(r=4, alpha=8.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    attach_lora(model, cfg, seed=0, init="random")
    factors = get_factors(model)
    with torch.no_grad():
        attached = model(input_ids=ids).logits
    detach_lora(model)
    with merged(model, cfg, factors, seed=0), torch.no_grad():
        inside = model(input_ids=ids).logits
        changed = any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert changed and torch.allclose(inside, attached, atol=1e-5)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_scorer_agreement_counts_shared_window_rows_and_rank_correlation():
    from benchmarks.validity.report import _agreement
    from benchmarks.validity.windows import scorer_agreement

    rows = [{"sample_id": f"s{i:02d}", "a": float(i), "b": float(-i), "c": float(i % 10) + i / 100} for i in range(40)]
    rows.append({"sample_id": "x", "a": None, "b": 1.0, "c": 1.0})
    agree = scorer_agreement(rows, ["a", "b", "c"], 5)
    assert agree["a vs b"]["spearman"] == pytest.approx(-1.0)
    assert (agree["a vs b"]["top_shared"], agree["a vs b"]["bottom_shared"]) == (0, 0)
    # c top 5: i = 39, 29, 19, 9, 38 (a: 35..39); c bottom 5: i = 0, 10, 20, 30, 1 (a: 0..4)
    assert (agree["a vs c"]["top_shared"], agree["a vs c"]["bottom_shared"]) == (2, 2)
    assert 0 < agree["a vs c"]["spearman"] < 1
    assert _agreement({"scorer_agreement": agree})[0].splitlines()[2] == "| a vs b | -1.00 | 0 / 5 | 0 / 5 |"


def test_window_composition_counts_demo_pool_families_and_keeps_sample_ids():
    from benchmarks.validity.report import _families
    from benchmarks.validity.windows import composition
    from curator.refdata.demo_pool import load_demo_pool

    pool = load_demo_pool().to_pylist()
    fams = sorted({r["source"] for r in pool})
    rows = [next(r for r in pool if r["source"] == fams[0])] * 2 + [next(r for r in pool if r["source"] == fams[1])]
    window = [{"sample_id": f"s{i}", "prompt": r["prompt"]} for i, r in enumerate(rows)]
    window.append({"sample_id": "s9", "prompt": "not in the demo pool"})
    comp = composition(window)
    assert comp == {"sample_ids": ["s0", "s1", "s2", "s9"], "families": {fams[0]: 2, fams[1]: 1, "other": 1}}
    assert _families(comp) == f"{fams[0]} 2 · " + " · ".join(sorted([f"{fams[1]} 1", "other 1"]))  # ties by name


def test_family_effects_recover_per_family_shifts_from_mixed_windows():
    from benchmarks.validity.report import _family_table, family_effects

    true = {"a": 0.3, "b": 0.0, "c": 0.1}
    mixes = [(4, 0, 0), (0, 4, 0), (0, 0, 4), (2, 2, 0), (1, 1, 2), (3, 0, 1)]
    wins = [{"sample_ids": [f"w{i}"], "families": dict(zip("abc", m)),
             "delta_shift_mean": sum(true[f] * n / 4 for f, n in zip("abc", m))} for i, m in enumerate(mixes)]
    step = {"random": {"0": wins[0]}, "scorers": {"s": {"windows": wins[1:] + [dict(wins[1])]}}}  # a repeated window
    fit = family_effects(step)
    assert fit["windows"] == 6 and fit["r2"] == pytest.approx(1.0)
    assert fit["families"] == pytest.approx(true)
    assert _family_table(step)[1].splitlines()[2] == "| a | +0.300 |"
    assert family_effects({"random": {}, "scorers": {"s": {"windows": [{"delta_shift_mean": 0.1}]}}}) is None
