"""risk.anchor_similarity: rep score vs a full forward, sketched gradients vs dense batch-1 gradients,
anchor 10-token truncation, batching with padding, methods/params; held-out AUROC (slow)."""

import math

import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from curator.errors import RecipeError
from curator.ml.chat import IGNORE, collate, encode_sample
from curator.ml.lora import lora_modules
from curator.stage import StageContext, build_params
from filters.risk.anchor_similarity import AnchorSimilarityParams, AnchorSimilarityStage
from tests.support import RISK_ROWS, heldout_anchor_rows, risk_stage, tiny_risk_env

ROWS = RISK_ROWS


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from tiny_risk_env(tmp_path_factory.mktemp("anchor-sim"), n_layers=2, seed=3, pairs=slice(20, 34))


def _stage(env, cache="cache", **params):
    return risk_stage(AnchorSimilarityStage, env, cache,
                      {"anchors": env["anchors"], "max_length": 48, "batch_size": 4, **params})


def _batch(rows):
    return pa.Table.from_pylist(rows).to_batches()[0]


def test_rep_score_equals_manual_cosines(env):
    stage = _stage(env, methods=["rep"], top_n=3)
    stage.setup()
    out = stage.process_batch(_batch(ROWS))
    assert out.column_names == ["sample_id", "risk_rep", "flag_reason"]
    model, tok = stage.load().model, stage.load().tokenizer
    harm, safe = stage.ref["rep_harmful"], stage.ref["rep_safe"]
    assert torch.allclose(harm.norm(dim=1), torch.ones(len(harm)), atol=1e-5)
    for row, got in zip(ROWS, out.column("risk_rep").to_pylist()):
        s = encode_sample(tok, row["prompt"], row["response"], max_length=48)
        with torch.inference_mode():
            f = model.model(input_ids=torch.tensor([s.input_ids]), output_hidden_states=True).hidden_states[-1][0, -1]
        top = [F.cosine_similarity(f.unsqueeze(0), a).topk(3).values.mean() for a in (harm, safe)]
        assert got == pytest.approx(float(top[0] - top[1]), abs=1e-5)


def test_sketched_gradients_match_dense_batch1(env):
    """grad features = normalised concat over modules of √(3n/r)/s · (s·∇_W L Aᵀ) with ∇_W from autograd."""
    stage = _stage(env, methods=["grad"])
    loaded = stage.load()
    model, tok = loaded.model, loaded.tokenizer
    samples = [encode_sample(tok, r["prompt"], r["response"], max_length=48) for r in ROWS]
    feats = stage.grad_features(samples, collate(samples, tok.pad_token_id))
    mods = lora_modules(model)
    for i, s in enumerate(samples):
        weights = [mods[n].base.weight for n in sorted(mods)]
        for w in weights:
            w.requires_grad_(True)
        logits = model(input_ids=torch.tensor([s.input_ids])).logits[0, :-1]
        target = torch.tensor(s.labels[1:])
        keep = target != IGNORE
        grads = torch.autograd.grad(F.cross_entropy(logits[keep], target[keep]), weights)
        for w in weights:
            w.requires_grad_(False)
        parts = []
        for name, g in zip(sorted(mods), grads):
            m = mods[name]
            parts.append((m.scaling * g @ m.lora_A.T).flatten() * math.sqrt(3 * m.base.in_features / 8) / m.scaling)
        want = torch.cat(parts)
        assert torch.allclose(feats[i], want / want.norm(), atol=1e-5), i


def test_anchor_gradients_use_first_k_response_tokens(env):
    stage = _stage(env, methods=["grad"], anchor_response_tokens=3)
    tok = stage.load().tokenizer
    text = [("how to do it?", "first you take the thing and then you do the other thing")]
    got = stage._anchor_features(text, True, "t")[0]
    s = encode_sample(tok, *text[0], max_length=48)
    keep = s.prompt_len + 3
    masked = type(s)(s.input_ids, s.labels[:keep] + [IGNORE] * (len(s.labels) - keep), s.prompt_len, 3, False)
    want = stage.grad_features([masked], collate([masked], tok.pad_token_id))[0]  # full input, loss on 3 tokens
    assert torch.allclose(got, want, atol=1e-5)


