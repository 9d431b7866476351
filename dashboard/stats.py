"""Confidence intervals for the uplift of a treated group over its holdout, in plain math.

- Conversion (a share of members who bought): the difference of two proportions with the unpooled
  (Wald) standard error for the interval and the pooled one for the z test, as in the textbooks.
- Sales per member (a mean over every member, zeros included): Welch's t for unequal variances, with
  the Welch–Satterthwaite degrees of freedom; Student's t from the regularised incomplete beta function.

Both report the difference (treated − holdout), its interval, a two-sided p-value and whether the
interval excludes zero ("significant"). Nothing here touches the database.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Comparison:
    treated: float  # the treated group's rate or mean
    holdout: float
    difference: float  # treated − holdout
    low: float  # confidence interval of the difference
    high: float
    p_value: float
    confidence: float
    significant: bool  # the interval excludes zero
    relative: float | None  # difference ÷ holdout (None when the holdout's value is zero)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Distributions


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def normal_quantile(p: float) -> float:
    """Inverse of the standard normal distribution (bisection: exact to 1e-12, fast enough)."""
    return _invert(normal_cdf, p, -40.0, 40.0)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution with ``df`` (possibly fractional) degrees of freedom."""
    if math.isinf(df):
        return normal_cdf(t)
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    return _invert(lambda x: t_cdf(x, df), p, -1e6, 1e6)


def _invert(cdf, p: float, low: float, high: float) -> float:
    for _ in range(200):
        middle = (low + high) / 2
        if cdf(middle) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return (low + high) / 2


# --------------------------------------------------------------------------------------------------
# Tests


def _relative(difference: float, base: float) -> float | None:
    return difference / base if base else None


def two_proportions(
    treated_successes: int,
    treated_total: int,
    holdout_successes: int,
    holdout_total: int,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Comparison | None:
    """Difference of two proportions; None when a group is empty."""
    if treated_total <= 0 or holdout_total <= 0:
        return None
    p1 = treated_successes / treated_total
    p2 = holdout_successes / holdout_total
    difference = p1 - p2
    se = math.sqrt(p1 * (1 - p1) / treated_total + p2 * (1 - p2) / holdout_total)
    z = normal_quantile(1 - (1 - confidence) / 2)
    pooled = (treated_successes + holdout_successes) / (treated_total + holdout_total)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / treated_total + 1 / holdout_total))
    if se_pooled > 0:
        p_value = 2 * (1 - normal_cdf(abs(difference) / se_pooled))
    else:  # both groups all-or-nothing alike: no evidence of a difference
        p_value = 1.0 if difference == 0 else 0.0
    low, high = difference - z * se, difference + z * se
    return Comparison(
        treated=p1,
        holdout=p2,
        difference=difference,
        low=low,
        high=high,
        p_value=min(1.0, p_value),
        confidence=confidence,
        significant=low > 0 or high < 0,
        relative=_relative(difference, p2),
    )


def welch(
    treated_mean: float,
    treated_variance: float,
    treated_total: int,
    holdout_mean: float,
    holdout_variance: float,
    holdout_total: int,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Comparison | None:
    """Welch's t interval for the difference of two means (sample variances, n − 1); None when a
    group has fewer than two members."""
    if treated_total < 2 or holdout_total < 2:
        return None
    a = treated_variance / treated_total
    b = holdout_variance / holdout_total
    difference = treated_mean - holdout_mean
    se = math.sqrt(a + b)
    if se == 0:
        return Comparison(
            treated=treated_mean,
            holdout=holdout_mean,
            difference=difference,
            low=difference,
            high=difference,
            p_value=1.0 if difference == 0 else 0.0,
            confidence=confidence,
            significant=difference != 0,
            relative=_relative(difference, holdout_mean),
        )
    df = (a + b) ** 2 / (a * a / (treated_total - 1) + b * b / (holdout_total - 1))
    t = difference / se
    critical = t_quantile(1 - (1 - confidence) / 2, df)
    low, high = difference - critical * se, difference + critical * se
    return Comparison(
        treated=treated_mean,
        holdout=holdout_mean,
        difference=difference,
        low=low,
        high=high,
        p_value=min(1.0, 2 * (1 - t_cdf(abs(t), df))),
        confidence=confidence,
        significant=low > 0 or high < 0,
        relative=_relative(difference, holdout_mean),
    )


def welch_from_sums(
    treated_total: int,
    treated_sum: float,
    treated_sum_squares: float,
    holdout_total: int,
    holdout_sum: float,
    holdout_sum_squares: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Comparison | None:
    """``welch`` from the count, sum and sum of squares of each group (what SQL aggregates give)."""

    def mean_variance(n: int, total: float, squares: float) -> tuple[float, float]:
        if n < 2:
            return (total / n if n else 0.0), 0.0
        mean = total / n
        return mean, max(0.0, (squares - n * mean * mean) / (n - 1))

    m1, v1 = mean_variance(treated_total, treated_sum, treated_sum_squares)
    m2, v2 = mean_variance(holdout_total, holdout_sum, holdout_sum_squares)
    return welch(m1, v1, treated_total, m2, v2, holdout_total, confidence=confidence)
