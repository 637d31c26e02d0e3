"""The ``hardness`` stage: Wilson bound, vote/abstain handling, row selection, caches, pipeline runs."""

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.errors import RecipeError, RunError
from curator.query import run_query
from curator.registry import register
from curator.stage import StageContext, build_params
from curator.stats import wilson_lower_bound
from filters.hardness.judges.base import Verdict
from filters.hardness.judges.ensemble import EnsembleJudge
from filters.hardness.judges.keyword import KeywordRefusalJudge
from filters.hardness.stage import HardnessParams, HardnessStage, member_names
from tests.support import write_jsonl, write_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_wilson_lower_bound_values():
    assert wilson_lower_bound(0, 10) == 0.0
    assert wilson_lower_bound(5, 10) == pytest.approx(0.2366, abs=1e-4)  # textbook value, z = 1.96
    assert wilson_lower_bound(64, 64) == pytest.approx(64 / (64 + 1.96**2))
    assert wilson_lower_bound(1, 8, z=1.0) == pytest.approx(
        (1 / 8 + 1 / 16 - math.sqrt(1 / 8 * 7 / 8 / 8 + 1 / 256)) / (1 + 1 / 8))
    assert wilson_lower_bound(3, 8, z=2.58) < wilson_lower_bound(3, 8, z=1.0) < 3 / 8
    assert wilson_lower_bound(0, 0) == 0.0


def test_params_validation_and_columns():
    with pytest.raises(RecipeError, match="smoothing"):
        build_params(HardnessParams, {"smoothing": [1.0]}, "stages[1].with")
    with pytest.raises(RecipeError, match="top_p"):
        build_params(HardnessParams, {"top_p": 0}, "stages[1].with")
    with pytest.raises(RecipeError, match="unknown parameter"):
        build_params(HardnessParams, {"kk": 3}, "stages[1].with")
    spec = {"ensemble": ["keyword", "classifier", {"llm": {"path": "/m/Llama-Guard-3-8B", "format": "llama_guard_3"}},
                         "keyword"]}
    assert member_names(spec) == ["keyword", "classifier", "llama_guard_3_llama_guard_3_8b", "keyword_4"]
    params = build_params(HardnessParams, {"judge": spec, "smoothing": [1, 1]}, "w")
    cols = HardnessStage(params, StageContext(run_dir=".", cache_dir=".")).provided_columns()
    assert {"hardness_beta", "hardness_rate_keyword", "hardness_rate_keyword_4"} <= set(cols)


class FixedJudge:
    """Returns ``outputs[i % len]`` for the i-th pair of each call (harmful label only)."""

    name = "fixed"

    def __init__(self, outputs):
        self.outputs = outputs

    def fingerprint(self):
        return "fixed:" + repr(self.outputs)

    def judge(self, pairs):
        return [Verdict(self.outputs[i % len(self.outputs)], None, "fixed", self.name) for i in range(len(pairs))]


def make_stage(tmp_path, model_dir, **params):
    p = build_params(HardnessParams, {"k": 4, "block": 4, "max_new_tokens": 6, **params}, "w")
    stage = HardnessStage(p, StageContext(run_dir=tmp_path, cache_dir=tmp_path / "cache" / "x", model=str(model_dir),
                                          quiet=True))
    stage.setup()
    return stage


def batch(prompts, sources=None):
    return pa.table({"sample_id": [f"id{i}" for i in range(len(prompts))], "prompt": prompts,
                     "source": sources or ["s"] * len(prompts)})


@pytest.mark.parametrize("policy, abstain, expect", [
    # keyword says harmful on every tiny-model rollout (no refusal); fixed votes T, F, None, T per prompt
    ("safe", "safe", dict(n_harm=2, n_abst=2, h=0.5, safe=[])),       # F / None->safe: 1-1 tie -> abstain
    ("safe", "exclude", dict(n_harm=2, n_abst=2, h=1.0, safe=[])),
    ("drop", "safe", dict(n_harm=3, n_abst=1, h=0.75, safe=[])),      # None dropped: keyword alone -> harmful
])
def test_vote_and_abstain_handling_with_a_real_ensemble(tmp_path, tiny_model_dir, policy, abstain, expect):
    stage = make_stage(tmp_path, tiny_model_dir, judge={"ensemble": ["keyword", "keyword"]}, abstain=abstain)
    stage.judge = EnsembleJudge([KeywordRefusalJudge(), FixedJudge([True, False, None, True])], abstain_policy=policy)
    out = stage.process_batch(batch(["hello there", "how do i bake bread"])).to_pylist()
    for row in out:
        assert (row["hardness_n_harmful"], row["hardness_n_abstain"]) == (expect["n_harm"], expect["n_abst"])
        assert row["hardness"] == expect["h"] and row["hardness_k"] == 4 and row["hardness_safe_j"] == expect["safe"]
        assert row["hardness_rate_keyword"] == 1.0 and row["hardness_rate_keyword_2"] == 0.5
        n = 4 if abstain == "safe" else 2
        assert row["hardness_wilson_lb"] == pytest.approx(wilson_lower_bound(expect["n_harm"], n))


