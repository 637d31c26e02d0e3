import math

import torch

from curator.ml.robust import score_robustly


def test_oom_splits_the_batch_and_nan_rows_are_retried_then_flagged():
    calls = []

    def fn(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        # 'nan' fails everywhere; 'flaky' fails only when batched with others.
        return [(math.nan,) if x == "nan" or (x == "flaky" and len(batch) > 1) else (float(len(x)),) for x in batch]

    items = ["a", "bb", "nan", "flaky", "ccc", "dddd"]
    scores, reasons = score_robustly(fn, items)
    assert scores == [(1.0,), (2.0,), None, (5.0,), (3.0,), (4.0,)]
    assert reasons[2] == "non-finite score (NaN or inf) from the model"
    assert [r for i, r in enumerate(reasons) if i != 2] == [None] * 5
    assert calls[:3] == [6, 3, 1]  # halved after each out-of-memory error


def test_other_errors_fail_only_the_offending_row():
    def fn(batch):
        if "boom" in batch:
            raise ValueError("tokenizer exploded")
        return [(1.0,) for _ in batch]

    scores, reasons = score_robustly(fn, ["x", "boom", "y"])
    assert scores == [(1.0,), None, (1.0,)]
    assert reasons[1] == "ValueError: tokenizer exploded"
