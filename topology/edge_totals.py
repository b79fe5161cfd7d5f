"""Per-edge totals over a window's minutes, with the totals of its settled minutes remembered.

A live view recomputes its window every second, but only the newest minutes still change: the spans
of older minutes have arrived. Each process keeps the totals of a window's settled minutes and reuses
them while their fingerprint (row count, summed calls and largest id of those rollups) stays the same.
A late span for a settled minute changes it: adding a rollup raises the row count and the id, and
updating one adds at least one call (rollup_batch.Delta counts every observation), so the totals are
read again. A live hour's window then reads two minutes of rollups a second, not sixty.
"""

import json
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, QuerySet, Sum
from django.utils import timezone

from topology.json_list import JSONList
from topology.latency import LatencyHistogram
from topology.models import EdgeRollup
from topology.sliding_sums import UNSETTLED_MINUTES, RollupSums
from topology.window import Window

REMEMBERED_RANGES = 8  # a few windows (5 min, 15 min, 1 h) and replays, each a few MB at most


EdgeKey = tuple[int, int, str, str]  # (source id, target id, protocol, topic)
Totals = dict[EdgeKey, RollupSums]

# (first minute, end) -> (fingerprint, totals)
_remembered: OrderedDict[tuple[datetime, datetime], tuple[tuple[Any, ...], Totals]] = OrderedDict()
_lock = threading.Lock()


def edge_totals(window: Window) -> Totals:
    """``{(source_id, target_id, protocol, topic): RollupSums}`` over every minute of ``window``."""
    first = window.first_minute
    current = min(window.until, timezone.now()).replace(second=0, microsecond=0)
    settled_end = max(first, current - timedelta(minutes=UNSETTLED_MINUTES - 1))
    totals = dict(_settled_totals(first, settled_end))
    _add(totals, EdgeRollup.objects.filter(minute__gte=settled_end, minute__lte=window.until))
    return totals


def _settled_totals(first: datetime, end: datetime) -> Totals:
    if end <= first:
        return {}
    rollups = EdgeRollup.objects.filter(minute__gte=first, minute__lt=end)
    fingerprint = tuple(rollups.aggregate(rows=Count("id"), calls=Sum("count"), last=Max("id")).values())
    key = (first, end)
    with _lock:
        remembered = _remembered.get(key)
        if remembered is not None and remembered[0] == fingerprint:
            _remembered.move_to_end(key)
            return remembered[1]
    # Read after the fingerprint: the totals hold at least what it describes, so a change between
    # the two reads only means one more read next time, never a stale view.
    totals: Totals = {}
    _add(totals, rollups)
    with _lock:
        _remembered[key] = (fingerprint, totals)
        while len(_remembered) > REMEMBERED_RANGES:
            _remembered.popitem(last=False)
    return totals


def _add(totals: Totals, rollups: QuerySet[EdgeRollup]) -> None:
    rows = (
        rollups.values_list("source_id", "target_id", "protocol", "topic")
        .annotate(Count("id"), Sum("count"), Sum("errors"), Sum("negative_delays"), JSONList("latency_buckets"))
        .order_by()
    )
    for source, target, protocol, topic, rows_count, count, errors, negative_delays, histograms in rows:
        key = (source, target, protocol, topic)
        earlier = totals.get(key)
        if earlier is None:
            totals[key] = RollupSums(
                rows_count, count, errors, negative_delays, LatencyHistogram().merge_all(json.loads(histograms))
            )
        else:
            # A copy: the earlier total may be remembered, and shared by every view of its minutes.
            totals[key] = RollupSums(
                earlier.rows + rows_count,
                earlier.count + count,
                earlier.errors + errors,
                earlier.negative_delays + negative_delays,
                earlier.histogram.copy().merge_all(json.loads(histograms)),
            )


def forget() -> None:
    """Drops what this process remembers (tests whose databases reuse ids after a rollback)."""
    with _lock:
        _remembered.clear()
