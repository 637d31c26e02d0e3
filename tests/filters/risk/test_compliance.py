"""risk.compliance: CAS closed form vs scatter matrices, reference artifact, score vs a full forward,
batching, cache resume, end-to-end recipe (tiny model); held-out AUROC on the default model (slow)."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from curator.cli import main
from curator.errors import InputError, RecipeError
from curator.ml.chat import encode_sample
from curator.pipeline import run
from curator.registry import register
from curator.stage import StageContext, build_params
from filters.risk.anchor_reference import load_artifact
from filters.risk.anchor_similarity import AnchorSimilarityStage
from filters.risk.compliance import ComplianceParams, ComplianceStage, cas
from tests.support import RISK_ROWS, heldout_anchor_rows, risk_stage, tiny_risk_env, write_jsonl, write_recipe

ROWS = RISK_ROWS + [
    {"sample_id": "e", "prompt": "explain data curation", "response": "filters samples by quality and risk"},
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny 3-block model dir, a 16-pair anchor file and a private CURATOR_HOME (shared by the module)."""
    yield from tiny_risk_env(tmp_path_factory.mktemp("compliance"), n_layers=3, seed=2, pairs=slice(0, 16))


def _stage(env, cache="cache", **params):
    return risk_stage(ComplianceStage, env, cache, {"anchors": env["anchors"], "max_length": 48, "batch_size": 2,
                                                    **params})


def scatter_cas(a: torch.Tensor, b: torch.Tensor) -> float:
    """DataShield's get_score.py: standardise, d×d S_b and S_w, CAS = vᵀS_b v / vᵀ(S_w+S_b) v."""
    v = b.mean(0) - a.mean(0)
    v = (v / v.norm()).double().reshape(-1, 1)
    acts = torch.cat([a, b]).double()
    acts = (acts - acts.mean(0)) / acts.std(0)
    labels = torch.cat([torch.zeros(len(a)), torch.ones(len(b))])
    s_w = torch.zeros(acts.shape[1], acts.shape[1], dtype=torch.float64)
    s_b = torch.zeros_like(s_w)
    for c in (0, 1):
        x = acts[labels == c]
        d = x - x.mean(0)
        s_w += d.T @ d
        m = (x.mean(0) - acts.mean(0)).reshape(-1, 1)
        s_b += len(x) * (m @ m.T)
    return float((v.T @ s_b @ v) / (v.T @ (s_w + s_b) @ v))


@pytest.mark.parametrize("shift", [0.0, 0.3, 3.0])
def test_closed_form_cas_equals_scatter_matrix_cas(shift):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(13, 24, generator=gen) * torch.linspace(0.5, 3, 24)
    b = torch.randn(9, 24, generator=gen) + shift * torch.randn(24, generator=gen)
    got = cas(a, b)
    assert got == pytest.approx(scatter_cas(a, b), rel=1e-9, abs=1e-12)
    assert 0.0 <= got <= 1.0
    assert cas(a, a.clone()) != cas(a, a.clone())  # identical classes: undefined (NaN)


def test_reference_artifact(env):
    stage = _stage(env)
    paths = stage.build_artifacts()
    path = Path(paths["compliance"])
    assert path.is_relative_to(Path(env["root"]) / "home" / "directions")
    tensors, meta = load_artifact(path)
    n_layers = 3
    assert tensors["directions"].shape == (n_layers + 1, 32)
    assert torch.allclose(tensors["directions"].norm(dim=1), torch.ones(n_layers + 1), atol=1e-5)
    scores = tensors["cas"]
    # layer 0 (token embeddings) is NaN when every sequence ends in the same end-of-turn token; an anchor
    # longer than max_length keeps its answer's opening and loses that end, so layer 0 can separate
    assert torch.isnan(scores[0]) or 0 <= float(scores[0]) <= 1
    assert ((scores[1:] >= 0) & (scores[1:] <= 1)).all()
    assert int(meta["cas_layer"]) == int(scores[1:].argmax()) + 1
    split = json.loads(meta["split"])
    assert split["n_train"] + split["n_test"] == 16 and split["seed"] == 0
    assert meta["model_fingerprint"] == stage.fingerprint_inputs()["model"]
    assert stage.fingerprint_inputs()["compliance_sha256"] == meta["curator_sha256"]
    mtime = path.stat().st_mtime_ns
    stage.build_artifacts()
    assert path.stat().st_mtime_ns == mtime  # idempotent: cached, not rebuilt
    other = _stage(env, anchor_seed=1)
    assert other.artifact_path() != path  # a different split is a different reference


