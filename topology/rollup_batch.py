"""Adds a batch of observations to the per-minute rollups in a few statements.

Rows are created when missing, then locked in primary-key order and updated, so that several
workers adding to the same minute neither lose an increment nor deadlock.

Edges and routes also name their exemplar traces (``RollupWithExemplars``). A batch offers its own
candidates; the locked row keeps what it has unless the batch's is better (slower, or the first
failed one, or an example from a kept trace instead of a dropped one), so across every batch and
worker a minute's slowest call is its exemplar. The spans of the candidates that won are what
``exemplar_spans`` returns, for ingestion to keep whatever SPAN_KEEP_RATIO drops: a minute keeps a
few, not one set per batch.
"""

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.db.models import Q

from topology.changes import ChangedRows
from topology.latency import LatencyHistogram
from topology.models import EdgeRollup, InstanceRollup, RouteHopRollup, RouteRollup
from topology.models.rollups import Rollup, RollupWithExemplars
from topology.span_keeping import keeps_trace

# A rollup's key: its values of the fields that KEYS names for its model.
Key = tuple[Any, ...]

KEYS: dict[type[Rollup], tuple[str, ...]] = {
    EdgeRollup: ("minute", "source_id", "target_id", "protocol", "topic"),
    InstanceRollup: ("minute", "instance_id", "caller_id"),
    RouteRollup: ("minute", "service_id", "operation"),
    # The path with its key: a new row is made from its key's fields, and it needs the path's text.
    RouteHopRollup: ("minute", "service_id", "operation", "path_key", "path"),
}


