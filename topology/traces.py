"""Traces and entry routes: the list of traces, one trace as a tree, and a route's aggregated call tree."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from django.db.models import Count, Exists, OuterRef, QuerySet, Subquery

from topology.latency import LatencyHistogram
from topology.models import Span
from topology.shared_spans import Placement, is_shared_server, tree_parents
from topology.span_keeping import keep_ratio, keeps_trace
from topology.window import Window

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

# What a route's call tree reads of a span: (parent id, kind, service, operation, duration µs, error).
SpanFields = tuple[str, str, str, str, int, bool]


class _TraceFigures(TypedDict):
    """What trace_list annotates a root span with."""

    has_error: bool
    span_count: int


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TRACES = 500
# The call tree is merged over the route's most recent traces in the window, at most this many: enough
# for "how often" and hop latencies to settle, few enough to read in one query. The page says how many.
ROUTE_TREE_SAMPLE = 1000


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
    """The call tree of an entry route, merged over its recent traces: each hop is a SERVER or CONSUMER
    span (or the root), keyed by its path of (service, operation) from the root."""
    roots = Span.objects.filter(
        parent_id="", service__name=service, name=operation, started_at__gte=window.since, started_at__lte=window.until
    )
    ratio = keep_ratio()
    # Below a keep ratio of 1, the kept traces only: whole, and as likely as any other to be kept. The
    # exemplars, kept for being slow or failed, would weigh the tree towards slow and failed calls.
    read = ROUTE_TREE_SAMPLE if ratio >= 1 else ROUTE_TREE_SAMPLE * 4
    recent = roots.order_by("-started_at").values_list("trace_id", flat=True)[:read]
    trace_ids = [trace_id for trace_id in recent if keeps_trace(trace_id, ratio)][:ROUTE_TREE_SAMPLE]
    spans = Span.objects.filter(trace_id__in=trace_ids).values_list(
        "trace_id", "span_id", "parent_id", "kind", "service__name", "instance_id", "name", "duration_us", "error"
    )
    by_trace: dict[str, dict[str, SpanFields]] = {}
    placements: dict[str, dict[str, Placement]] = {}
    for trace_id, span_id, parent_id, kind, service_name, instance_id, name, duration_us, error in spans:
        by_trace.setdefault(trace_id, {})[span_id] = (parent_id, kind, service_name, name, duration_us, error)
        placements.setdefault(trace_id, {})[span_id] = Placement(parent_id, kind, service_name, str(instance_id or ""))
    tree = _hop(service, operation)
    for trace_id, trace_spans in by_trace.items():
        # The corrected tree, as the waterfall's: a shared server's callees under the server half.
        for span_id, parent_id in tree_parents(trace_id, placements[trace_id]).items():
            if parent_id != trace_spans[span_id][0]:
                trace_spans[span_id] = (parent_id, *trace_spans[span_id][1:])
        for span_id, (parent_id, kind, _service, _name, _duration_us, error) in trace_spans.items():
            if parent_id and kind not in ("server", "consumer"):
                continue
            path = _hop_path(span_id, trace_spans)
            if path is None:
                continue
            node = tree
            for hop_service, hop_name in path[1:]:
                node = node["_children"].setdefault((hop_service, hop_name), _hop(hop_service, hop_name))
            node["count"] += 1
            node["errors"] += bool(error)
            node["_histogram"].add(duration_us / 1000)
    return {
        "tree": _finish(tree),
        "sampled_traces": len(trace_ids),
        "recent": trace_list(service, operation, limit=20, since=window.since),
        "slow": trace_list(service, operation, limit=10, since=window.since, slowest=True),
        "failed": trace_list(service, operation, error=True, limit=10, since=window.since),
    }


def _hop(service: str, operation: str) -> dict[str, Any]:
    return {
        "service": service,
        "operation": operation,
        "count": 0,
        "errors": 0,
        "_histogram": LatencyHistogram(),
        "_children": {},
    }


def _hop_path(span_id: str, spans: Mapping[str, SpanFields]) -> list[tuple[str, str]] | None:
    """(service, operation) of each hop from the root down to this span, skipping client/internal spans;
    None when a parent on the way never arrived."""
    path: list[tuple[str, str]] = []
    seen: set[str] = set()
    while span_id not in seen:
        if span_id not in spans:
            return None
        seen.add(span_id)
        parent_id, kind, service, name, _, _ = spans[span_id]
        if not parent_id or kind in ("server", "consumer"):
            path.append((service, name))
        if not parent_id:
            return list(reversed(path))
        span_id = parent_id
    return None


def _finish(node: dict[str, Any]) -> dict[str, Any]:
    histogram = node.pop("_histogram")
    children = node.pop("_children")
    node.update(histogram.percentiles_ms())
    node["children"] = [_finish(child) for child in sorted(children.values(), key=lambda c: -c["count"])]
    return node
