"""Traces and entry routes: the list of traces, one trace as a tree, and a route's aggregated call tree."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, QuerySet, Subquery

from topology.latency import LatencyHistogram
from topology.models import RouteHopRollup, Span
from topology.route_hops import HopPath, parse_path, read_traces, trace_hops
from topology.shared_spans import Placement, is_shared_server, tree_parents
from topology.window import Window

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _TraceFigures(TypedDict):
    """What trace_list annotates a root span with."""

    has_error: bool
    span_count: int


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TRACES = 500


def trace_list(
    service: str = "",
    operation: str = "",
    min_duration_ms: float | None = None,
    error: bool | None = None,
    limit: int = 50,
    since: datetime | None = None,
    slowest: bool = False,
    until: datetime | None = None,
    having: QuerySet[Span] | None = None,
) -> list[dict[str, Any]]:
    """Traces by their root span, the most recent first, or the slowest first. ``service``, ``operation``
    and ``min_duration_ms`` are the root's, ``since`` and ``until`` bound its start; ``having`` keeps the
    traces with a span among those (a search's matching spans)."""
    roots = Span.objects.filter(parent_id="").select_related("service")
    if service:
        roots = roots.filter(service__name=service)
    if operation:
        roots = roots.filter(name=operation)
    if min_duration_ms is not None:
        roots = roots.filter(duration_us__gte=int(min_duration_ms * 1000))
    if since is not None:
        roots = roots.filter(started_at__gte=since)
    if until is not None:
        roots = roots.filter(started_at__lte=until)
    if having is not None:
        roots = roots.filter(trace_id__in=having.values("trace_id"))
    in_trace = Span.objects.filter(trace_id=OuterRef("trace_id"))
    roots = roots.annotate(
        has_error=Exists(in_trace.filter(error=True)),
        span_count=Subquery(in_trace.order_by().values("trace_id").annotate(n=Count("id")).values("n")[:1]),
    )
    if error is not None:
        roots = roots.filter(has_error=error)
    order = ("-duration_us", "-started_at") if slowest else ("-started_at",)
    return [_trace_summary(root) for root in roots.order_by(*order)[: min(limit, MAX_TRACES)]]


def _trace_summary(root: "WithAnnotations[Span, _TraceFigures]") -> dict[str, Any]:
    return {
        "trace_id": root.trace_id,
        "root_service": root.service.name,
        "root_operation": root.name,
        "started_at": root.started_at,
        "duration_ms": root.duration_ms,
        "span_count": root.span_count,
        "error": root.has_error,
    }


def trace_tree(trace_id: str) -> dict[str, Any] | None:
    """The spans of one trace nested under their parents, as the waterfall draws them; None for an
    unknown trace.

    The tree is the corrected one: a span made by the server half of a Zipkin shared span is under
    that half (``tree_parents``), a server span whose clock disagrees with its client's is shifted into
    the client's interval for display (``clock_skew_ms`` says by how much), and ``critical`` marks the
    critical path through it. Orphans, whose parent never came, are roots. Nothing stored changes.
    """
    spans = list(Span.objects.filter(trace_id=trace_id).select_related("service", "instance").order_by("started_at"))
    if not spans:
        return None
    placements = {
        span.span_id: Placement(
            span.parent_id, span.kind, span.service.name, span.instance.identity if span.instance else ""
        )
        for span in spans
    }
    parents = tree_parents(trace_id, placements)
    nodes: dict[str, dict[str, Any]] = {}
    for span in spans:
        placement = placements[span.span_id]
        nodes[span.span_id] = {
            "span_id": span.span_id,
            "parent_id": parents[span.span_id],
            "service": placement.service,
            "instance": placement.instance,
            "kind": span.kind,
            "name": span.name,
            "protocol": span.protocol,
            "started_at": span.started_at,
            "duration_ms": span.duration_ms,
            "error": span.error,
            "status_code": span.status_code,
            "attributes": span.attributes,
            # The server half of a shared span: Zipkin knows it by its client's id, its parent here.
            "shared": is_shared_server(trace_id, span.span_id, span.parent_id, span.kind),
            "_start_us": (span.started_at - EPOCH) // timedelta(microseconds=1),
            "_duration_us": span.duration_us,
            "children": [],
        }
    roots: list[dict[str, Any]] = []
    for node in nodes.values():
        parent = nodes.get(node["parent_id"])
        (parent["children"] if parent else roots).append(node)
    _correct_clock_skew(roots)
    critical = _critical_path(max(roots, key=lambda root: root["_duration_us"])) if roots else set()
    # A span on a cycle of parents is on no root's tree and gets no skew: it is not drawn anyway.
    origin = min(node["_start_us"] + node.get("_skew_us", 0) for node in nodes.values())
    for node in nodes.values():
        skew_us = node.pop("_skew_us", 0)
        node["start_offset_ms"] = (node.pop("_start_us") + skew_us - origin) / 1000
        node["clock_skew_ms"] = skew_us / 1000
        node["critical"] = node["span_id"] in critical
        del node["_duration_us"]
    return {"trace_id": trace_id, "span_count": len(spans), "spans": roots}


def _correct_clock_skew(roots: list[dict[str, Any]]) -> None:
    """Sets each node's ``_skew_us``: how far its start is shifted for display, as Zipkin's and
    Jaeger's UIs correct clock skew.

    A SERVER span on another host (service and instance) than its CLIENT parent is on another clock.
    When it does not fit in its client's interval, it is moved so that it starts after the client by
    half the time the client waited beyond the server (the network, taken as even both ways); when it
    lasted longer than its client, nothing tells where it belongs and it stays. The spans on the
    server's host under it move with it; a span on a third host keeps its own clock unless it is again
    a server under a client. Durations never change, and neither do stored spans or rollups.
    """
    stack = []
    for root in roots:
        root["_skew_us"] = 0
        stack.append(root)
    while stack:  # iterative: a trace may be deeper than Python's recursion limit
        node = stack.pop()
        for child in node["children"]:
            if (child["service"], child["instance"]) == (node["service"], node["instance"]):
                child["_skew_us"] = node["_skew_us"]
            elif child["kind"] == "server" and node["kind"] == "client":
                child["_skew_us"] = _skew_us(child, node["_start_us"] + node["_skew_us"], node["_duration_us"])
            else:
                child["_skew_us"] = 0
            stack.append(child)


def _skew_us(server: dict[str, Any], client_start_us: int, client_duration_us: int) -> int:
    """The shift that puts a server span into its client's interval (Zipkin's ClockSkew), or 0."""
    start, duration = server["_start_us"], server["_duration_us"]
    if client_start_us <= start and start + duration <= client_start_us + client_duration_us:
        return 0  # it fits: no skew to correct
    if duration > client_duration_us:
        return 0  # a server longer than its client: no shift could make it fit
    latency = (client_duration_us - duration) // 2
    return client_start_us + latency - start


def _critical_path(root: dict[str, Any]) -> set[str]:
    """The span ids on the critical path from ``root``, as Jaeger finds it: from a span's end, walk back
    through the child that finished last before the cursor, and on from that child's start. Over the
    skew-corrected times."""

    def start(node: dict[str, Any]) -> int:
        return int(node["_start_us"] + node["_skew_us"])

    def end(node: dict[str, Any]) -> int:
        return start(node) + int(node["_duration_us"])

    on_path: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        on_path.add(node["span_id"])
        cursor = end(node)
        for child in sorted(node["children"], key=end, reverse=True):
            # A child that starts after the cursor ran in parallel with one already on the path.
            if start(child) >= cursor:
                continue
            stack.append(child)
            cursor = start(child)
            if cursor <= start(node):
                break
    return on_path


def route_tree(service: str, operation: str, window: Window) -> dict[str, Any]:
    """The call tree of an entry route over every request of the window's minutes, as exact at any
    SPAN_KEEP_RATIO as the route's own count: each hop is the root or a SERVER or CONSUMER span below it,
    keyed by its path of (service, operation) from the root (``topology.route_hops``).

    The settled traces' hops come from the hop rollups; the others' from their stored spans, which are
    all still stored, kept or dropped. Both are read in one snapshot, so that a trace settled between
    the two reads is counted once, not twice or never. What the spans add is the last minute or two of
    the route's requests: at 100 requests a second and SPAN_PAIRING_GRACE_SECONDS=60, about 7,500
    traces, whatever the window. ``requests`` says how many requests the tree covers.
    """
    tree = _hop(service, operation)
    end = window.until.replace(second=0, microsecond=0) + timedelta(minutes=1)  # the end of the last minute
    with _one_snapshot():
        rollups = RouteHopRollup.objects.filter(service__name=service, operation=operation, **window.minutes())
        for path, count, errors, buckets in rollups.values_list("path", "count", "errors", "latency_buckets"):
            node = _node(tree, parse_path(path))
            node["count"] += count
            node["errors"] += errors
            node["_histogram"].merge(buckets)
        pending = set(
            Span.objects.filter(
                parent_id="",
                hops_pending=True,
                service__name=service,
                name=operation,
                started_at__gte=window.first_minute,
                started_at__lt=end,
            ).values_list("trace_id", "span_id")
        )
        for trace_id, spans in read_traces({trace_id for trace_id, _ in pending}).items():
            for root_id, hops in trace_hops(trace_id, spans).items():
                if (trace_id, root_id) not in pending:
                    continue  # another root of the trace: another route's, or settled
                for hop in hops:
                    node = _node(tree, hop.path)
                    node["count"] += 1
                    node["errors"] += bool(hop.error)
                    node["_histogram"].add(hop.duration_us / 1000)
    requests = tree["count"]
    return {
        "tree": _finish(tree),
        "requests": requests,
        "recent": trace_list(service, operation, limit=20, since=window.since),
        "slow": trace_list(service, operation, limit=10, since=window.since, slowest=True),
        "failed": trace_list(service, operation, error=True, limit=10, since=window.since),
    }


@contextmanager
def _one_snapshot() -> Iterator[None]:
    """A transaction whose reads all see one moment: PostgreSQL's REPEATABLE READ, when this is the
    outermost transaction (it must be set before the first query); SQLite's reads in a transaction see
    one moment already."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _hop(service: str, operation: str) -> dict[str, Any]:
    return {
        "service": service,
        "operation": operation,
        "count": 0,
        "errors": 0,
        "_histogram": LatencyHistogram(),
        "_children": {},
    }


def _node(tree: dict[str, Any], path: HopPath) -> dict[str, Any]:
    """The node of ``path`` below the root, made on the way as needed."""
    node = tree
    for hop_service, hop_name in path:
        node = node["_children"].setdefault((hop_service, hop_name), _hop(hop_service, hop_name))
    return node


def _finish(node: dict[str, Any]) -> dict[str, Any]:
    histogram = node.pop("_histogram")
    children = node.pop("_children")
    node.update(histogram.percentiles_ms())
    # The busiest first; ties by name, so that a tree reads the same whichever rows and spans it came from.
    ordered = sorted(children.values(), key=lambda c: (-c["count"], c["service"], c["operation"]))
    node["children"] = [_finish(child) for child in ordered]
    return node
