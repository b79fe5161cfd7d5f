"""A route's call tree from every trace, whatever SPAN_KEEP_RATIO keeps: per-route hop rollups.

A request to an entry route passes through hops: its root span, and each SERVER or CONSUMER span
below it, named by its path of (service, operation) from the root (``trace_hops``). The call tree of
a route is those hops merged over its requests; ``topology.traces.route_tree`` draws it.

Merging stored traces gave it from the kept traces only below a ratio of 1: an estimate, one trace
in ten at 0.1. So each trace's hops are counted into ``RouteHopRollup`` rows once, when the trace is
settled: its root arrived, and started more than SPAN_PAIRING_GRACE_SECONDS ago, the time pairing
gives a call's halves too. Until then every span of the trace is stored, a dropped trace's as well
(``topology.ingestion``), and the tree reads it from the spans; once its hops are counted, the spans
of a dropped trace go, but for those still waiting for their partner (deleted when paired) and the
exemplars. A span that arrives after its trace was settled is counted in the edges and instances as
ever, and is missing from its trace's hops, as a call's half that comes after the grace is counted
alone; so is the trace of a Zipkin shared root whose client half comes after it.

``Span.hops_pending`` marks the work: the roots not counted yet and the spans of dropped traces not
deleted yet, the rows of a partial index that holds the last minute or two of roots (and at a ratio
below 1, of the dropped traces' spans), however large the table. ``settle_route_hops`` claims them by row locks that other runs skip,
so two runs at once never count one trace twice and never wait for each other.
"""

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import NamedTuple

from django.db import transaction
from django.utils import timezone

from topology.changes import ROUTES, ChangedRows, announce_on_commit
from topology.models import Span
from topology.rollup_batch import RollupBatch
from topology.shared_spans import Placement, tree_parents
from topology.span_keeping import keep_ratio, keeps_trace

HOP_KINDS = ("server", "consumer")
# (service, operation) of each hop below a route's root down to a hop; () for the root itself.
HopPath = tuple[tuple[str, str], ...]


class HopSpan(NamedTuple):
    """What finding a span's hop reads of it."""

    parent_id: str
    kind: str
    service: str
    instance: str  # anything that tells a service's instances apart: Zipkin's shared spans need it
    name: str
    duration_us: int
    error: bool


class Hop(NamedTuple):
    path: HopPath
    duration_us: int
    error: bool


# What settling and the tree read of a stored span, in this order (HOP_FIELDS[2:] make a HopSpan
# with the service's name and the instance's id).
HOP_FIELDS = (
    "trace_id",
    "span_id",
    "parent_id",
    "kind",
    "service__name",
    "instance_id",
    "name",
    "duration_us",
    "error",
)


def path_text(path: HopPath) -> str:
    """A path as ``RouteHopRollup.path`` stores it: compact JSON, ``[["cart","GET /cart"]]``."""
    return json.dumps(path, separators=(",", ":"))


def parse_path(text: str) -> HopPath:
    return tuple((service, operation) for service, operation in json.loads(text))


def trace_hops(trace_id: str, spans: Mapping[str, HopSpan]) -> dict[str, list[Hop]]:
    """The hops of one trace by the span id of their root: its root's own (path ``()``) and those of
    the SERVER and CONSUMER spans below it, in the corrected tree (``tree_parents``: a Zipkin shared
    server's callees under the server half). A span whose way up to a root is broken (a parent that
    never arrived, a cycle) is a hop of no route."""
    parents = tree_parents(
        trace_id, {span_id: Placement(s.parent_id, s.kind, s.service, s.instance) for span_id, s in spans.items()}
    )
    hops: defaultdict[str, list[Hop]] = defaultdict(list)
    for span_id, span in spans.items():
        if parents[span_id] and span.kind not in HOP_KINDS:
            continue
        found = _way_up(span_id, spans, parents)
        if found is not None:
            root_id, path = found
            hops[root_id].append(Hop(path, span.duration_us, span.error))
    return hops


