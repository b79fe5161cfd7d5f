"""Which traces keep their raw spans: SPAN_KEEP_RATIO of them, decided from the trace id alone.

Every worker decides the same for a trace without asking any other, and decides as OpenTelemetry's
TraceIdRatioBased sampler does at the same ratio: the trace is kept when the low 64 bits of its id are
below ratio × 2⁶⁴ (opentelemetry-sdk, ``sampling.TraceIdRatioBased``; the W3C trace context makes
those bits random). A fleet that samples at the source with that sampler and keeps a lower ratio
here keeps a subset of what it sends.

The ratio thins what is stored, never what is counted: rollups, pairing and the exemplars of every
edge and route, and the hops of every route's call tree, are computed from every span
(``topology.ingestion``, ``topology.rollup_batch``, ``topology.route_hops``). So a dropped trace's
spans are stored until its trace's hops are counted, and after that while they wait for their partner
and when they are exemplars.
"""

from django.conf import settings

_LOW_64_BITS = 16  # hex digits


def keep_ratio() -> float:
    return float(settings.SPAN_KEEP_RATIO)


def keeps_trace(trace_id: str, ratio: float) -> bool:
    """Whether the spans of ``trace_id`` (lower-case hex) are kept at ``ratio``."""
    if ratio >= 1:
        return True
    return int(trace_id[-_LOW_64_BITS:], 16) < round(ratio * (1 << 64))
