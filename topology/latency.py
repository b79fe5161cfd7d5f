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

    def percentile(self, fraction):
        """The duration below which ``fraction`` of the samples fall, or None without samples."""
        total = self.total
        if not total:
            return None
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                # The bucket's geometric middle halves the worst-case error of its upper bound.
                return GROWTH ** (key - 0.5)
        raise AssertionError("unreachable: rank never exceeds the total")

    def percentiles_ms(self):
        return {name: _rounded(self.percentile(q)) for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))}

    def to_json(self):
        return {str(k): v for k, v in self.buckets.items()}


def _rounded(value):
    return None if value is None else round(value, 3)
