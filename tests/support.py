"""Shared test builders: synthetic inputs and recipes, tiny-model risk environments, stage contexts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import yaml

from curator.stage import Stage


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Prompt/response rows of varied length with a few exact and near duplicates."""
    rows = []
    for i in range(n):
        k = (i * 7919 + seed) % 1000
        rows.append({"prompt": f"Question {k}: how do I do task {k % 37}?",
                     "response": f"Step {k}. " + "Do the thing carefully. " * (1 + k % 40), "row_no": i})
    rows += [dict(rows[3]), {**rows[5], "prompt": rows[5]["prompt"].upper()}]
    return rows


def write_recipe(dir_: Path, inputs: list[str], stages: list[dict], **top) -> Path:
    recipe = {"curator": 1, "name": top.pop("name", "test"), "inputs": [{"path": p} for p in inputs],
              "shards": top.pop("shards", 4), "stages": stages, **top}
    path = dir_ / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


ENGINE_STAGES = [
    {"use": "normalize"},
    {"use": "patterns", "with": {"batch_size": 50}},
    {"use": "quality"},
    {"use": "decide", "with": {"drop_if": ["is_duplicate", "char_len > 900"],
                               "flag_if": ["response_chars > quantile(response_chars, 0.8)"]}},
]


# Rows and a tiny-model environment shared by the forward-only risk-stage tests.
RISK_ROWS = [
    {"sample_id": "a", "prompt": "hello world, how are you today?", "response": "fine thanks"},
    {"sample_id": "b", "prompt": "bake bread?", "response": "mix flour, water, salt and yeast, then wait."},
    {"sample_id": "c", "prompt": None, "response": "the quick brown fox jumps over the lazy dog"},
    {"sample_id": "d", "prompt": "hi", "response": "yo"},
]


def tiny_risk_env(root: Path, n_layers: int, seed: int, pairs: slice):
    """Yield {root, model, anchors}: a tiny model dir, an uncensorbench anchor file (rows ``pairs``) and a
    private CURATOR_HOME for the duration (use from a module-scoped fixture)."""
    import pytest

    from curator.ml.testing import save_tiny_model
    from curator.refdata.anchors import uncensorbench_pairs

    model = save_tiny_model(root / "model", n_layers=n_layers, seed=seed)
    table = uncensorbench_pairs().slice(pairs.start, pairs.stop - pairs.start)
    anchors = write_jsonl(root / "anchors.jsonl", table.select(["prompt", "compliant", "refusal"]).to_pylist())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CURATOR_HOME", str(root / "home"))
        yield {"root": root, "model": str(model), "anchors": str(anchors)}


def risk_stage(stage_cls, env: dict, cache: str, params: dict):
    """A forward-only risk stage on ``env``'s tiny model, with ``params`` validated as a recipe would."""
    from curator.stage import StageContext, build_params

    ctx = StageContext(run_dir=env["root"], cache_dir=env["root"] / cache, model=env["model"], quiet=True,
                       recipe_dir=env["root"])
    return stage_cls(build_params(stage_cls.Params, params, "with"), ctx)


def uneven_samples(tok) -> list:
    """Four encoded samples of uneven length (one text-only, one very short) for exactness tests."""
    from curator.ml.chat import encode_sample

    return [
        encode_sample(tok, "hello world, how are you today?", "fine thanks"),
        encode_sample(tok, "bake bread?", "mix flour, water, salt and yeast, then wait a long time."),
        encode_sample(tok, None, "the quick brown fox jumps over the lazy dog"),
        encode_sample(tok, "hi", "yo"),
    ]


def heldout_anchor_rows() -> list[dict]:
    """Held-out uncensorbench pairs (the 0.3 test side, seed 0) as rows: ``compliant<i>`` / ``refusal<i>``."""
    from filters.risk.anchor_reference import anchor_pairs

    _, test, _, _ = anchor_pairs("default", 0.3, 0)
    return [{"sample_id": f"{k}{i}", "prompt": r["prompt"], "response": r[k]}
            for k in ("compliant", "refusal") for i, r in enumerate(test.to_pylist())]


# A finished toy run (query, report, gate tests): engine stages plus a deterministic score stage.
def toy_risk(sample_id: str, text: str) -> float:
    return int(sample_id[8:16], 16) / 2**32 + (10.0 if "<" in text else 0.0)


def toy_hardness(sample_id: str, prompt: str) -> float | None:
    return None if sample_id[0] in "0123" else (len(prompt) % 11) / 10


class ToyRiskStage(Stage):
    name = "test.toy_risk"
    kind = "score"
    version = 1
    requires = ("sample_id", "prompt", "response")
    provides = ("risk_sqsd", "hardness")

    def process_batch(self, batch):
        ids = batch.column("sample_id").to_pylist()
        prompts = [p or "" for p in batch.column("prompt").to_pylist()]
        texts = [p + (r or "") for p, r in zip(prompts, batch.column("response").to_pylist())]
        return pa.table({"sample_id": pa.array(ids, pa.string()),
                         "risk_sqsd": pa.array([toy_risk(s, t) for s, t in zip(ids, texts)], pa.float64()),
                         "hardness": pa.array([toy_hardness(s, p) for s, p in zip(ids, prompts)], pa.float64())})


TOY_STAGES = [*(s for s in ENGINE_STAGES if s["use"] in ("normalize", "quality")), {"use": "test.toy_risk"},
              *(s for s in ENGINE_STAGES if s["use"] == "decide")]


def make_toy_run(base, name: str = "toy", n: int = 120, extra_rows: list[dict] | None = None):
    """A finished run over two sources (``web``, ``forum``) with engine stages plus ``ToyRiskStage``."""
    from curator.pipeline import run
    from curator.registry import register

    register(ToyRiskStage)
    base.mkdir(parents=True, exist_ok=True)
    write_jsonl(base / "web.jsonl", synthetic_rows(n, seed=1) + (extra_rows or []))
    write_jsonl(base / "forum.jsonl", synthetic_rows(n // 2, seed=7))
    recipe = write_recipe(base, ["web.jsonl", "forum.jsonl"], TOY_STAGES, shards=3, name=name)
    return run(recipe, base / name, quiet=True, workers=1)
