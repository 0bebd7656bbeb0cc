"""pass@k matches the closed form 1 - C(n-c, k) / C(n, k)."""

from math import comb

import pytest

from starchat.eval.report import pass_at_k


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (5, 2, 1), (5, 2, 3), (10, 3, 10), (20, 1, 10), (7, 0, 5)])
def test_matches_closed_form(n, c, k):
    expected = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k({"t": (n, c)}, ks=[k])[f"pass@{k}"] == pytest.approx(expected, abs=1e-12)


def test_averages_over_tasks_and_skips_k_above_n():
    scores = pass_at_k({"a": (10, 10), "b": (10, 0), "c": (12, 6)})
    assert set(scores) == {"pass@1", "pass@10"}
    assert scores["pass@1"] == pytest.approx((1 + 0 + 0.5) / 3)