def test_score_equals_manual_full_forward(env):
    stage = _stage(env, layer=2)
    stage.setup()
    out = stage.process_batch(pa.Table.from_pylist(ROWS).to_batches()[0]).to_pylist()
    model, tok = stage.load().model, stage.load().tokenizer
    v = stage.direction / stage.direction.norm()
    for row, got in zip(ROWS, out):
        s = encode_sample(tok, row["prompt"], row["response"], max_length=48)
        with torch.inference_mode():
            hs = model.model(input_ids=torch.tensor([s.input_ids]), output_hidden_states=True).hidden_states[2][0]
        ref = max(s.prompt_len - 1, 0)
        resp = [t for t, lab in enumerate(s.labels) if lab != -100 and t != ref]
        want = float(hs[resp].mean(0) @ v - hs[ref] @ v)
        assert got["sample_id"] == row["sample_id"] and got["flag_reason"] is None
        assert got["risk_compliance"] == pytest.approx(want, abs=1e-5)


def test_auto_layer_batching_and_cache_resume(env, monkeypatch):
    batch = pa.Table.from_pylist(ROWS).to_batches()[0]
    one = _stage(env, cache="c1", batch_size=1)
    one.setup()
    assert one.layer == int(json.loads(one.reference()[1]["cas_layer"]))
    by_one = one.process_batch(batch).column("risk_compliance").to_pylist()
    stage = _stage(env, cache="c2", batch_size=3)
    stage.setup()
    first = stage.process_batch(batch)
    assert first.column("risk_compliance").to_pylist() == pytest.approx(by_one, abs=1e-5)
    # interrupted after the first chunk: the finished chunk is cached, the resumed run scores only the
    # rest and ends byte-identical to the uninterrupted run
    broken = _stage(env, cache="c3", batch_size=3)
    broken.setup()
    real, calls = broken.score_chunk, []

    def interrupt_second(samples, b):
        calls.append(len(samples))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(samples, b)

    monkeypatch.setattr(broken, "score_chunk", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        broken.process_batch(batch)
    assert len(list((env["root"] / "c3" / "scores").glob("part-*.parquet"))) == 1
    resumed = _stage(env, cache="c3", batch_size=3)
    resumed.setup()
    calls.clear()
    real = resumed.score_chunk
    monkeypatch.setattr(resumed, "score_chunk", lambda s, b: calls.append(len(s)) or real(s, b))
    again = resumed.process_batch(batch)
    assert sum(calls) == 5 - 3  # the cached chunk of 3 rows is skipped
    assert again.equals(first)


def test_prompt_only_rows_get_null_scores_without_a_flag(env):
    stage = _stage(env, layer=1)
    stage.setup()
    rows = [ROWS[0], {"sample_id": "x", "prompt": "only a prompt", "response": None}]
    out = stage.process_batch(pa.Table.from_pylist(rows).to_batches()[0]).to_pylist()
    assert out[0]["flag_reason"] is None and out[0]["risk_compliance"] is not None
    assert out[1]["risk_compliance"] is None and out[1]["flag_reason"] is None  # a safety prompt: nothing to score


def test_params_and_inputs_checked_before_model_load(env):
    with pytest.raises(RecipeError, match="layer"):
        build_params(ComplianceParams, {"layer": -1}, "stages[1].with")
    with pytest.raises(RecipeError, match="unknown parameter"):
        build_params(ComplianceParams, {"layers": 3}, "stages[1].with")
    stage = _stage(env, anchors=str(env["root"] / "missing.jsonl"))
    with pytest.raises(InputError, match="missing.jsonl"):
        stage.check_inputs(pa.schema([("sample_id", pa.string()), ("prompt", pa.string()), ("response", pa.string())]))
    with pytest.raises(RecipeError, match="response"):
        _stage(env).check_inputs(pa.schema([("sample_id", pa.string()), ("prompt", pa.string())]))
    assert getattr(stage, "_loaded", None) is None
    with pytest.raises(InputError, match="out of range|>"):
        s = _stage(env, layer=9)
        s.setup()


def test_end_to_end_recipe_with_both_stages(env, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATOR_ALLOWED_ROOTS", str(env["root"]))  # the shared anchor file
    register(ComplianceStage)
    register(AnchorSimilarityStage)
    rows = [{k: v for k, v in r.items() if k != "sample_id"} for r in ROWS if r["prompt"]] * 1
    rows += [{"prompt": f"question {i}?", "response": f"answer number {i}, with detail."} for i in range(6)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    common = {"anchors": env["anchors"], "max_length": 48, "batch_size": 2}
    recipe = write_recipe(tmp_path, ["d.jsonl"], [
        {"use": "normalize"},
        {"use": "risk.compliance", "with": common},
        {"use": "risk.anchor_similarity", "with": {**common, "top_n": 2}},
    ], shards=2, model=env["model"])
    res = run(recipe, tmp_path / "run", quiet=True, workers=1)
    assert res.counts["rows_in"] == len(rows) and res.counts["kept"] == len(rows)
    comp = pq.read_table(tmp_path / "run" / "scores" / "risk.compliance").to_pylist()
    sim = pq.read_table(tmp_path / "run" / "scores" / "risk.anchor_similarity").to_pylist()
    assert len(comp) == len(sim) == len(rows)
    assert all(r["risk_compliance"] is not None for r in comp)
    assert all(r["risk_rep"] is not None and r["risk_grad"] is not None for r in sim)
    stages = {s["name"]: s for s in res.manifest["stages"]} if isinstance(res.manifest["stages"], list) else {}
    if stages:
        assert "compliance_sha256" in json.dumps(stages["risk.compliance"])
    again = run(recipe, tmp_path / "run2", quiet=True, workers=1)
    assert again.digest == res.digest
    out = CliRunner().invoke(main, ["directions", "build", str(recipe), "--quiet"], catch_exceptions=False)
    built = json.loads(out.output)  # every stage with reference artifacts, cached by the runs above
    assert sorted(built) == ["risk.anchor_similarity", "risk.compliance"]
    assert all(Path(path).is_file() for paths in built.values() for path in paths.values())


@pytest.mark.slow
def test_heldout_auroc_default_model(tmp_path):
    """Held-out UncensorBench pairs: (prompt -> compliant) scores above (prompt -> refusal)."""
    from scipy.stats import spearmanr  # start-up: only this slow test needs scipy and sklearn
    from sklearn.metrics import roc_auc_score

    rows = heldout_anchor_rows()
    ctx = StageContext(run_dir=tmp_path, cache_dir=tmp_path / "cache", model="default", quiet=True)
    stage = ComplianceStage(ComplianceParams(), ctx)
    stage.setup()
    scores = stage.process_batch(pa.Table.from_pylist(rows).to_batches()[0]).column("risk_compliance").to_pylist()
    labels = [r["sample_id"].startswith("compliant") for r in rows]
    auroc = roc_auc_score(labels, scores)
    lengths = [len(stage.load().tokenizer.encode(r["response"])) for r in rows]
    n = len(rows) // 2  # compliant rows first, then their refusals
    rho = spearmanr(scores, lengths)[0]
    within = [spearmanr(scores[k : k + n], lengths[k : k + n])[0] for k in (0, n)]  # length not confounded with label
    print(f"risk.compliance layer={stage.layer} n_test={n} AUROC={auroc:.4f} spearman_len={rho:.3f} "
          f"within compliant={within[0]:.3f} within refusal={within[1]:.3f}")
    assert auroc >= 0.9

