"""The entry routes of a window: root spans by service and operation, what the routes page lists.

``routes_view`` is the live view: each route with its ``count`` in the window and the view's
``covered_seconds`` (rates are count / covered_seconds), so a route's record changes with its traffic
only. ``routes`` is the API's list, with ``rps``. Both build their records with ``route_record``, as
``topology.live_routes`` does.
"""

import json
from typing import Any

from django.db.models import Count, Sum

from topology.json_list import JSONList
from topology.latency import LatencyHistogram
from topology.models import Service
from topology.models.rollups import RouteRollup
from topology.sliding_sums import RollupSums
from topology.window import Window

ROUTE_KEY_FIELDS = ("service_id", "operation")


def route_id(service: str, operation: str) -> str:
    # NUL separates the parts: PostgreSQL refuses it in text, and no tracer writes it in a name.
    return f"{service}\0{operation}"


def route_record(service: str, operation: str, sums: RollupSums) -> dict[str, Any]:
    return {
        "id": route_id(service, operation),
        "service": service,
        "operation": operation,
        "count": sums.count,
        "error_rate": round(sums.errors / sums.count, 4) if sums.count else 0.0,
        **sums.histogram.percentiles_ms(),
    }


def route_sums(window: Window) -> dict[tuple[Any, ...], RollupSums]:
    """Each route's sums over the window, read whole: ``{(service id, operation): RollupSums}``. One
    aggregate, apart from ``sliding_sums``, which the live routes are checked against."""
    rows = (
        RouteRollup.objects.filter(**window.minutes())
        .values_list(*ROUTE_KEY_FIELDS)
        .annotate(Count("id"), Sum("count"), Sum("errors"), JSONList("latency_buckets"))
        .order_by()
    )
    return {
        (service_id, operation): RollupSums(
            rows_summed, count, errors, 0, LatencyHistogram().merge_all(json.loads(histograms))
        )
        for service_id, operation, rows_summed, count, errors, histograms in rows
    }


def routes_view(window: Window) -> dict[str, Any]:
    sums = route_sums(window)
    names = dict(Service.objects.filter(id__in={key[0] for key in sums}).values_list("id", "name"))
    records = [
        route_record(names[service_id], operation, total)
        for (service_id, operation), total in sums.items()
        if service_id in names
    ]
    return {"covered_seconds": window.covered_seconds, "routes": sorted(records, key=lambda record: record["id"])}


def routes(window: Window) -> list[dict[str, Any]]:
    """The API's list: the busiest first, each with its rate."""
    listed = [
        {**{name: value for name, value in record.items() if name != "id"}, "rps": window.per_second(record["count"])}
        for record in routes_view(window)["routes"]
    ]
    return sorted(listed, key=lambda route: -route["count"])
