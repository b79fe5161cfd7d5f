"""Propagation delay of asynchronous flows: producer service → topic → consumer service.

The delay is CONSUMER span start minus PRODUCER span start, rolled up per minute in EdgeRollup rows
that have a topic. Two clocks are involved, so a delay can come out negative; those are counted
apart and reported, never dropped.
"""

from datetime import timedelta

from django.utils import timezone

from topology.latency import LatencyHistogram
from topology.models import EdgeRollup


def _figures(count, negative_delays, histogram):
    return {
        "count": count,
        **histogram.percentiles_ms(),
        "negative_delays": negative_delays,
        "negative_share": negative_delays / count if count else None,
        "clock_skew_suspected": negative_delays > 0,
    }


def flows(minutes=60, now=None):
    """Every asynchronous flow seen in the last ``minutes``, with its figures over the window and
    per minute, oldest first."""
    now = now or timezone.now()
    rollups = (
        EdgeRollup.objects.exclude(topic="")
        .filter(minute__gte=now - timedelta(minutes=minutes), minute__lt=now)
        .select_related("source", "target")
        .order_by("minute")
    )
    by_flow = {}
    for rollup in rollups:
        key = (rollup.source.name, rollup.topic, rollup.target.name)
        by_flow.setdefault(key, []).append(rollup)
    result = []
    for (producer, topic, consumer), minutes_of_flow in sorted(by_flow.items()):
        total = LatencyHistogram()
        for rollup in minutes_of_flow:
            total.merge(rollup.latency_buckets)
        result.append(
            {
                "producer": producer,
                "topic": topic,
                "consumer": consumer,
                **_figures(
                    sum(r.count for r in minutes_of_flow), sum(r.negative_delays for r in minutes_of_flow), total
                ),
                "series": [
                    {"minute": r.minute, **_figures(r.count, r.negative_delays, r.histogram)} for r in minutes_of_flow
                ],
            }
        )
    return {"window": {"start": now - timedelta(minutes=minutes), "end": now, "minutes": minutes}, "flows": result}
