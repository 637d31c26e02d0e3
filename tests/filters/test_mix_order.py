"""``filters.mix_order``: selection order, budgets, strata, interleave and target draws (pure functions)."""

import math
import random

import pytest

from filters.mix_order import (
    hard_order,
    interleave,
    n_benign_needed,
    parse_ratio,
    pick_target,
    quotas,
    select,
)


def test_interleave_every_even_prefix_is_half_benign():
    rng = random.Random(0)
    for _ in range(50):
        h = rng.random
        hardness = [round(h(), 2) for _ in range(rng.randint(0, 30))]
        order = hard_order(hardness)
        harmful = [("H", i) for i in order]
        mixed = interleave(harmful, [("B", i) for i in range(len(harmful))])
        assert len(mixed) == 2 * len(harmful)
        for k in range(len(harmful) + 1):
            prefix = mixed[:2 * k]
            assert sum(t == "B" for t, _ in prefix) == k
            assert [i for t, i in prefix if t == "H"] == order[:k]


def test_interleave_ratios():
    assert parse_ratio("1:2") == (1, 2)
    assert "".join(interleave(list("HHH"), list("bbbbbb"), (1, 2))) == "HbbHbbHbb"
    assert "".join(interleave(list("HHHHH"), list("bbb"), (2, 1))) == "HHbHHbHb"
    assert n_benign_needed(5, (2, 1)) == 3 and n_benign_needed(4, (1, 2)) == 8
    for bad in ("1", "0:1", "a:b", "1:2:3"):
        with pytest.raises(ValueError):
            parse_ratio(bad)


def test_hard_order_is_stable_and_select_has_the_prefix_property():
    h = [0.5, 0.25, 0.5, 0.875, 0.25, 0.5]
    assert hard_order(h) == [3, 0, 2, 5, 1, 4]  # ties keep input order
    for m in range(len(h) + 1):
        assert select(h, count=m) == hard_order(h)[:m]
    assert select(h, fraction=0.5) == hard_order(h)[:3]
    assert select(h, fraction=0.34) == hard_order(h)[:3]  # ceil(0.34 * 6) = 3
    assert select(h) == hard_order(h)


def test_stratified_selection_keeps_hardest_first_and_quotas():
    rng = random.Random(1)
    h = [rng.choice([0.125, 0.25, 0.5, 0.75]) for _ in range(40)]
    strata = [rng.choice("abc") for _ in range(40)]
    out = select(h, fraction=0.5, strata=strata)
    assert [h[i] for i in out] == sorted((h[i] for i in out), reverse=True)
    assert out == sorted(out, key=lambda i: (-h[i], i))  # merged by hardness, ties in input order
    for s in "abc":
        members = [i for i in range(40) if strata[i] == s]
        mine = [i for i in out if strata[i] == s]
        assert len(mine) == math.ceil(0.5 * len(members))
        assert mine == [members[j] for j in hard_order([h[i] for i in members])][:len(mine)]
    counted = select(h, count=10, strata=strata)
    assert len(counted) == 10 and sum(quotas({"a": 3, "b": 3, "c": 4}, None, 5).values()) == 5


def test_random_selection_is_seeded():
    h = [i / 20 for i in range(1, 20)]
    a, b = select(h, "random", fraction=0.5, seed=1), select(h, "random", fraction=0.5, seed=1)
    assert a == b and len(a) == 10 and select(h, "random", fraction=0.5, seed=2) != a
    strat = select(h, "random", count=6, strata=[i % 2 for i in range(19)], seed=3)
    assert len(set(strat)) == 6 and strat == select(h, "random", count=6, strata=[i % 2 for i in range(19)], seed=3)


def test_pick_target_is_seeded_and_order_free():
    picks = {pick_target(0, f"g{i}", [1, 4, 6]) for i in range(30)}
    assert picks == {1, 4, 6}
    assert pick_target(5, "g", [6, 1, 4]) == pick_target(5, "g", [1, 4, 6])
