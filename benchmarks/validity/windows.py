"""Score windows of the validity benchmark's Part A and what they are compared by (pure functions over rows).

``windows`` cuts equally spaced windows of a score's descending order (window 1 = top, last = bottom);
``random_window`` is a seeded control; ``length_matched`` residualises a score on log response length;
``scorer_summary`` / ``scorer_agreement`` compare windows (Spearman, paired bootstrap intervals) and scorers;
``composition`` records a window's sample ids and demo-pool task families.
"""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
from scipy.stats import spearmanr

from benchmarks.validity.eval import bootstrap_diff
from curator.hashing import sha256_text
from curator.refdata.demo_pool import load_demo_pool


def windows(rows: list[dict], column: str, size: int, count: int) -> list[list[dict]]:
    """``count`` equally spaced windows of ``size`` rows over the descending order of ``column``."""
    ranked = sorted((r for r in rows if r[column] is not None and np.isfinite(r[column])),
                    key=lambda r: (-r[column], r["sample_id"]))
    span = len(ranked) - size
    starts = [round(k * span / (count - 1)) for k in range(count)] if count > 1 else [0]
    return [ranked[s:s + size] for s in starts]


def random_window(rows: list[dict], size: int, seed: int) -> list[dict]:
    return sorted(rows, key=lambda r: sha256_text(seed, "random-window", r["sample_id"]))[:size]


def spearman(x, y) -> float:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def length_matched(rows: list[dict], column: str) -> str:
    """Add ``<column>_length_matched`` = residual of ``column`` after an OLS fit on log(response chars + 1)
    over the pool: its top and bottom windows differ in score but not (on average) in response length,
    the confound the session-3 run exposed (long, high-loss rows degraded most whatever their score)."""
    ok = [r for r in rows if r[column] is not None and np.isfinite(r[column])]
    x = np.log1p([len(r["response"] or "") for r in ok])
    y = np.array([r[column] for r in ok], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    name = f"{column}_length_matched"
    for r in rows:
        r[name] = None
    for r, xi, yi in zip(ok, x, y):
        r[name] = float(yi - (slope * xi + intercept))
    return name


def scorer_summary(rows: list[dict], col: str, results: list[dict], shifts: list[np.ndarray],
                   rand_shift: np.ndarray) -> dict:
    """Spearman(window rank, degradation), top − bottom / top − random / random − bottom with paired
    bootstrap intervals over triples, and Spearman(score, response length) over the pool."""
    means = [r["delta_shift_mean"] for r in results]
    scored = [r for r in rows if r[col] is not None]
    out = {
        "windows": results,
        "spearman_rank_vs_delta_shift": spearman(list(range(1, len(means) + 1)), means),
        "top_minus_bottom": {"delta_shift": float(means[0] - means[-1]), "ci95": bootstrap_diff(shifts[0], shifts[-1])},
        "top_minus_random": {"delta_shift": float(means[0] - rand_shift.mean()),
                             "ci95": bootstrap_diff(shifts[0], rand_shift)},
        "random_minus_bottom": {"delta_shift": float(rand_shift.mean() - means[-1]),
                                "ci95": bootstrap_diff(rand_shift, shifts[-1])},
        "ordering_top_gt_random_gt_bottom": bool(means[0] > rand_shift.mean() > means[-1]),
        "spearman_score_vs_response_length": spearman([r[col] for r in scored],
                                                      [len(r["response"] or "") for r in scored]),
    }
    if "refusal" in results[0] and "harmful" in results[0]["refusal"]:
        kw = [r["refusal"]["harmful"]["keyword"]["rate"] for r in results]
        out["spearman_rank_vs_harmful_refusal"] = spearman(list(range(1, len(kw) + 1)), kw)
    return out


def scorer_agreement(rows: list[dict], columns: list[str], size: int) -> dict:
    """Per pair of scorers: Spearman of their scores over the pool and how many rows their top (and bottom)
    windows share: do the scorers pick the same data?"""
    out = {}
    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            both = [r for r in rows if all(r[c] is not None and np.isfinite(r[c]) for c in (a, b))]
            wa, wb = (windows(both, c, size, 2) for c in (a, b))
            shared = [len({r["sample_id"] for r in x} & {r["sample_id"] for r in y}) for x, y in zip(wa, wb)]
            out[f"{a} vs {b}"] = {"spearman": spearman([r[a] for r in both], [r[b] for r in both]),
                                  "top_shared": shared[0], "bottom_shared": shared[1], "window": size}
    return out


@cache
def demo_families() -> dict[str, str]:
    """prompt -> task family of the bundled demo pool."""
    return {r["prompt"]: r["source"] for r in load_demo_pool().select(["prompt", "source"]).to_pylist()}


def composition(window: list[dict]) -> dict:
    """What a window holds: its sample ids and its rows per demo-pool task family (joined on the prompt)."""
    counts = Counter(demo_families().get(r["prompt"], "other") for r in window)
    return {"sample_ids": sorted(r["sample_id"] for r in window), "families": dict(sorted(counts.items()))}
