"""The uplift math against textbook examples."""

import math
import statistics

import pytest

from dashboard import stats


def test_welch_t_matches_the_textbook_example():
    # Welch's t-test, the worked example with unequal variances: t = −2.46, p = 0.021 (two-sided).
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    result = stats.welch(
        statistics.mean(a), statistics.variance(a), len(a), statistics.mean(b), statistics.variance(b), len(b)
    )
    se = math.sqrt(statistics.variance(a) / 15 + statistics.variance(b) / 15)
    assert result.difference / se == pytest.approx(-2.46, abs=0.005)
    assert result.p_value == pytest.approx(0.021, abs=0.0005)
    assert result.significant
    assert result.low < result.difference < result.high < 0


def test_welch_from_sums_equals_welch_from_the_data():
    a, b = [0, 0, 120.5, 0, 300], [0, 80, 0, 0, 0, 0]
    direct = stats.welch(
        statistics.mean(a), statistics.variance(a), len(a), statistics.mean(b), statistics.variance(b), len(b)
    )
    sums = stats.welch_from_sums(len(a), sum(a), sum(x * x for x in a), len(b), sum(b), sum(x * x for x in b))
    assert sums.low == pytest.approx(direct.low)
    assert sums.high == pytest.approx(direct.high)
    assert not sums.significant  # five and six members prove nothing


def test_two_proportions_matches_the_textbook_example():
    # OpenIntro Statistics, CPR and blood thinner: 14 of 40 vs 11 of 50 survived; difference 0.13,
    # SE 0.095, 90% interval (−0.027, 0.287): not significant.
    result = stats.two_proportions(14, 40, 11, 50, confidence=0.90)
    assert result.difference == pytest.approx(0.13)
    assert result.low == pytest.approx(-0.027, abs=0.001)
    assert result.high == pytest.approx(0.287, abs=0.001)
    assert not result.significant


def test_a_large_difference_is_significant():
    result = stats.two_proportions(380, 1000, 190, 1000)
    assert result.significant and result.p_value < 0.001
    assert result.relative == pytest.approx(1.0)


def test_distributions():
    assert stats.normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-6)
    assert stats.t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-6)
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t_cdf(0, 5) == pytest.approx(0.5)


def test_empty_and_degenerate_groups():
    assert stats.two_proportions(0, 0, 1, 10) is None
    assert stats.welch(1, 0, 1, 1, 0, 5) is None
    same = stats.two_proportions(0, 10, 0, 10)
    assert same.difference == 0 and not same.significant and same.p_value == 1.0
    flat = stats.welch_from_sums(3, 0, 0, 3, 0, 0)
    assert flat.difference == 0 and not flat.significant
