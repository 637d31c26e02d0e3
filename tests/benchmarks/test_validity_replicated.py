"""The replicated Part A design: disjoint replicate windows per band and an interval over both sources
of variance (windows and evaluation triples)."""

import numpy as np

from benchmarks.validity.replicated import band_windows, hierarchical_bootstrap, random_windows

ROWS = [{"sample_id": f"{i:03d}", "s": float(i)} for i in range(40)]


def test_bands_deal_ranks_round_robin_into_disjoint_windows():
    bands = band_windows(ROWS, "s", window=4, replicates=3)
    top, bottom = bands["top"], bands["bottom"]
    assert [[r["s"] for r in w] for w in top] == [[39, 36, 33, 30], [38, 35, 32, 29], [37, 34, 31, 28]]
    assert [[r["s"] for r in w] for w in bottom] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    rand = random_windows(ROWS, 4, 3, seed=0)
    ids = [r["sample_id"] for w in rand for r in w]
    assert len(ids) == len(set(ids)) == 12 and rand == random_windows(ROWS[::-1], 4, 3, seed=0)


def test_interval_excludes_zero_only_for_an_effect_larger_than_window_variance():
    rng = np.random.default_rng(1)
    triples = rng.normal(0, 0.05, 100)  # per-triple noise shared by every window (paired)

    def band(mean, spread):
        return [triples + mean + spread * k for k in (-1, 0, 1)]

    clear = hierarchical_bootstrap({"top": band(0.20, 0.01), "bottom": band(0.05, 0.01)}, [("top", "bottom")], 500)
    assert clear["top_minus_bottom"]["excludes_0_above"] and abs(clear["top_minus_bottom"]["delta_shift"] - 0.15) < 1e-9
    noisy = hierarchical_bootstrap({"top": band(0.10, 0.15), "bottom": band(0.05, 0.15)}, [("top", "bottom")], 500)
    assert not noisy["top_minus_bottom"]["excludes_0_above"]  # windows disagree as much as the effect
