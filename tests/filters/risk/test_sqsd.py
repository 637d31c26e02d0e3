"""risk.sqsd: low-rank identities vs dense, stage == batch-1 dense reference, cache resume, NaN flags,
end-to-end recipe run; slow: held-out anchor separation on the default model."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from curator.errors import RecipeError
from curator.ml.chat import encode_sample
from curator.ml.lora import LoRAConfig
from curator.ml.models import load_model, resolve_model
from curator.ml.testing import save_tiny_model
from curator.ml.training import TrainConfig
from curator.pipeline import run
from curator.refdata.anchors import danger_anchors, safety_anchors, split
from curator.registry import register
from curator.samples import MESSAGE_TYPE
from curator.stage import StageContext, build_params
from filters.risk import directions as dirs
from filters.risk.dense_reference import reference_scores
from filters.risk.lowrank import LowRankDirection, module_scores, update_dot, update_norm_sq
from filters.risk.sqsd import SQSDStage
from tests.support import write_jsonl, write_recipe

ROWS = [
    {"prompt": "how do i bake bread at home?", "response": "mix flour, water, salt and yeast, then wait."},
    {"prompt": "hi", "response": "hello"},
    {"prompt": "explain why the sky is blue", "response": "sure! here are the steps: first, second, third. " * 3},
    {"prompt": None, "response": "the quick brown fox jumps over the lazy dog"},
    {"prompt": "please list numbers", "response": "0 1 2 3 4 5 6 7 8 9 10 100 1000"},
    {"prompt": "thanks", "response": "i cannot help with that request, but here is some safety information."},
    {"prompt": None, "response": None, "messages": [{"role": "user", "content": "data curation?"},
                                                      {"role": "assistant", "content": "filters samples by risk"}]},
]


def tiny_data() -> dirs.AnchorData:
    danger = [{"prompt": f"how do i do bad thing {i}?", "response": f"sure! here are the steps: first {i}, second."}
              for i in range(12)]
    safety = [{"prompt": r["prompt"], "response": "i cannot help with that request."} for r in danger]
    initial = [{"prompt": f"question {i}: explain why", "response": f"because {i} thanks please"} for i in range(12)]
    return dirs.AnchorData(danger, safety, initial, {"test": "tiny"})


TINY_CFG = dirs.DirectionConfig(
    lora=LoRAConfig(r=4, alpha=8.0),
    danger_train=TrainConfig(lr=2e-2, epochs=2, batch_size=4, max_length=64),
    safety_train=TrainConfig(lr=2e-2, epochs=2, batch_size=4, max_length=64),
    initial_train=TrainConfig(lr=2e-2, epochs=1, batch_size=4, max_length=64),
    mean_max_length=64,
)


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """A tiny model dir, a private CURATOR_HOME, and built directions for both methods."""
    root = tmp_path_factory.mktemp("sqsd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATOR_HOME", str(root / "home"))
        model_dir = save_tiny_model(root / "model", n_layers=2, hidden=32)
        fp = resolve_model(str(model_dir)).fingerprint
        lm = load_model(str(model_dir), "cpu", cached=False)
        built = {}
        for method in ("lora", "mean_update"):
            cfg = dirs.DirectionConfig(**{**TINY_CFG.__dict__, "method": method})
            built[method] = dirs.build_directions(lm.model, lm.tokenizer, tiny_data(), cfg, root / method, fp, False)
        yield {"model_dir": model_dir, "dirs": built, "root": root, "lm": lm}


def make_stage(env, tmp_path, **params):
    params = {"method": "lora", **params}  # the trained directions unless a test says otherwise
    p = build_params(SQSDStage.Params, {"directions": str(env["dirs"][params["method"]]), **params}, "with")
    ctx = StageContext(run_dir=tmp_path, cache_dir=tmp_path / "cache", model=str(env["model_dir"]), device="cpu",
                       quiet=True)
    return SQSDStage(p, ctx)


def batch_of(rows) -> pa.RecordBatch:
    ids = [f"id{i:03d}" for i in range(len(rows))]
    return pa.RecordBatch.from_pydict({
        "sample_id": ids,
        "prompt": pa.array([r.get("prompt") for r in rows], pa.string()),
        "response": pa.array([r.get("response") for r in rows], pa.string()),
        "messages": pa.array([r.get("messages") for r in rows], MESSAGE_TYPE),
    })


def rel(a, b, scale=0.0):
    """Relative error of ``a`` vs ``b``; for sums of per-module terms the scale is Σ|term| (cancellation)."""
    return abs(a - b) / max(abs(b), scale, 1e-12)


# ----------------------------------------------------------------------------- low-rank identities


@pytest.mark.parametrize("zero_b", [False, True])
def test_lowrank_identities_match_dense(zero_b):
    g = torch.Generator().manual_seed(0)
    m, n, r, d, b = 37, 23, 4, 6, 5
    A, B = torch.randn(r, n, generator=g), torch.randn(m, r, generator=g) * (0 if zero_b else 1)
    gA, gB = torch.randn(b, r, n, generator=g), torch.randn(b, m, r, generator=g)
    P, Q = torch.randn(m, d, generator=g), torch.randn(d, n, generator=g)
    direction = LowRankDirection.from_factors(Q, P)
    dense_d = P.double() @ Q.double()
    delta = -(gB.double() @ A.double() + B.double() @ gA.double())  # [b,m,n]
    dots = (delta * dense_d).sum((1, 2))
    norms = delta.flatten(1).norm(dim=1)
    assert direction.norm == pytest.approx(float(dense_d.norm()), rel=1e-10)
    torch.testing.assert_close(update_dot(A, B, gA, gB, direction).double(), dots, rtol=1e-5, atol=0)
    torch.testing.assert_close(update_norm_sq(A, B, gA, gB).double(), norms**2, rtol=1e-5, atol=0)
    for metric, want in (("cosine", dots / (norms * dense_d.norm())), ("dot", dots),
                         ("projection", dots / dense_d.norm())):
        (got,) = module_scores(A, B, gA, gB, [direction], metric)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------- stage vs reference


@pytest.mark.parametrize("method,mode,metric", [("lora", "exact", "cosine"), ("lora", "shared_state", "cosine"),
                                                ("lora", "exact", "projection"), ("mean_update", "exact", "cosine")])
def test_stage_equals_batch1_dense_reference(tiny_env, tmp_path, method, mode, metric):
    stage = make_stage(tiny_env, tmp_path, method=method, mode=mode, metric=metric, safety_scaling=0.8,
                       batch_size=3, max_length=48)
    stage.setup()
    out = stage.process_batch(batch_of(ROWS)).to_pylist()
    d = dirs.load_directions(tiny_env["dirs"][method])
    ref = reference_scores(stage.load().model, stage.load().tokenizer, ROWS, d, safety_scaling=0.8, max_length=48,
                           metric=metric, mode=mode)
    assert [r["sample_id"] for r in out] == [f"id{i:03d}" for i in range(len(ROWS))]
    for row, r in zip(out, ref):
        assert row["flag_reason"] is None
        assert rel(row["risk_sqsd_danger"], r["danger"], r["danger_l1"]) < 1e-4, (row, r)
        assert rel(row["risk_sqsd_safety"], r["safety"], r["safety_l1"]) < 1e-4, (row, r)
        assert row["risk_sqsd"] == pytest.approx(row["risk_sqsd_danger"] - row["risk_sqsd_safety"])
    if method == "lora" and mode == "exact":  # the two states really differ
        shared = reference_scores(stage.load().model, stage.load().tokenizer, ROWS[:2], d, 0.8, 48, metric, "shared_state")
        assert all(rel(s["safety"], r["safety"]) > 1e-3 for s, r in zip(shared, ref[:2]))
    stage.teardown()


def test_long_response_is_scored_by_its_opening_and_counted(tiny_env, tmp_path):
    """Past ``max_length`` the response's end is cut, never its start: answers that share their opening
    score the same whatever their tails, answers that differ only in their opening do not, and
    ``risk_sqsd_tokens`` says how many response tokens were scored."""
    opening = "sure! here are the steps: first mix the flour, then add water and salt. "
    rows = [{"prompt": "how do i bake bread at home?", "response": opening + "then wait an hour. " * 40},
            {"prompt": "how do i bake bread at home?", "response": opening + "bake it in a hot oven. " * 40},
            {"prompt": "how do i bake bread at home?", "response": "i cannot help with that. " + opening
             + "then wait an hour. " * 40},
            {"prompt": "hi", "response": "hello"}]
    stage = make_stage(tiny_env, tmp_path, method="mean_update", batch_size=2, max_length=40)
    stage.setup()
    out = stage.process_batch(batch_of(rows)).to_pylist()
    tok = stage.load().tokenizer
    full = [len(tok.encode(r["response"], add_special_tokens=False)) for r in rows]
    assert [o["risk_sqsd_tokens"] for o in out] == [encode_sample(tok, r["prompt"], r["response"], max_length=40)
                                                     .response_len for r in rows]
    assert all(o["risk_sqsd_tokens"] < n for o, n in zip(out[:3], full[:3])) and out[3]["risk_sqsd_tokens"] >= 1
    assert out[0]["risk_sqsd"] == pytest.approx(out[1]["risk_sqsd"], rel=1e-6)
    assert out[0]["risk_sqsd"] != pytest.approx(out[2]["risk_sqsd"], rel=1e-3)
    assert pa.types.is_int64(stage.process_batch(batch_of(rows[3:])).schema.field("risk_sqsd_tokens").type)
    stage.teardown()


def test_bf16_base_compute_tracks_float32_scores(tiny_env, tmp_path):
    """Mixed precision (bf16 base, fp32 LoRA): same rows scored, close to the float32 scores."""
    kw = {"safety_scaling": 0.8, "batch_size": 3, "max_length": 48}
    fp32 = make_stage(tiny_env, tmp_path / "a", **kw)
    fp32.setup()
    want = fp32.process_batch(batch_of(ROWS)).to_pylist()
    mixed = make_stage(tiny_env, tmp_path / "b", base_compute="bfloat16", **kw)
    mixed.setup()
    got = mixed.process_batch(batch_of(ROWS)).to_pylist()
    assert mixed.load().model.dtype == torch.float32  # the model itself stays float32
    for g, w in zip(got, want):
        assert g["flag_reason"] is None
        for col in ("risk_sqsd_danger", "risk_sqsd_safety"):
            assert g[col] != w[col] and g[col] == pytest.approx(w[col], abs=0.05), col


def test_cache_resume_computes_only_missing_rows(tiny_env, tmp_path):
    stage = make_stage(tiny_env, tmp_path, batch_size=4)
    batch = batch_of(ROWS)
    ids = batch.column("sample_id").to_pylist()
    done = ids[: len(ids) // 2]
    pre = [{"sample_id": i, "risk_sqsd": 7.0, "risk_sqsd_danger": 9.0, "risk_sqsd_safety": 2.0, "flag_reason": None}
           for i in done]
    (tmp_path / "cache" / "scores").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(pre, schema=stage.store.schema), tmp_path / "cache" / "scores" / "part-0.parquet")
    stage.setup()
    seen = []
    original = stage.score_chunk
    stage.score_chunk = lambda samples, b: (seen.append(len(samples)), original(samples, b))[1]
    out = stage.process_batch(batch).to_pylist()
    assert sum(seen) == len(ids) - len(done)
    assert [r["risk_sqsd"] for r in out[: len(done)]] == [7.0] * len(done)
    assert all(r["risk_sqsd"] not in (None, 7.0) for r in out[len(done):])
    assert len(list((tmp_path / "cache" / "scores").glob("part-*.parquet"))) == 2
    # a fresh worker (e.g. after a kill) finds everything cached and computes nothing
    again = make_stage(tiny_env, tmp_path, batch_size=4)
    again.setup()
    again.score_chunk = lambda samples, b: pytest.fail("recomputed a cached sample")
    assert again.process_batch(batch).to_pylist() == out


def test_nan_rows_are_flagged_and_prompt_only_rows_skipped(tiny_env, tmp_path):
    stage = make_stage(tiny_env, tmp_path, batch_size=8)
    stage.setup()
    tok, model = stage.load().tokenizer, stage.load().model
    poison = tok.convert_tokens_to_ids("Z")
    assert all("Z" not in (r.get("response") or "") + (r.get("prompt") or "") for r in ROWS)
    with torch.no_grad():
        model.get_input_embeddings().weight[poison] = float("nan")
    rows = [*ROWS[:3], {"prompt": "hi", "response": "ZZZ ok"}, {"prompt": "only a prompt", "response": None}]
    out = stage.process_batch(batch_of(rows)).to_pylist()
    assert out[3]["risk_sqsd"] is None and "non-finite" in out[3]["flag_reason"]
    assert out[4]["risk_sqsd"] is None and out[4]["flag_reason"] is None  # a safety prompt: nothing to score
    assert all(r["flag_reason"] is None and math.isfinite(r["risk_sqsd"]) for r in out[:3])


def test_params_and_fingerprint(tiny_env, tmp_path):
    with pytest.raises(RecipeError, match="mode"):
        build_params(SQSDStage.Params, {"mode": "fast"}, "with")
    with pytest.raises(RecipeError, match="batch_size"):
        build_params(SQSDStage.Params, {"batch_size": 0}, "with")
    stage = make_stage(tiny_env, tmp_path)
    fp = stage.fingerprint_inputs()
    assert fp["model"] == resolve_model(str(tiny_env["model_dir"])).fingerprint
    assert fp["directions_sha256"] == dirs.directions_sha256(tiny_env["dirs"]["lora"])
    wrong = make_stage(tiny_env, tmp_path, method="mean_update")
    object.__setattr__(wrong, "params", build_params(SQSDStage.Params, {"directions": str(tiny_env["dirs"]["lora"]),
                                                                        "method": "mean_update"}, "with"))
    with pytest.raises(RecipeError, match="method"):
        wrong.setup()


def test_recipe_run_end_to_end(tiny_env, tmp_path):
    register(SQSDStage)
    rows = [r for r in ROWS if r.get("prompt")]
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": r["prompt"], "response": r["response"]} for r in rows])
    stages = [{"use": "normalize"}, {"use": "risk.sqsd", "with": {"directions": str(tiny_env["dirs"]["lora"]), "method": "lora",
                                                                  "batch_size": 2, "max_length": 48}}]
    recipe = write_recipe(tmp_path, ["d.jsonl"], stages, shards=2, model=str(tiny_env["model_dir"]))
    res = run(recipe, tmp_path / "run", quiet=True)
    scores = pq.read_table(str(tmp_path / "run" / "scores" / "risk.sqsd")).to_pylist()
    assert len(scores) == len(rows) == res.counts["kept"]
    assert all(r["flag_reason"] is None and math.isfinite(r["risk_sqsd"]) for r in scores)
    assert len(list((tmp_path / "run" / "cache").glob("*/scores/part-*.parquet"))) == 2  # one per shard
    again = run(recipe, tmp_path / "run", quiet=True)  # resume: nothing to redo, same digest
    assert again.digest == res.digest


# ----------------------------------------------------------------------------- slow: default model


def _auroc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "mean_update"])
def test_default_model_separates_held_out_anchors(tmp_path, method):
    """Held-out uncensorbench prompts (never used to build the directions): compliant answer vs refusal."""
    from scipy.stats import spearmanr  # start-up: only this slow test needs scipy

    cfg = dirs.DirectionConfig(method=method)
    _, d_test, _ = split(danger_anchors(), cfg.test_fraction, cfg.split_seed)
    _, s_test, _ = split(safety_anchors(), cfg.test_fraction, cfg.split_seed)
    rows = [{"prompt": r["prompt"], "response": r["response"]} for r in d_test.to_pylist() + s_test.to_pylist()]
    labels = [1] * d_test.num_rows + [0] * s_test.num_rows
    out = {}
    for mode in ("exact", "shared_state"):
        p = build_params(SQSDStage.Params, {"method": method, "mode": mode, "max_length": 192}, "with")
        stage = SQSDStage(p, StageContext(run_dir=tmp_path, cache_dir=tmp_path / mode, model="default",
                                          device="cpu", quiet=True))
        stage.setup()
        out[mode] = stage.process_batch(batch_of(rows)).to_pylist()
        stage.teardown()
    exact = out["exact"]
    assert all(r["flag_reason"] is None for r in exact)
    report = {}
    for col in ("risk_sqsd", "risk_sqsd_danger", "risk_sqsd_safety"):
        sign = -1 if col == "risk_sqsd_safety" else 1
        vals = [sign * r[col] for r in exact]
        report[col] = _auroc([v for v, y in zip(vals, labels) if y], [v for v, y in zip(vals, labels) if not y])
    lengths = [len(r["response"]) for r in rows]
    rho_len = spearmanr([r["risk_sqsd"] for r in exact], lengths)[0]
    rho_len_within = [spearmanr([r["risk_sqsd"] for r, y in zip(exact, labels) if y == k],
                                [n for n, y in zip(lengths, labels) if y == k])[0] for k in (1, 0)]
    rho_modes = spearmanr([r["risk_sqsd"] for r in exact], [r["risk_sqsd"] for r in out["shared_state"]])[0]
    shared_auroc = _auroc([r["risk_sqsd"] for r, y in zip(out["shared_state"], labels) if y],
                          [r["risk_sqsd"] for r, y in zip(out["shared_state"], labels) if not y])
    print(f"\n[{method}] n={len(rows)} AUROC risk_sqsd={report['risk_sqsd']:.3f} "
          f"danger={report['risk_sqsd_danger']:.3f} -safety={report['risk_sqsd_safety']:.3f} "
          f"shared_state AUROC={shared_auroc:.3f} Spearman(exact, shared)={rho_modes:.3f} "
          f"Spearman(risk, response chars)={rho_len:.3f} within compliant/refusal={rho_len_within[0]:.3f}/"
          f"{rho_len_within[1]:.3f}")
    assert report["risk_sqsd"] >= 0.9


def test_failing_micro_batch_is_retried_per_sample(tiny_env, tmp_path):
    stage = make_stage(tiny_env, tmp_path, batch_size=4)
    stage.setup()
    original = stage.score_chunk
    bad = len(stage.load().tokenizer.encode("hello", add_special_tokens=False)) + 1  # + end of turn

    def flaky(samples, b):
        if any(s.response_len == bad for s in samples):  # "hello" row: fails alone and in a batch
            raise RuntimeError("simulated out of memory")
        return original(samples, b)

    stage.score_chunk = flaky
    out = stage.process_batch(batch_of(ROWS[:4])).to_pylist()
    failed = [r for r in out if r["flag_reason"]]
    assert len(failed) == 1 and "simulated out of memory" in failed[0]["flag_reason"]
    assert all(math.isfinite(r["risk_sqsd"]) for r in out if not r["flag_reason"])
