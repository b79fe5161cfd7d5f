"""A mergeable latency histogram with logarithmic buckets.

Bucket ``k`` holds durations in (GROWTH**(k-1), GROWTH**k] milliseconds, so every percentile it gives
is within GROWTH - 1 (10 %) of the truth however wide the range, and rollups of any number of minutes
merge by adding counts. Stored sparse, as {"k": count}.
"""

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from itertools import accumulate
from typing import Self, TypedDict

GROWTH = 1.1
_LOG_GROWTH = math.log(GROWTH)
SMALLEST_BUCKET = -50  # about 0.0085 ms: anything faster is counted here

# Buckets as JSON stores them: {"k": count}.
StoredBuckets = Mapping[str, int]


class Percentiles(TypedDict):
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def bucket_of(duration_ms: float) -> int:
    if duration_ms <= 0:
        return SMALLEST_BUCKET
    return max(SMALLEST_BUCKET, math.ceil(math.log(duration_ms) / _LOG_GROWTH - 1e-9))


class LatencyHistogram:
    """Bucket counts keyed as JSON stores them (``"k"``): a view that merges thousands of stored rollups
    then adds counts without converting each key, and converts only once, to find its percentiles."""

    def __init__(self, buckets: StoredBuckets | Mapping[int, int] | None = None) -> None:
        self.buckets: dict[str, int] = {str(k): int(v) for k, v in (buckets or {}).items()}

    def add(self, duration_ms: float, count: int = 1) -> None:
        key = str(bucket_of(duration_ms))
        self.buckets[key] = self.buckets.get(key, 0) + count

    def copy(self) -> "LatencyHistogram":
        histogram = LatencyHistogram()
        histogram.buckets = dict(self.buckets)
        return histogram

    def merge(self, other: "LatencyHistogram | StoredBuckets") -> Self:
        """Adds another histogram, or buckets as stored (the ``to_json`` form)."""
        return self.merge_all([other.buckets if isinstance(other, LatencyHistogram) else other])

    def merge_all(self, stored: Iterable[StoredBuckets]) -> Self:
        """Adds many stored bucket maps in one loop (an edge over an hour has sixty)."""
        buckets = self.buckets
        for other in stored:
            for key, count in other.items():
                buckets[key] = buckets.get(key, 0) + count
        return self

    @property
    def total(self) -> int:
        return sum(self.buckets.values())

    def percentiles(self, fractions: Sequence[float]) -> list[float | None]:
        """The durations below which each of ``fractions`` of the samples fall, from one sort of the
        buckets (the topology asks three of every edge); Nones without samples."""
        buckets = self.buckets
        keys = sorted(buckets, key=int)
        cumulative = list(accumulate(map(buckets.__getitem__, keys)))
        total = cumulative[-1] if cumulative else 0
        if not total:
            return [None] * len(fractions)
        # bisect_left finds the first bucket that reaches the rank, never an empty one before it. The
        # bucket's geometric middle halves the worst-case error of its upper bound.
        return [
            GROWTH ** (int(keys[bisect_left(cumulative, max(1, math.ceil(fraction * total)))]) - 0.5)
            for fraction in fractions
        ]

    def percentile(self, fraction: float) -> float | None:
        return self.percentiles([fraction])[0]

    def percentiles_ms(self) -> Percentiles:
        p50, p95, p99 = self.percentiles((0.5, 0.95, 0.99))
        return {"p50_ms": _rounded(p50), "p95_ms": _rounded(p95), "p99_ms": _rounded(p99)}

    def to_json(self) -> dict[str, int]:
        return dict(self.buckets)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
