"""What the topology page's side panels show: one service, one edge.

``service_detail``: a service's instances (health, weights, share of the traffic), top operations,
callers and callees over a window. ``edge_detail``: an edge's rate, errors and latency per minute
and sample traces. Both read the per-minute rollups and, for operations and samples, the spans.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum

from topology.latency import LatencyHistogram
from topology.models import EdgeRollup, Instance, InstanceRollup, Service, Span
from topology.models.sources import HealthFreshness
from topology.window import Window

TOP_OPERATIONS = 10
SAMPLE_TRACES = 10


def _minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _rollup_stats(rows: Iterable[Mapping[str, Any]], window_seconds: float) -> dict[str, Any]:
    count = errors = 0
    histogram = LatencyHistogram()
    for row in rows:
        count += row["count"]
        errors += row["errors"]
        histogram.merge(row["latency_buckets"] or {})
    return {
        "count": count,
        "errors": errors,
        "rps": round(count / window_seconds, 3),
        "error_rate": round(errors / count, 4) if count else 0.0,
        **histogram.percentiles_ms(),
    }


def service_detail(name: str, window: Window) -> dict[str, Any] | None:
    """The side panel of one node, or None when the service is unknown."""
    service = Service.objects.filter(name=name).first()
    if service is None:
        return None
    start, until = window.since, window.until
    first_minute = _minute_floor(start)

    instances = list(Instance.objects.filter(service=service, deregistered_at__isnull=True).order_by("identity"))
    served: defaultdict[int, int] = defaultdict(int)
    served_errors: defaultdict[int, int] = defaultdict(int)
    for row in (
        InstanceRollup.objects.filter(instance__service=service, minute__gte=first_minute, minute__lte=until)
        .values("instance_id")
        .annotate(count=Sum("count"), errors=Sum("errors"))
    ):
        served[row["instance_id"]] = row["count"] or 0
        served_errors[row["instance_id"]] = row["errors"] or 0
    total_served = sum(served.values())
    freshness = HealthFreshness.now()
    instance_rows = []
    for instance in instances:
        weight = instance.weight_warning if instance.health == "warning" else instance.weight_passing
        stale = freshness.is_stale(instance.in_consul, instance.datacenter)
        instance_rows.append(
            {
                "identity": instance.identity,
                "address": instance.host_port,
                "node": instance.node,
                # Maintenance is a check like the others: as out of date as the health when Consul is.
                "health": "unknown" if stale else "maintenance" if instance.in_maintenance else instance.health,
                "health_stale": stale,
                "weight": weight,
                "weight_passing": instance.weight_passing,
                "weight_warning": instance.weight_warning,
                "requests": served[instance.id],
                "errors": served_errors[instance.id],
                "share": round(served[instance.id] / total_served, 4) if total_served else None,
            }
        )

    operations = _top_operations(service, start, until)

    edges = EdgeRollup.objects.filter(minute__gte=first_minute, minute__lte=until)
    callers = _neighbours(edges.filter(target=service), "source__name", window.seconds)
    callees = _neighbours(edges.filter(source=service), "target__name", window.seconds)

    return {
        "name": service.name,
        "source": service.source,
        "datacenter": service.datacenter,
        "tags": service.tags,
        "balancing_policy": service.balancing_policy or "",
        "first_seen": service.first_seen,
        "last_seen": service.last_seen,
        "admin_url": admin_url(service.pk),
        "window": window.seconds,
        "until": until,
        "instances": instance_rows,
        "operations": operations,
        "callers": callers,
        "callees": callees,
    }


def _top_operations(service: Service, start: datetime, until: datetime) -> list[dict[str, Any]]:
    spans = Span.objects.filter(
        service=service, started_at__gte=start, started_at__lte=until, kind__in=("server", "consumer")
    )
    top = spans.values("name", "kind").annotate(count=Count("id"), errors=Count("id", filter=Q(error=True)))
    window_seconds = max((until - start).total_seconds(), 1)
    operations = []
    for row in top.order_by("-count", "name")[:TOP_OPERATIONS]:
        histogram = LatencyHistogram()
        durations = spans.filter(name=row["name"], kind=row["kind"]).values_list("duration_us", flat=True)[:5000]
        for duration in durations:
            histogram.add(duration / 1000)
        operations.append(
            {
                **row,
                "rps": round(row["count"] / window_seconds, 3),
                "error_rate": round(row["errors"] / row["count"], 4) if row["count"] else 0.0,
                **histogram.percentiles_ms(),
            }
        )
    return operations


def _neighbours(queryset: QuerySet[EdgeRollup], name_field: str, window_seconds: float) -> list[dict[str, Any]]:
    grouped: defaultdict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in queryset.values(name_field, "protocol", "topic", "count", "errors", "latency_buckets"):
        grouped[(row[name_field], row["protocol"], row["topic"])].append(row)
    result = []
    for (name, protocol, topic), rows in grouped.items():
        result.append(
            {
                "service": name,
                "protocol": protocol,
                "topic": topic,
                "sync": "async" if topic else "sync",
                **_rollup_stats(rows, window_seconds),
            }
        )
    result.sort(key=lambda item: (-item["count"], item["service"]))
    return result


def edge_detail(source: str, target: str, window: Window, protocol: str = "", topic: str = "") -> dict[str, Any] | None:
    """Rate, errors and p95 per minute of one edge, and sample traces through it; None if unknown."""
    services = dict(Service.objects.filter(name__in=[source, target]).values_list("name", "id"))
    if source not in services or target not in services:
        return None
    start, until = window.since, window.until
    rollups = EdgeRollup.objects.filter(
        source_id=services[source],
        target_id=services[target],
        minute__gte=_minute_floor(start),
        minute__lte=until,
    )
    if protocol:
        rollups = rollups.filter(protocol=protocol)
    rollups = rollups.filter(topic=topic or "")
    per_minute: defaultdict[datetime, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rollups.values("minute", "count", "errors", "latency_buckets"):
        per_minute[row["minute"]].append(row)
    series = []
    minute = _minute_floor(start)
    while minute <= until:
        stats = _rollup_stats(per_minute.get(minute, []), 60)
        series.append({"minute": minute, **stats})
        minute += timedelta(minutes=1)
    totals = _rollup_stats([row for rows in per_minute.values() for row in rows], window.seconds)
    return {
        "source": source,
        "target": target,
        "protocol": protocol,
        "topic": topic or "",
        "sync": "async" if topic else "sync",
        "window": window.seconds,
        "until": until,
        "totals": totals,
        "series": series,
        "samples": edge_samples(services[source], services[target], topic, start, until, exemplars=rollups),
    }


def edge_samples(
    source_id: int,
    target_id: int,
    topic: str,
    start: datetime,
    until: datetime,
    limit: int = SAMPLE_TRACES,
    exemplars: QuerySet[EdgeRollup] | None = None,
) -> list[dict[str, Any]]:
    """Traces in which ``source`` called ``target``: first the exemplars of the window's minutes (its
    slowest call, the latest failed one and the latest example, kept whatever SPAN_KEEP_RATIO drops),
    then recent, slow and failed ones among the stored spans."""
    child_kind = "consumer" if topic else "server"
    parents = Span.objects.filter(trace_id=OuterRef("trace_id"), span_id=OuterRef("parent_id"), service_id=source_id)
    calls = Span.objects.filter(
        service_id=target_id, kind=child_kind, started_at__gte=start, started_at__lte=until
    ).filter(Exists(parents))
    fields = ("trace_id", "span_id", "name", "started_at", "duration_us", "error")
    picked: dict[str, dict[str, Any]] = {}
    chosen = _exemplar_traces(exemplars) if exemplars is not None else {}
    for row in calls.filter(trace_id__in=chosen).values(*fields):
        picked.setdefault(row["trace_id"], {**row, "why": chosen[row["trace_id"]]})
    for label, queryset in (
        ("failed", calls.filter(error=True).order_by("-started_at")),
        ("slow", calls.order_by("-duration_us")),
        ("recent", calls.order_by("-started_at")),
    ):
        for row in queryset.values(*fields)[:limit]:
            picked.setdefault(row["trace_id"], {**row, "why": label})
    samples = [
        {
            "trace_id": row["trace_id"],
            "operation": row["name"],
            "started_at": row["started_at"],
            "duration_ms": round(row["duration_us"] / 1000, 3),
            "error": row["error"],
            "why": row["why"],
        }
        for row in picked.values()
    ]
    # The exemplars (and failed calls) first, then the most recent: a long list never pushes out the
    # slowest call.
    samples.sort(key=lambda item: (item["why"] in EXEMPLAR_LABELS, item["started_at"]), reverse=True)
    return samples[: limit * 2]


EXEMPLAR_LABELS = ("slowest", "failed", "example")


def _exemplar_traces(rollups: QuerySet[EdgeRollup]) -> dict[str, str]:
    """trace id -> why it is an exemplar: the latest failed one, the slowest over the minutes and the
    latest example. A failed trace is said to be failed first, as the failed stored calls are."""
    chosen: dict[str, str] = {}
    latest = rollups.order_by("-minute")
    failed = latest.exclude(error_trace_id="").values_list("error_trace_id", flat=True).first()
    if failed:
        chosen[failed] = "failed"
    slowest = rollups.filter(slowest_ms__isnull=False).exclude(slowest_trace_id="").order_by("-slowest_ms").first()
    if slowest is not None:
        chosen.setdefault(slowest.slowest_trace_id, "slowest")
    example = latest.exclude(example_trace_id="").values_list("example_trace_id", flat=True).first()
    if example:
        chosen.setdefault(example, "example")
    return chosen


def admin_url(pk: int) -> str:
    """The Django admin page of a service, or "" while the admin does not register services."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse("admin:topology_service_change", args=[pk])
    except NoReverseMatch:
        return ""


