"""The topology view of the live windows, kept up to date from the rows that changed.

``topology.graph.topology_view`` reads a whole window every time: 1,082 ms at 5,000 services and 25,000
edges, once a second, to find that 1 % of the edges changed. ``LiveTopology`` keeps every live
window's edge and instance sums (``topology.sliding_sums``) and its records, and on each update
rebuilds only the records of what changed: the edges whose rollups changed, the services at either end
of them, those whose instances served requests, and those the registry changed. It returns, per
window, the records to upsert and the ids to remove: the delta, with no diff of the whole view.

The records come from ``graph.node_record`` and ``graph.edge_record`` over the same sums a full
reading adds up, so the two agree (tests/test_live_views.py checks it after random sequences of
rollups, late spans, slides and deleted services, on PostgreSQL and SQLite).
"""

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from topology.changes import ChangedRows
from topology.graph import ServiceFacts, edge_record, node_record, service_facts, view_header
from topology.models import EdgeRollup, Instance, InstanceRollup
from topology.models.sources import HealthFreshness
from topology.record_changes import RecordChanges
from topology.sliding_sums import Key, SlidingSums
from topology.window import LIVE_WINDOW_SECONDS, Window

EDGE_KEY_FIELDS = ("source_id", "target_id", "protocol", "topic")


