from curator.stats import wilson_interval, wilson_lower_bound


def test_wilson_interval_values():
    lo, hi = wilson_interval(8, 10)
    assert 0.49 < lo < 0.5 and 0.94 < hi < 0.95
    assert wilson_interval(0, 10)[0] == 0.0
    assert abs(wilson_lower_bound(8, 10) - wilson_interval(8, 10, z=1.96)[0]) < 1e-12 and wilson_lower_bound(0, 0) == 0.0
