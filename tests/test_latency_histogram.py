"""Percentiles from the logarithmic histogram are within its 10 % bucket width of the exact ones."""

import math
import random

import pytest

from topology.latency import LatencyHistogram


def exact_percentile(samples, fraction):
    return sorted(samples)[math.ceil(len(samples) * fraction) - 1]


@pytest.mark.parametrize("seed", range(5))
def test_p50_p95_p99_are_within_a_bucket_of_the_exact_percentiles(seed):
    rng = random.Random(seed)
    samples = [rng.lognormvariate(3, 1) for _ in range(5000)]
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.add(sample)

    figures = histogram.percentiles_ms()

    for name, fraction in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert figures[name] == pytest.approx(exact_percentile(samples, fraction), rel=0.1), name


def test_merged_minutes_give_the_percentiles_of_all_their_samples():
    fast, slow = LatencyHistogram(), LatencyHistogram()
    for _ in range(90):
        fast.add(10)
    for _ in range(10):
        slow.add(1000)

    merged = LatencyHistogram().merge(fast).merge(slow.to_json())

    assert merged.percentiles_ms()["p50_ms"] == pytest.approx(10, rel=0.1)
    assert merged.percentiles_ms()["p95_ms"] == pytest.approx(1000, rel=0.1)


def test_an_empty_histogram_has_no_percentiles():
    assert LatencyHistogram().percentiles_ms() == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
