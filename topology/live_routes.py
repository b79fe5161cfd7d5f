"""The entry routes of the live windows, kept from the route rollups that changed.

As ``topology.live_topology`` for the graph: the routes' sums per window (``topology.sliding_sums``),
and on each update the records of the routes whose rollups changed, or whose minutes slid, rebuilt
with ``entry_routes.route_record``. tests/test_live_views.py checks it against ``routes_view``.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from topology.changes import ChangedRows
from topology.entry_routes import ROUTE_KEY_FIELDS, route_record
from topology.models import RouteRollup, Service
from topology.record_changes import RecordChanges
from topology.sliding_sums import Key, SlidingSums
from topology.window import LIVE_WINDOW_SECONDS, Window


class LiveRoutes:
    """Every live window's routes, kept from changed rows. Not thread-safe: one owner."""

    lists = ("routes",)

    def __init__(self, windows: Iterable[int] = LIVE_WINDOW_SECONDS) -> None:
        self.windows = tuple(sorted(set(windows)))
        self.sums = SlidingSums(RouteRollup, ROUTE_KEY_FIELDS, self.windows)
        self.names: dict[int, str] = {}
        self.records: dict[int, dict[Key, dict[str, Any]]] = {seconds: {} for seconds in self.windows}
        self.built = False

    def header(self, seconds: int, now: datetime) -> dict[str, Any]:
        return {"covered_seconds": Window(seconds, now).covered_seconds}

    def view(self, seconds: int, now: datetime) -> dict[str, Any]:
        records = sorted(self.records[seconds].values(), key=lambda record: record["id"])
        return {**self.header(seconds, now), "routes": records}

    def rebuild(self, now: datetime) -> dict[int, RecordChanges]:
        self.sums.rebuild(now)
        keys = self.sums.all_keys()
        self.names = dict(Service.objects.filter(id__in={key[0] for key in keys}).values_list("id", "name"))
        self.built = True
        return self._refresh(keys | {key for records in self.records.values() for key in records})

    def update(self, now: datetime, changed: ChangedRows) -> dict[int, RecordChanges]:
        if not self.built:
            return self.rebuild(now)
        keys: set[Key] = set()
        # The rows first, then the slide (as in live_topology: a late write to the minute that leaves).
        if changed.route_rollups:
            rows = RouteRollup.objects.filter(pk__in=changed.route_rollups).values_list(*ROUTE_KEY_FIELDS, "minute")
            keys = self.sums.apply(((service_id, operation), minute) for service_id, operation, minute in rows)
        keys |= self.sums.advance(now)
        if changed.services:
            present = set(Service.objects.filter(id__in=changed.services).values_list("id", flat=True))
            gone = {key for key in self.sums.all_keys() if key[0] in changed.services - present}
            self.sums.forget(gone)
            keys |= gone
        missing = {key[0] for key in keys} - self.names.keys()
        self.names.update(Service.objects.filter(id__in=missing).values_list("id", "name"))
        return self._refresh(keys)

    def _refresh(self, keys: set[Key]) -> dict[int, RecordChanges]:
        result = {}
        for seconds in self.windows:
            changes = RecordChanges()
            records = self.records[seconds]
            for key in keys:
                service_id, operation = key
                sums = self.sums.total(seconds, key)
                name = self.names.get(service_id)
                record = route_record(name, operation, sums) if sums.rows and name is not None else None
                changes.put("routes", records, key, record)
            result[seconds] = changes
        return result