def test_batched_equals_one_by_one_and_bidirectional(env):
    big = _stage(env, cache="b4", batch_size=4)
    big.setup()
    batched = big.process_batch(_batch(ROWS))
    one = _stage(env, cache="b1", batch_size=1)
    one.setup()
    single = one.process_batch(_batch(ROWS))
    for col in ("risk_rep", "risk_grad"):
        assert batched.column(col).to_pylist() == pytest.approx(single.column(col).to_pylist(), abs=1e-5)
    # the harmful anchors themselves score higher than their refusals (bidirectional anchoring, in-sample)
    train, *_ = big.anchor_split
    rows = [{"sample_id": f"{k}{i}", "prompt": r["prompt"], "response": r[k]}
            for k in ("compliant", "refusal") for i, r in enumerate(train.to_pylist())]
    out = big.process_batch(_batch(rows)).to_pylist()
    n = train.num_rows
    for col in ("risk_rep", "risk_grad"):
        pos, neg = [o[col] for o in out[:n]], [o[col] for o in out[n:]]
        assert sum(pos) / n > sum(neg) / n, col


def test_killed_shard_resumes_computing_only_missing_rows(env, monkeypatch):
    """Interrupted after the first chunk: the resumed run scores only the other rows and ends identical."""
    rows = RISK_ROWS + [{"sample_id": "e", "prompt": "explain data curation", "response": "filters samples by risk"}]
    whole = _stage(env, cache="w", batch_size=3)
    whole.setup()
    want = whole.process_batch(_batch(rows))
    broken = _stage(env, cache="k", batch_size=3)
    broken.setup()
    real, calls = broken.score_chunk, []

    def interrupt_second(samples, b):
        calls.append(len(samples))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(samples, b)

    monkeypatch.setattr(broken, "score_chunk", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        broken.process_batch(_batch(rows))
    assert len(broken.store.keys()) == 3  # the first chunk was stored
    resumed = _stage(env, cache="k", batch_size=3)
    resumed.setup()
    calls.clear()
    real = resumed.score_chunk
    monkeypatch.setattr(resumed, "score_chunk", lambda s, b: calls.append(len(s)) or real(s, b))
    got = resumed.process_batch(_batch(rows))
    assert sum(calls) == len(rows) - 3
    assert got.equals(want)


def test_methods_param_and_validation(env):
    assert _stage(env, methods=["grad"]).provided_columns() == ("risk_grad",)
    assert _stage(env).provided_columns() == ("risk_rep", "risk_grad")
    with pytest.raises(RecipeError, match="methods"):
        build_params(AnchorSimilarityParams, {"methods": ["rep", "gradient"]}, "stages[2].with")
    with pytest.raises(RecipeError, match="top_n"):
        build_params(AnchorSimilarityParams, {"top_n": 0}, "stages[2].with")
    a, b = _stage(env), _stage(env, proj_dim=64)
    assert a.artifact_path() != b.artifact_path()
    assert _stage(env, top_n=5).artifact_path() == a.artifact_path()  # scoring-only params share the reference


def test_projected_gradients(env):
    stage = _stage(env, cache="proj", methods=["grad"], proj_dim=256)
    stage.setup()
    assert stage.ref["grad_harmful"].shape == (256,)
    out = stage.process_batch(_batch(ROWS)).column("risk_grad").to_pylist()
    assert all(v is not None and -2 <= v <= 2 for v in out)


@pytest.mark.slow
def test_heldout_auroc_default_model(tmp_path):
    from scipy.stats import spearmanr  # start-up: only this slow test needs scipy and sklearn
    from sklearn.metrics import roc_auc_score

    rows = heldout_anchor_rows()
    ctx = StageContext(run_dir=tmp_path, cache_dir=tmp_path / "cache", model="default", quiet=True)
    stage = AnchorSimilarityStage(AnchorSimilarityParams(), ctx)
    stage.setup()
    out = stage.process_batch(_batch(rows))
    labels = [r["sample_id"].startswith("compliant") for r in rows]
    lengths = [len(stage.load().tokenizer.encode(r["response"])) for r in rows]
    aurocs = {}
    for col in ("risk_rep", "risk_grad"):
        scores = out.column(col).to_pylist()
        aurocs[col] = roc_auc_score(labels, scores)
        n = len(rows) // 2  # compliant rows first, then their refusals
        within = [spearmanr(scores[k : k + n], lengths[k : k + n])[0] for k in (0, n)]
        print(f"{col} n_test={n} AUROC={aurocs[col]:.4f} spearman_len={spearmanr(scores, lengths)[0]:.3f} "
              f"within compliant={within[0]:.3f} within refusal={within[1]:.3f}")
    assert aurocs["risk_grad"] >= 0.9
    assert aurocs["risk_rep"] >= 0.9
