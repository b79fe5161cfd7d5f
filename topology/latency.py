"""A mergeable latency histogram with logarithmic buckets.

Bucket ``k`` holds durations in (GROWTH**(k-1), GROWTH**k] milliseconds, so every percentile it gives
is within GROWTH - 1 (10 %) of the truth however wide the range, and rollups of any number of minutes
merge by adding counts. Stored sparse, as {"k": count}.
"""

import math

GROWTH = 1.1
_LOG_GROWTH = math.log(GROWTH)
SMALLEST_BUCKET = -50  # about 0.0085 ms: anything faster is counted here


def bucket_of(duration_ms):
    if duration_ms <= 0:
        return SMALLEST_BUCKET
    return max(SMALLEST_BUCKET, math.ceil(math.log(duration_ms) / _LOG_GROWTH - 1e-9))


class LatencyHistogram:
    def __init__(self, buckets=None):
        self.buckets = {int(k): int(v) for k, v in (buckets or {}).items()}

    def add(self, duration_ms, count=1):
        key = bucket_of(duration_ms)
        self.buckets[key] = self.buckets.get(key, 0) + count

    def merge(self, other):
        buckets = other.buckets if isinstance(other, LatencyHistogram) else other
        for key, count in buckets.items():
            key = int(key)
            self.buckets[key] = self.buckets.get(key, 0) + int(count)
        return self

    @property
    def total(self):
        return sum(self.buckets.values())

    def percentiles(self, fractions):
        """The durations below which each of ``fractions`` (ascending) of the samples fall, found in one
        pass over the buckets (the topology asks three of every edge); Nones without samples."""
        total = self.total
        if not total:
            return [None] * len(fractions)
        ranks = [max(1, math.ceil(fraction * total)) for fraction in fractions]
        found = []
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            while len(found) < len(ranks) and seen >= ranks[len(found)]:
                # The bucket's geometric middle halves the worst-case error of its upper bound.
                found.append(GROWTH ** (key - 0.5))
            if len(found) == len(ranks):
                return found
        raise AssertionError("unreachable: rank never exceeds the total")

    def percentile(self, fraction):
        return self.percentiles([fraction])[0]

    def percentiles_ms(self):
        p50, p95, p99 = self.percentiles((0.5, 0.95, 0.99))
        return {"p50_ms": _rounded(p50), "p95_ms": _rounded(p95), "p99_ms": _rounded(p99)}

    def to_json(self):
        return {str(k): v for k, v in self.buckets.items()}


def _rounded(value):
    return None if value is None else round(value, 3)
