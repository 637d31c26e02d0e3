"""ModelScoreStage: length-sorted chunks, null scores + flag_reason for rows that fail, prompt-only rows,
the per-sample cache (flushes, resume computing only missing rows with the same chunks)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa
import pytest

from curator.ml.models import LoadedModel
from curator.ml.testing import tiny_tokenizer
from curator.stage import Resources, StageContext
from filters.base import FLUSH_EVERY, ModelScoreStage


@dataclass(frozen=True)
class ToyParams:
    batch_size: int = 2
    max_length: int = 64


class ToyScoreStage(ModelScoreStage):
    """x = token count, y = response tokens; a response with "nan" scores NaN, one with "boom" raises."""

    name = "test.toy_model_score"
    Params = ToyParams
    provides = ("x", "y")
    tokenizer = tiny_tokenizer()

    def __init__(self, params, context):
        super().__init__(params, context)
        self.chunks: list[list[int]] = []  # token counts of each scored chunk, in call order

    def open_model(self) -> LoadedModel:
        return LoadedModel(model=None, tokenizer=self.tokenizer, spec=None, device="cpu", dtype="float32")

    def score_chunk(self, samples, batch):
        self.chunks.append([len(s.input_ids) for s in samples])
        texts = [self.tokenizer.decode(s.input_ids) for s in samples]
        if any("boom" in t for t in texts):
            raise ValueError("boom")
        return {"x": [math.nan if "nan" in t else float(len(s.input_ids)) for s, t in zip(samples, texts)],
                "y": [float(s.response_len) for s in samples]}


def toy(tmp_path, **params) -> ToyScoreStage:
    ctx = StageContext(run_dir=tmp_path, cache_dir=tmp_path / "cache", quiet=True)
    return ToyScoreStage(ToyParams(**params), ctx)


def batch_of(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "sample_id": [f"id{i:03d}" for i in range(len(rows))],
        "prompt": pa.array([r.get("prompt") for r in rows], pa.string()),
        "response": pa.array([r.get("response") for r in rows], pa.string()),
    })


CLEAN = [{"prompt": "q" * (1 + (7 * i) % 11), "response": "answer " * (1 + (5 * i) % 9)} for i in range(9)]


def test_rows_are_scored_in_length_sorted_chunks_and_returned_in_input_order(tmp_path):
    stage = toy(tmp_path)
    assert stage.resources() == Resources(batch_size=2 * ToyScoreStage.chunks_per_call)
    out = stage.process_batch(batch_of(CLEAN))
    assert out.schema == pa.schema([("sample_id", pa.string()), ("x", pa.float64()), ("y", pa.float64()),
                                    ("flag_reason", pa.string())])
    assert out.column("sample_id").to_pylist() == [f"id{i:03d}" for i in range(len(CLEAN))]
    assert [len(c) for c in stage.chunks] == [2, 2, 2, 2, 1]
    flat = [n for c in stage.chunks for n in c]
    assert flat == sorted(flat) and sorted(flat) == sorted(out.column("x").to_pylist())
    assert out.column("flag_reason").null_count == len(CLEAN)


def test_failing_rows_get_null_scores_and_a_flag_reason(tmp_path):
    rows = [*CLEAN[:3], {"prompt": "hi", "response": "nan here"}, {"prompt": "hi", "response": "it went boom"},
            {"prompt": "only a prompt", "response": None}, {"prompt": None, "response": None}]
    out = toy(tmp_path, batch_size=4).process_batch(batch_of(rows)).to_pylist()
    assert all(r["flag_reason"] is None and r["x"] > 0 for r in out[:3])
    assert out[3]["x"] is None and out[3]["y"] is None and "non-finite" in out[3]["flag_reason"]
    assert out[4]["x"] is None and out[4]["flag_reason"] == "scoring failed: ValueError: boom"
    assert out[5]["x"] is None and out[5]["flag_reason"] is None  # a prompt for hardness: nothing to score
    assert out[6]["x"] is None and out[6]["flag_reason"].startswith("cannot encode:")


def test_flagged_rows_are_cached_prompt_only_and_unencodable_rows_are_not(tmp_path):
    rows = [CLEAN[0], {"prompt": "hi", "response": "nan"}, {"prompt": "p", "response": None},
            {"prompt": None, "response": None}]
    first = toy(tmp_path).process_batch(batch_of(rows))
    assert toy(tmp_path).store.keys() == {"id000", "id001"}
    again = toy(tmp_path)
    assert again.process_batch(batch_of(rows)).equals(first) and again.chunks == []


def test_interrupted_call_keeps_finished_chunks_and_resumes_with_the_same_chunks(tmp_path):
    rows = [{"prompt": f"question {i}", "response": "word " * (1 + i % 13)} for i in range(2 * (FLUSH_EVERY + 2))]
    batch = batch_of(rows)
    whole = toy(tmp_path / "whole")
    want = whole.process_batch(batch)
    broken = toy(tmp_path / "run")
    real = broken.score_chunk

    def interrupt_last(samples, b):
        if len(broken.chunks) == FLUSH_EVERY + 1:
            raise KeyboardInterrupt
        return real(samples, b)

    broken.score_chunk = interrupt_last
    with pytest.raises(KeyboardInterrupt):
        broken.process_batch(batch)
    assert len(broken.store.keys()) == 2 * (FLUSH_EVERY + 1)
    assert len(list((tmp_path / "run" / "cache" / "scores").glob("part-*.parquet"))) == 2  # a flush, then the rest
    resumed = toy(tmp_path / "run")
    got = resumed.process_batch(batch)
    assert resumed.chunks == whole.chunks[FLUSH_EVERY + 1 :]  # only the missing rows, in the same chunks
    assert got.equals(want)
    done = toy(tmp_path / "run")
    assert done.process_batch(batch).equals(want) and done.chunks == []  # everything stored: nothing scored


def test_partly_cached_batch_computes_only_missing_rows_and_keeps_stored_values(tmp_path):
    stage = toy(tmp_path, batch_size=4)
    stored = [{"sample_id": f"id{i:03d}", "x": -1.0, "y": -1.0, "flag_reason": None} for i in (0, 3, 4, 8)]
    stage.store.add(stored)
    out = stage.process_batch(batch_of(CLEAN)).to_pylist()
    assert sum(len(c) for c in stage.chunks) == len(CLEAN) - len(stored)
    assert [r["x"] for r in out if r["sample_id"] in {s["sample_id"] for s in stored}] == [-1.0] * len(stored)
    assert all(r["x"] > 0 for r in out if r["x"] != -1.0)