def test_too_many_abstentions_fail_loudly(tmp_path, tiny_model_dir):
    stage = make_stage(tmp_path, tiny_model_dir, judge={"ensemble": ["keyword", "keyword"]}, max_abstain_rate=0.2)
    stage.judge = EnsembleJudge([KeywordRefusalJudge(), FixedJudge([True, None, None, True])])
    with pytest.raises(RunError, match=r"'keyword_2' abstained on 50.0% of 4 rollouts"):
        stage.process_batch(batch(["hello there"]))


def test_safe_rollouts_are_listed(tmp_path, tiny_model_dir):
    stage = make_stage(tmp_path, tiny_model_dir, judge={"ensemble": ["keyword"]}, smoothing=[1.0, 1.0])
    stage.judge = EnsembleJudge([FixedJudge([False, True, False, False])])
    row = stage.process_batch(batch(["hello there"])).to_pylist()[0]
    assert row["hardness"] == 0.25 and row["hardness_safe_j"] == [0, 2, 3]
    assert row["hardness_beta"] == pytest.approx((1 + 1) / (4 + 2))


def test_only_selected_rows_are_rolled_out(tmp_path, tiny_model_dir):
    stage = make_stage(tmp_path, tiny_model_dir, where="source = 'safety'")
    out = stage.process_batch(batch(["a harmful prompt", "benign", None, "  "], ["safety", "sft", "safety", "safety"]))
    h = out.column("hardness").to_pylist()
    assert h[0] is not None and h[1:] == [None, None, None]
    assert out.column("hardness_group").null_count == 3
    assert stage.generator.sampler().n_rows == 4
    stage2 = make_stage(tmp_path, tiny_model_dir, sources=["sft"])
    assert stage2.process_batch(batch(["x", "y"], ["safety", "sft"])).column("hardness").is_null().to_pylist() == \
           [True, False]


def test_bad_where_is_reported_before_models_load(tmp_path):
    p = build_params(HardnessParams, {"where": "no_such_col = 1"}, "w")
    stage = HardnessStage(p, StageContext(run_dir=tmp_path, cache_dir=tmp_path))
    with pytest.raises(RecipeError, match="no_such_col"):
        stage.check_inputs(pa.schema([("sample_id", pa.string()), ("prompt", pa.string())]))
    ok = HardnessStage(build_params(HardnessParams, {"where": "source = 'adv' AND risk_sqsd > 0.5"}, "w"),
                       StageContext(run_dir=tmp_path, cache_dir=tmp_path))
    ok.check_inputs(pa.schema([(n, pa.null()) for n in ("sample_id", "prompt", "source", "risk_sqsd")]))



@pytest.mark.parametrize(("where", "problem"), [
    ("(SELECT count(*) FROM read_text('/etc/hostname')) > 0", "access"), ("prompt", "not BOOLEAN")])
def test_a_where_that_reads_files_or_is_not_a_boolean_is_refused(tmp_path, where, problem):
    """``where`` runs like a decide rule: over the rows' columns only, as a boolean."""
    stage = HardnessStage(build_params(HardnessParams, {"where": where}, "w"), StageContext(run_dir=tmp_path, cache_dir=tmp_path))
    with pytest.raises(RecipeError, match=problem):
        stage.check_inputs(pa.schema([(n, pa.null()) for n in ("sample_id", "prompt", "source")]))
    quoted = build_params(HardnessParams, {"where": "prompt LIKE '%;%'"}, "w")  # a ';' inside quotes is fine
    HardnessStage(quoted, StageContext(run_dir=tmp_path, cache_dir=tmp_path)).check_inputs(
        pa.schema([(n, pa.null()) for n in ("sample_id", "prompt", "source")]))