class LiveTopology:
    """Every live window's topology, kept from changed rows (module doc). Not thread-safe: one owner."""

    lists = ("nodes", "edges")

    def __init__(self, windows: Iterable[int] = LIVE_WINDOW_SECONDS) -> None:
        self.windows = tuple(sorted(set(windows)))
        self.edges = SlidingSums(EdgeRollup, EDGE_KEY_FIELDS, self.windows)
        self.served = SlidingSums(InstanceRollup, ("instance_id",), self.windows)
        self.service_of: dict[int, int] = {}  # instance id -> service id
        self.instances_of: defaultdict[int, set[int]] = defaultdict(set)
        self.edges_of: defaultdict[int, set[Key]] = defaultdict(set)  # service id -> its edges' keys
        self.facts: dict[int, ServiceFacts] = {}
        self.freshness: HealthFreshness | None = None
        self.nodes: dict[int, dict[int, dict[str, Any]]] = {seconds: {} for seconds in self.windows}
        self.edge_records: dict[int, dict[Key, dict[str, Any]]] = {seconds: {} for seconds in self.windows}
        self.built = False

    # --- reading ----------------------------------------------------------------------------------

    def header(self, seconds: int, now: datetime) -> dict[str, Any]:
        return view_header(Window(seconds, now))

    def view(self, seconds: int, now: datetime) -> dict[str, Any]:
        """The whole view of one window, as ``topology.graph.topology_view`` gives it."""
        return {
            **self.header(seconds, now),
            "nodes": sorted(self.nodes[seconds].values(), key=lambda node: node["name"]),
            "edges": sorted(self.edge_records[seconds].values(), key=lambda edge: edge["id"]),
        }

    # --- keeping --------------------------------------------------------------------------------

    def rebuild(self, now: datetime) -> dict[int, RecordChanges]:
        """Reads everything afresh; returns what changed from the records held before."""
        self.edges.rebuild(now)
        self.served.rebuild(now)
        self.service_of, self.instances_of, self.edges_of = {}, defaultdict(set), defaultdict(set)
        self._index_edges(self.edges.all_keys())
        self._index_instances({key[0] for key in self.served.all_keys()})
        self.freshness = HealthFreshness.now()
        self.facts = service_facts(None, self.freshness)
        known = set(self.facts)
        self.facts.update(service_facts((set(self.edges_of) | set(self.instances_of)) - known, self.freshness))
        self.built = True
        return self._refresh(set(self.facts) | set(self.edges_of), self.edges.all_keys(), everything=True)

    def update(self, now: datetime, changed: ChangedRows) -> dict[int, RecordChanges]:
        """Applies the rows that changed since the last update, and the window's slide to ``now``."""
        if not self.built:
            return self.rebuild(now)
        # The rows first, in the minutes they were written for; then the slide, which subtracts the
        # minute that leaves as the rollups hold it now, late writes to it included.
        written_edges: set[Key] = set()
        written_instances: set[Key] = set()
        if changed.edge_rollups:
            edge_rows = EdgeRollup.objects.filter(pk__in=changed.edge_rollups).values_list(*EDGE_KEY_FIELDS, "minute")
            written_edges = self.edges.apply((tuple(row[:4]), row[4]) for row in edge_rows)
        if changed.instance_rollups:
            instance_rows = InstanceRollup.objects.filter(pk__in=changed.instance_rollups).values_list(
                "instance_id", "minute"
            )
            written_instances = self.served.apply(((instance,), minute) for instance, minute in instance_rows)
        slid_edges, slid_instances = self.edges.advance(now), self.served.advance(now)
        edge_keys = slid_edges | written_edges
        self._index_edges(edge_keys)
        self._index_instances({key[0] for key in slid_instances | written_instances})
        # A write may change its services' facts too (ingestion marks a service seen in traces, creates
        # instances): those are read again. A slide changes counts only: 5,000 services' facts cost
        # 300 ms, a sixth of a slide at that size.
        touched = set(changed.services) | _ends(written_edges) | self._services_of(written_instances)
        services = touched | _ends(slid_edges) | self._services_of(slid_instances)
        freshness = HealthFreshness.now()
        if freshness != self.freshness:
            # A datacenter's health became stale or current again: every node's health may change.
            self.freshness = freshness
            touched |= set(self.facts)
        reread = touched | (services - self.facts.keys())
        facts = service_facts(reread, freshness)
        for service_id in reread - facts.keys():
            forgotten = self._forget_service(service_id)
            edge_keys |= forgotten
            services |= _ends(forgotten)  # a caller's or callee's figures lose the deleted edges
        self.facts.update(facts)
        return self._refresh(services | reread, edge_keys)

    def _services_of(self, instance_keys: Iterable[Key]) -> set[int]:
        return {self.service_of[key[0]] for key in instance_keys if key[0] in self.service_of}

    def _forget_service(self, service_id: int) -> set[Key]:
        """Drops a deleted service, whose rollups went with it (on delete cascade); returns its edges."""
        forgotten = self.edges_of.pop(service_id, set())
        self.edges.forget(forgotten)
        instances = self.instances_of.pop(service_id, set())
        self.served.forget((instance,) for instance in instances)
        for instance in instances:
            self.service_of.pop(instance, None)
        self.facts.pop(service_id, None)
        return forgotten

    def _index_edges(self, keys: Iterable[Key]) -> None:
        for key in keys:
            self.edges_of[key[0]].add(key)
            self.edges_of[key[1]].add(key)

    def _index_instances(self, instance_ids: set[int]) -> None:
        missing = instance_ids - self.service_of.keys()
        if missing:
            for instance_id, service_id in Instance.objects.filter(id__in=missing).values_list("id", "service_id"):
                self.service_of[instance_id] = service_id
                self.instances_of[service_id].add(instance_id)

    def _refresh(
        self, services: set[int], edge_keys: Iterable[Key], everything: bool = False
    ) -> dict[int, RecordChanges]:
        """Rebuilds the records of ``services`` and ``edge_keys`` in every window; returns the changes."""
        names = {service_id: facts.name for service_id, facts in self.facts.items()}
        edge_keys = set(edge_keys)
        result = {}
        for seconds in self.windows:
            changes = RecordChanges()
            records = self.edge_records[seconds]
            for key in (set(records) | edge_keys) if everything else edge_keys:
                sums = self.edges.total(seconds, key)
                record = (
                    edge_record((key[0], key[1], key[2], key[3]), sums, names)
                    if sums.rows and key[0] in names and key[1] in names
                    else None
                )
                changes.put("edges", records, key, record)
            nodes = self.nodes[seconds]
            for service_id in (set(nodes) | services) if everything else services:
                changes.put("nodes", nodes, service_id, self._node(seconds, service_id))
            result[seconds] = changes
        return result

    def _node(self, seconds: int, service_id: int) -> dict[str, Any] | None:
        facts = self.facts.get(service_id)
        if facts is None:
            return None
        served_rows = served = served_errors = 0
        for instance in self.instances_of.get(service_id, ()):
            sums = self.served.total(seconds, (instance,))
            served_rows += sums.rows
            served += sums.count
            served_errors += sums.errors
        if served_rows:
            return node_record(facts, served, served_errors)
        in_window = False
        count = errors = 0
        for key in self.edges_of.get(service_id, ()):
            sums = self.edges.total(seconds, key)
            if not sums.rows:
                continue
            in_window = True
            if key[1] == service_id:
                count += sums.count
                errors += sums.errors
        if not in_window and not facts.shown_always:
            return None
        return node_record(facts, count, errors)


def _ends(edge_keys: Iterable[Key]) -> set[int]:
    """The services at either end of the edges."""
    return {service_id for key in edge_keys for service_id in key[:2]}