def services_list(query: str = "", health: str = "") -> list[dict[str, Any]]:
    """The services page: every known service with its instance health counts."""
    services = Service.objects.all().order_by("name")
    if query:
        services = services.filter(Q(name__icontains=query) | Q(tags__icontains=query))
    freshness = HealthFreshness.now()
    counts: defaultdict[int, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    stale: set[int] = set()
    for row in (
        Instance.objects.filter(deregistered_at__isnull=True, service__in=services)
        .values("service_id", "health", "in_consul", "datacenter")
        .annotate(n=Count("id"))
    ):
        counts[row["service_id"]][freshness.shown(row["health"], row["in_consul"], row["datacenter"])] += row["n"]
        if freshness.is_stale(row["in_consul"], row["datacenter"]):
            stale.add(row["service_id"])
    result = []
    for service in services:
        health_counts = dict(counts[service.id])
        overall = _overall_health(health_counts)
        if health and overall != health:
            continue
        result.append(
            {
                "id": service.pk,
                "name": service.name,
                "source": service.source,
                "datacenter": service.datacenter,
                "tags": service.tags,
                "instances": sum(health_counts.values()),
                "health_counts": health_counts,
                "health": overall,
                "health_stale": service.id in stale,
                "last_seen": service.last_seen,
                "deregistered": service.deregistered_at is not None,
                "admin_url": admin_url(service.pk),
            }
        )
    return result


def _overall_health(counts: Mapping[str, int]) -> str:
    for level in ("critical", "warning", "passing"):
        if counts.get(level):
            return level
    return "unknown"


def instance_share_series(name: str, window: Window) -> dict[str, Any] | None:
    """Each instance's share of a service's requests per minute: the balancers page's chart."""
    service = Service.objects.filter(name=name).first()
    if service is None:
        return None
    start, until = window.since, window.until
    per_minute: defaultdict[datetime, defaultdict[int, int]] = defaultdict(lambda: defaultdict(int))
    identities = dict(Instance.objects.filter(service=service).values_list("id", "identity"))
    for row in (
        InstanceRollup.objects.filter(instance__service=service, minute__gte=_minute_floor(start), minute__lte=until)
        .values("minute", "instance_id")
        .annotate(count=Sum("count"))
    ):
        per_minute[row["minute"]][row["instance_id"]] += row["count"] or 0
    seen = sorted({instance_id for counts in per_minute.values() for instance_id in counts}, key=identities.__getitem__)
    minutes = []
    minute = _minute_floor(start)
    while minute <= until:
        counts: Mapping[int, int] = per_minute.get(minute, {})
        total = sum(counts.values())
        minutes.append(
            {
                "minute": minute,
                "requests": total,
                "shares": {identities[i]: (round(counts.get(i, 0) / total, 4) if total else None) for i in seen},
            }
        )
        minute += timedelta(minutes=1)
    return {"service": service.name, "instances": [identities[i] for i in seen], "series": minutes}
