"""Propagation delay of asynchronous flows: producer service → topic → consumer service.

The delay is CONSUMER span start minus PRODUCER span start, rolled up per minute in EdgeRollup rows
that have a topic. Two clocks are involved, so a delay can come out negative; those are counted
apart and reported, never dropped.
"""

from datetime import datetime
from typing import Any

from topology.latency import LatencyHistogram
from topology.models import EdgeRollup
from topology.window import Window


def _figures(count: int, negative_delays: int, histogram: LatencyHistogram) -> dict[str, Any]:
    return {
        "count": count,
        **histogram.percentiles_ms(),
        "negative_delays": negative_delays,
        "negative_share": negative_delays / count if count else None,
        "clock_skew_suspected": negative_delays > 0,
    }


def flows(window: Window) -> dict[str, Any]:
    """Every asynchronous flow seen in ``window``, with its figures over the window and per minute,
    oldest first."""
    rollups = (
        EdgeRollup.objects.exclude(topic="")
        .filter(minute__gte=window.since, minute__lt=window.until)
        .order_by("minute")
        .values_list("source__name", "topic", "target__name", "minute", "count", "negative_delays", "latency_buckets")
    )
    by_flow: dict[tuple[str, str, str], list[tuple[datetime, int, int, LatencyHistogram]]] = {}
    for producer, topic, consumer, minute, count, negative, buckets in rollups:
        by_flow.setdefault((producer, topic, consumer), []).append(
            (minute, count, negative, LatencyHistogram().merge(buckets))
        )
    result = []
    for (producer, topic, consumer), series in sorted(by_flow.items()):
        total = LatencyHistogram().merge_all(histogram.buckets for *_, histogram in series)
        result.append(
            {
                "producer": producer,
                "topic": topic,
                "consumer": consumer,
                **_figures(
                    sum(count for _, count, _, _ in series), sum(negative for _, _, negative, _ in series), total
                ),
                "series": [
                    {"minute": minute, **_figures(count, negative, histogram)}
                    for minute, count, negative, histogram in series
                ],
            }
        )
    return {"window": window.as_dict(), "flows": result}