def _way_up(span_id: str, spans: Mapping[str, HopSpan], parents: Mapping[str, str]) -> tuple[str, HopPath] | None:
    """The root above a hop and the path below it down to the hop; None when a parent on the way never
    arrived or the parents make a cycle."""
    path: list[tuple[str, str]] = []
    seen: set[str] = set()
    while span_id not in seen:
        if span_id not in spans:
            return None
        seen.add(span_id)
        span = spans[span_id]
        parent_id = parents[span_id]
        if not parent_id:
            return span_id, tuple(reversed(path))
        if span.kind in HOP_KINDS:
            path.append((span.service, span.name))
        span_id = parent_id
    return None


def read_traces(trace_ids: Iterable[str]) -> dict[str, dict[str, HopSpan]]:
    """The stored spans of the traces, by trace id and span id, as ``trace_hops`` reads them."""
    by_trace: dict[str, dict[str, HopSpan]] = defaultdict(dict)
    rows = Span.objects.filter(trace_id__in=set(trace_ids)).values_list(*HOP_FIELDS)
    for trace_id, span_id, parent_id, kind, service, instance_id, name, duration_us, error in rows:
        by_trace[trace_id][span_id] = HopSpan(
            parent_id, kind, service, str(instance_id or ""), name, duration_us, error
        )
    return by_trace


@transaction.atomic
def settle_route_hops(grace_seconds: float, limit: int = 5000) -> int:
    """Counts the hops of the traces whose root started more than ``grace_seconds`` ago into the route
    hop rollups, and deletes the spans of those that SPAN_KEEP_RATIO drops. The one write path of hop
    rollups: one batch of at most ``limit`` pending spans, the oldest first, in one transaction.
    Returns how many it settled.

    The claim is a row lock taken with SKIP LOCKED, then the flag cleared under it: a run skips what a
    concurrent run holds, and once that run commits the flag is false, so each root is counted by
    exactly one run. A span below a root still pending waits for its root, so that its trace is
    counted with it before it can go.
    """
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    due = list(
        Span.objects.select_for_update(skip_locked=True)
        .filter(hops_pending=True, started_at__lt=cutoff)
        .order_by("started_at")
        .values_list("pk", "trace_id", "parent_id", "paired", "exemplar")[:limit]
    )
    if not due:
        return 0
    roots = {pk: trace_id for pk, trace_id, parent_id, *_ in due if not parent_id}
    below = {trace_id for _, trace_id, parent_id, *_ in due if parent_id} - set(roots.values())
    uncounted = set(
        Span.objects.filter(trace_id__in=below, parent_id="", hops_pending=True).values_list("trace_id", flat=True)
    )
    claimed = [row for row in due if not (row[2] and row[1] in uncounted)]
    Span.objects.filter(pk__in=[row[0] for row in claimed], hops_pending=True).update(hops_pending=False)
    batch = RollupBatch()
    _count_hops(roots, batch)
    batch.save()
    ratio = keep_ratio()
    if ratio < 1:
        # A span that waits for its partner stays for pairing, which deletes it once paired.
        dropped = [
            pk
            for pk, trace_id, _, paired, exemplar in claimed
            if paired and not exemplar and not keeps_trace(trace_id, ratio)
        ]
        if dropped:
            Span.objects.filter(pk__in=dropped).delete()
            # The live route list reads rollups, none of which changed; a route page's trace lists did.
            announce_on_commit(ROUTES, rows=ChangedRows())
    return len(claimed)


def _count_hops(roots: Mapping[int, str], batch: RollupBatch) -> None:
    """Adds the hops below the claimed ``roots`` (span pk -> trace id) to ``batch``, each in the minute
    its root started, under its root's route."""
    if not roots:
        return
    routes = {
        (trace_id, span_id): (service_id, name, int(started_at.timestamp() * 1_000_000))
        for trace_id, span_id, service_id, name, started_at in Span.objects.filter(pk__in=roots).values_list(
            "trace_id", "span_id", "service_id", "name", "started_at"
        )
    }
    for trace_id, spans in read_traces(roots.values()).items():
        for root_id, hops in trace_hops(trace_id, spans).items():
            route = routes.get((trace_id, root_id))
            if route is None:
                continue  # another root of the trace, counted when it was claimed
            service_id, operation, start_us = route
            for hop in hops:
                batch.add_hop(start_us, service_id, operation, path_text(hop.path), hop.duration_us / 1000, hop.error)