def minute_of(start_us: int) -> datetime:
    return datetime.fromtimestamp(start_us // 60_000_000 * 60, UTC)


@dataclass(frozen=True)
class Candidate:
    """A trace offered as an exemplar: its latency by the rollup's measure, and the spans counted for it."""

    latency_ms: float
    trace_id: str
    spans: tuple[Any, ...]


@dataclass
class Delta:
    count: int = 0
    errors: int = 0
    latency_sum_ms: float = 0.0
    negative_delays: int = 0
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    # Exemplar candidates, edges and routes only; the example is the batch's first kept one, if any.
    example: Candidate | None = None
    example_kept: bool = False
    failed: Candidate | None = None
    failed_kept: bool = False
    slowest: Candidate | None = None

    def offer(self, candidate: Candidate, error: bool, kept: bool) -> None:
        if self.example is None or (kept and not self.example_kept):
            self.example, self.example_kept = candidate, kept
        if error and (self.failed is None or (kept and not self.failed_kept)):
            self.failed, self.failed_kept = candidate, kept
        if self.slowest is None or candidate.latency_ms > self.slowest.latency_ms:
            self.slowest = candidate

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
    def __init__(self, keep_ratio: float = 1.0) -> None:
        self.deltas: dict[type[Rollup], defaultdict[Key, Delta]] = {model: defaultdict(Delta) for model in KEYS}
        self.keep_ratio = keep_ratio
        self.exemplar_spans: list[Any] = []  # filled by save()
        self.saved: dict[type[Rollup], set[int]] = {model: set() for model in KEYS}  # row ids, by save()

    def _offer(self, delta: Delta, latency_ms: float, error: bool, spans: tuple[Any, ...]) -> None:
        if spans:
            trace_id = spans[0].trace_id
            candidate = Candidate(latency_ms, trace_id, spans)
            delta.offer(candidate, error, keeps_trace(trace_id, self.keep_ratio))

    def add_edge(
        self,
        start_us: int,
        source_id: int,
        target_id: int,
        protocol: str,
        topic: str,
        latency_ms: float,
        error: bool,
        spans: tuple[Any, ...] = (),
    ) -> None:
        """``spans``: those counted for this call, which keep its trace as an exemplar if it wins."""
        delta = self.deltas[EdgeRollup][(minute_of(start_us), source_id, target_id, protocol, topic)]
        delta.add(latency_ms, error)
        self._offer(delta, latency_ms, error, spans)

    def add_instance(
        self, start_us: int, instance_id: int, caller_id: int | None, latency_ms: float, error: bool
    ) -> None:
        self.deltas[InstanceRollup][(minute_of(start_us), instance_id, caller_id)].add(latency_ms, error)

    def add_route(
        self,
        start_us: int,
        service_id: int,
        operation: str,
        latency_ms: float,
        error: bool,
        spans: tuple[Any, ...] = (),
    ) -> None:
        delta = self.deltas[RouteRollup][(minute_of(start_us), service_id, operation)]
        delta.add(latency_ms, error)
        self._offer(delta, latency_ms, error, spans)

    def add_hop(
        self, root_start_us: int, service_id: int, operation: str, path: str, latency_ms: float, error: bool
    ) -> None:
        """A hop of a request to the route (``service_id``, ``operation``) that started at
        ``root_start_us``; ``path`` is its JSON text (``RouteHopRollup``)."""
        path_key = hashlib.sha256(path.encode()).hexdigest()
        self.deltas[RouteHopRollup][(minute_of(root_start_us), service_id, operation, path_key, path)].add(
            latency_ms, error
        )

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
                self.exemplar_spans += _apply(model, KEYS[model], deltas, self.keep_ratio, self.saved[model])

    @property
    def changed_rows(self) -> ChangedRows:
        """The rollup rows that save() added to (or moved rows' targets), for the live views."""
        return ChangedRows(
            edge_rollups=frozenset(self.saved[EdgeRollup]),
            instance_rollups=frozenset(self.saved[InstanceRollup]),
            route_rollups=frozenset(self.saved[RouteRollup]),
        )


def _lookup(model: type[Rollup], fields: tuple[str, ...], keys: Sequence[Key]) -> dict[Key, Rollup]:
    # _default_manager: the abstract Rollup declares no ``objects`` of its own.
    conditions = [Q(**dict(zip(fields, key))) for key in keys]
    rows = model._default_manager.select_for_update().filter(reduce(or_, conditions)).order_by("pk")
    found: dict[Key, Rollup] = {}
    for row in rows:
        found.setdefault(tuple(getattr(row, name) for name in fields), row)
    return found


def _take_exemplars(row: RollupWithExemplars, delta: Delta, keep_ratio: float) -> list[Any]:
    """Sets the row's exemplars where the batch's candidates are better; returns the winners' spans."""
    won: list[Any] = []
    example_kept = bool(row.example_trace_id) and keeps_trace(row.example_trace_id, keep_ratio)
    if delta.example is not None and (not row.example_trace_id or (delta.example_kept and not example_kept)):
        row.example_trace_id = delta.example.trace_id
        won += delta.example.spans
    if delta.failed is not None and not row.error_trace_id:
        row.error_trace_id = delta.failed.trace_id
        won += delta.failed.spans
    slowest = delta.slowest
    if slowest is not None and (row.slowest_ms is None or slowest.latency_ms > row.slowest_ms):
        row.slowest_trace_id, row.slowest_ms = slowest.trace_id, slowest.latency_ms
        won += slowest.spans
    return won


def _apply(
    model: type[Rollup], fields: tuple[str, ...], deltas: dict[Key, Delta], keep_ratio: float, saved: set[int]
) -> list[Any]:
    """Adds the deltas to their rows, whose ids go into ``saved``; returns the spans of the exemplars that won."""
    keys = sorted(deltas, key=repr)
    rows = _lookup(model, fields, keys)
    missing = [key for key in keys if key not in rows]
    if missing:
        model._default_manager.bulk_create([model(**dict(zip(fields, key))) for key in missing], ignore_conflicts=True)
        rows.update(_lookup(model, fields, missing))
    changed = []
    won: list[Any] = []
    for key, delta in deltas.items():
        row = rows[key]
        row.count += delta.count
        row.errors += delta.errors
        row.latency_sum_ms += delta.latency_sum_ms
        # A retracted observation leaves its bucket at 0: dropped, as if it had never been there.
        row.latency_buckets = {key: n for key, n in row.histogram.merge(delta.histogram).to_json().items() if n}
        if delta.negative_delays and isinstance(row, EdgeRollup):
            row.negative_delays += delta.negative_delays
        if isinstance(row, RollupWithExemplars):
            won += _take_exemplars(row, delta, keep_ratio)
        changed.append(row)
        saved.add(row.pk)
    update_fields = ["count", "errors", "latency_sum_ms", "latency_buckets"]
    if model is EdgeRollup:
        update_fields.append("negative_delays")
    if issubclass(model, RollupWithExemplars):
        update_fields += ["example_trace_id", "error_trace_id", "slowest_trace_id", "slowest_ms"]
    model._default_manager.bulk_update(changed, update_fields)
    return won
