"""Small builders shared by the engine tests: synthetic inputs and recipes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


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
