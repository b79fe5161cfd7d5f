"""Adds a batch of observations to the per-minute rollups in a few statements.

Rows are created when missing, then locked in primary-key order and updated, so that several
workers adding to the same minute neither lose an increment nor deadlock.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.db.models import Q

from topology.latency import LatencyHistogram
from topology.models import EdgeRollup, InstanceRollup, RouteRollup
from topology.models.rollups import Rollup

# A rollup's key: its values of the fields that KEYS names for its model.
Key = tuple[Any, ...]

KEYS: dict[type[Rollup], tuple[str, ...]] = {
    EdgeRollup: ("minute", "source_id", "target_id", "protocol", "topic"),
    InstanceRollup: ("minute", "instance_id", "caller_id"),
    RouteRollup: ("minute", "service_id", "operation"),
}


def minute_of(start_us: int) -> datetime:
    return datetime.fromtimestamp(start_us // 60_000_000 * 60, UTC)


@dataclass
class Delta:
    count: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    negative_delays: int = 0
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)

    def add(self, latency_ms: float, error: bool) -> None:
        self.count += 1
        self.errors += bool(error)
        if latency_ms < 0:
            # Clock skew between producer and consumer: counted apart, never folded into the histogram.
            self.negative_delays += 1
        else:
            self.latency_sum_ms += latency_ms
            self.histogram.add(latency_ms)

    def add_stored(self, row: Rollup) -> None:
        """Adds a stored rollup's figures, whose observations move to this delta's key."""
        self.count += row.count
        self.errors += row.errors
        self.latency_sum_ms += row.latency_sum_ms
        self.histogram.merge(row.latency_buckets)

    def retract(self, latency_ms: float, error: bool) -> None:
        """Takes back an observation that ``add`` counted (with the same figures) in an earlier batch."""
        self.count -= 1
        self.errors -= bool(error)
        if latency_ms < 0:
            self.negative_delays -= 1
        else:
            self.latency_sum_ms -= latency_ms
            self.histogram.add(latency_ms, -1)


class RollupBatch:
    def __init__(self) -> None:
        self.deltas: dict[type[Rollup], defaultdict[Key, Delta]] = {model: defaultdict(Delta) for model in KEYS}

    def add_edge(
        self,
        start_us: int,
        source_id: int,
        target_id: int,
        protocol: str,
        topic: str,
        latency_ms: float,
        error: bool,
    ) -> None:
        self.deltas[EdgeRollup][(minute_of(start_us), source_id, target_id, protocol, topic)].add(latency_ms, error)

    def add_instance(
        self, start_us: int, instance_id: int, caller_id: int | None, latency_ms: float, error: bool
    ) -> None:
        self.deltas[InstanceRollup][(minute_of(start_us), instance_id, caller_id)].add(latency_ms, error)

    def add_route(self, start_us: int, service_id: int, operation: str, latency_ms: float, error: bool) -> None:
        self.deltas[RouteRollup][(minute_of(start_us), service_id, operation)].add(latency_ms, error)

    def retract_instance(
        self, start_us: int, instance_id: int, caller_id: int | None, latency_ms: float, error: bool
    ) -> None:
        self.deltas[InstanceRollup][(minute_of(start_us), instance_id, caller_id)].retract(latency_ms, error)

    def retract_route(self, start_us: int, service_id: int, operation: str, latency_ms: float, error: bool) -> None:
        self.deltas[RouteRollup][(minute_of(start_us), service_id, operation)].retract(latency_ms, error)

    def move_instance_rollups(self, source_ids: Sequence[int], target_id: int) -> dict[int, datetime]:
        """Moves what the source instances served to the target instance: their stored rollups are
        deleted now and added to the target's when the batch is saved, in the same transaction.
        Returns when each source instance last served a request (the end of its last minute)."""
        rows = list(InstanceRollup.objects.select_for_update().filter(instance_id__in=source_ids).order_by("pk"))
        last_served: dict[int, datetime] = {}
        for row in rows:
            self.deltas[InstanceRollup][(row.minute, target_id, row.caller_id)].add_stored(row)
            if row.count:
                end = row.minute + timedelta(minutes=1)
                last_served[row.instance_id] = max(end, last_served.get(row.instance_id, end))
        InstanceRollup.objects.filter(instance_id__in=source_ids).delete()
        return last_served

    def __bool__(self) -> bool:
        return any(self.deltas.values())

    def save(self) -> None:
        """Call inside the transaction that inserted the spans these observations came from."""
        for model, deltas in self.deltas.items():
            if deltas:
                _apply(model, KEYS[model], deltas)


def _lookup(model: type[Rollup], fields: tuple[str, ...], keys: Sequence[Key]) -> dict[Key, Rollup]:
    # _default_manager: the abstract Rollup declares no ``objects`` of its own.
    conditions = [Q(**dict(zip(fields, key))) for key in keys]
    rows = model._default_manager.select_for_update().filter(reduce(or_, conditions)).order_by("pk")
    found: dict[Key, Rollup] = {}
    for row in rows:
        found.setdefault(tuple(getattr(row, name) for name in fields), row)
    return found


def _apply(model: type[Rollup], fields: tuple[str, ...], deltas: dict[Key, Delta]) -> None:
    keys = sorted(deltas, key=repr)
    rows = _lookup(model, fields, keys)
    missing = [key for key in keys if key not in rows]
    if missing:
        model._default_manager.bulk_create([model(**dict(zip(fields, key))) for key in missing], ignore_conflicts=True)
        rows.update(_lookup(model, fields, missing))
    changed = []
    for key, delta in deltas.items():
        row = rows[key]
        row.count += delta.count
        row.errors += delta.errors
        row.latency_sum_ms += delta.latency_sum_ms
        # A retracted observation leaves its bucket at 0: dropped, as if it had never been there.
        row.latency_buckets = {key: n for key, n in row.histogram.merge(delta.histogram).to_json().items() if n}
        if delta.negative_delays and isinstance(row, EdgeRollup):
            row.negative_delays += delta.negative_delays
        changed.append(row)
    update_fields = ["count", "errors", "latency_sum_ms", "latency_buckets"]
    if model is EdgeRollup:
        update_fields.append("negative_delays")
    model._default_manager.bulk_update(changed, update_fields)