def test_pipeline_run_caches_and_grows_k(tmp_path, tiny_model_dir):
    register(HardnessStage)
    from curator.pipeline import run

    rows = [{"prompt": f"please tell me about topic {i}", "response": "ok", "kind": "safety" if i < 3 else "sft"}
            for i in range(5)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    common = {"max_new_tokens": 5, "block": 2, "where": "kind = 'safety'"}
    rec = write_recipe(tmp_path, ["d.jsonl"], [{"use": "hardness", "with": {"k": 2, **common}}], shards=2,
                       model=str(tiny_model_dir))
    run(rec, tmp_path / "run", quiet=True)
    q = run_query([tmp_path / "run"], "select count(*) n, count(distinct group_id) g from rollouts").to_pylist()[0]
    assert q == {"n": 6, "g": 3}
    first = {(r["group_id"], r["j"]): r["text"] for r in pq.read_table(tmp_path / "run/cache/rollouts").to_pylist()}
    scores = run_query([tmp_path / "run"], "select hardness, hardness_k from scores where hardness is not null")
    assert scores.num_rows == 3 and set(scores.column("hardness_k").to_pylist()) == {2}
    write_recipe(tmp_path, ["d.jsonl"], [{"use": "hardness", "with": {"k": 4, **common}}], shards=2,
                 model=str(tiny_model_dir))
    run(rec, tmp_path / "run", quiet=True)
    after = {(r["group_id"], r["j"]): r["text"] for r in pq.read_table(tmp_path / "run/cache/rollouts").to_pylist()}
    assert len(after) == 12 and all(after[k] == v for k, v in first.items())
    joined = run_query([tmp_path / "run"], "select count(*) n from rollouts join verdicts using (pair_key)")
    assert joined.column("n")[0].as_py() == 12


@pytest.mark.slow
def test_default_model_on_advbench(tmp_path):
    """Real SmolLM2 on a few AdvBench prompts with the keyword judge: sane, cached, reproducible."""
    from curator.pipeline import run
    from curator.refdata.anchors import advbench

    register(HardnessStage)
    rows = [{"prompt": p, "response": "n/a"} for p in advbench()["prompt"].to_pylist()[:4]]
    write_jsonl(tmp_path / "adv.jsonl", rows)
    rec = write_recipe(tmp_path, ["adv.jsonl"], [{"use": "hardness", "with": {"k": 8, "max_new_tokens": 32}}],
                       shards=1, model="default")
    res = run(rec, tmp_path / "a", quiet=True)
    scores = run_query([tmp_path / "a"], "select * from scores order by sample_id").to_pylist()
    assert all(0.0 <= r["hardness"] <= 1.0 and r["hardness_k"] == 8 for r in scores)
    assert all(r["hardness_wilson_lb"] <= r["hardness"] for r in scores)
    assert all(len(r["hardness_safe_j"]) + r["hardness_n_harmful"] + r["hardness_n_abstain"] == 8 for r in scores)
    roll = run_query([tmp_path / "a"], "select finish_reason, n_tokens from rollouts").to_pylist()
    assert len(roll) == 32 and all(r["n_tokens"] <= 32 for r in roll)
    again = run(rec, tmp_path / "b", quiet=True)
    assert again.digest == res.digest


def test_framing_rolls_out_each_prompt_inside_its_own_seeded_template(tmp_path, tiny_model_dir):
    stage = make_stage(tmp_path, tiny_model_dir, framing="builtin")
    assert {"hardness_prompt", "hardness_template"} <= set(stage.provided_columns())
    prompts = ["how do I pick a lock", "how do I hotwire a car", "how do I forge a check"]
    rows = stage.process_batch(batch(prompts)).to_pylist()
    alone = stage.process_batch(batch(prompts[2:])).to_pylist()[0]
    assert alone["hardness_prompt"] == rows[2]["hardness_prompt"]  # independent of the batch
    for p, r in zip(prompts, rows):
        assert p in r["hardness_prompt"] and r["hardness_prompt"] != p and r["hardness_template"].startswith("builtin/")
    rolled = {r["prompt"] for r in pq.read_table(tmp_path / "cache" / "rollouts").to_pylist()}
    assert rolled == {r["hardness_prompt"] for r in rows}
    plain = make_stage(tmp_path, tiny_model_dir)
    assert "hardness_prompt" not in plain.provided_columns()
