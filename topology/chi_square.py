"""Pearson's χ² goodness-of-fit test, with its p-value computed here rather than pulled from scipy.

The p-value of a χ² statistic with k degrees of freedom is Q(k/2, x/2), the regularized upper
incomplete gamma function. Q is evaluated as in Numerical Recipes (Press et al., §6.2): by its power
series for x < a + 1, where that converges fast, and otherwise by Lentz's continued fraction.
"""

import math
from collections.abc import Iterable

_EPSILON = 1e-15
_MAX_ITERATIONS = 10_000
_TINY = 1e-300


def regularized_upper_gamma(a: float, x: float) -> float:
    """Q(a, x) = Γ(a, x) / Γ(a), for a > 0 and x >= 0."""
    if a <= 0:
        raise ValueError("a must be positive")
    if x < 0:
        raise ValueError("x must not be negative")
    if x == 0:
        return 1.0
    if x < a + 1:
        return max(0.0, 1.0 - _lower_series(a, x))
    return _upper_continued_fraction(a, x)


def _prefactor(a: float, x: float) -> float:
    # x^a e^-x / Γ(a), in logs so that large a and x do not overflow.
    return math.exp(a * math.log(x) - x - math.lgamma(a))


def _lower_series(a: float, x: float) -> float:
    """P(a, x) by its series: e^-x x^a / Γ(a) · Σ x^n / (a (a+1) ... (a+n))."""
    term = total = 1.0 / a
    denominator = a
    for _ in range(_MAX_ITERATIONS):
        denominator += 1
        term *= x / denominator
        total += term
        if abs(term) < abs(total) * _EPSILON:
            return total * _prefactor(a, x)
    raise ArithmeticError(f"the gamma series did not converge for a={a}, x={x}")


def _upper_continued_fraction(a: float, x: float) -> float:
    """Q(a, x) by its continued fraction, evaluated with the modified Lentz method."""
    b = x + 1 - a
    c = 1 / _TINY
    d = 1 / b
    fraction = d
    for i in range(1, _MAX_ITERATIONS):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = _TINY if abs(d) < _TINY else d
        c = b + an / c
        c = _TINY if abs(c) < _TINY else c
        d = 1 / d
        step = d * c
        fraction *= step
        if abs(step - 1) < _EPSILON:
            return fraction * _prefactor(a, x)
    raise ArithmeticError(f"the gamma continued fraction did not converge for a={a}, x={x}")


def chi_square_p_value(statistic: float, degrees_of_freedom: int) -> float:
    """The probability that chance alone gives a χ² statistic at least this large."""
    return regularized_upper_gamma(degrees_of_freedom / 2, statistic / 2)


def pearson_chi_square(observed: Iterable[float], expected: Iterable[float]) -> float:
    """Σ (observed − expected)² / expected over the cells with a positive expectation."""
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected) if e > 0)
