"""The generalisation benchmark's AUROC and row matching."""

from benchmarks.validity.generalisation import auroc, key


def test_auroc_is_the_probability_a_compliant_answer_scores_higher():
    assert auroc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auroc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert auroc([1.0, 3.0], [2.0]) == 0.5
    assert auroc([2.0], [2.0]) == 0.5  # ties count half


def test_rows_match_their_scored_samples_across_whitespace_and_unicode_forms():
    assert key("cafe\u0301  here", " a\n b ") == key("caf\u00e9 here", "a b")
