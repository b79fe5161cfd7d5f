"""The service graph over a window: what /api/topology/ returns and the topology page draws."""

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone

from topology.edge_totals import edge_totals
from topology.models import Instance, InstanceRollup, Service, SourceStatus
from topology.models.services import Health
from topology.models.sources import HealthFreshness
from topology.window import Window

# Keyed by str: instances' health is read from the database as plain text.
HEALTH_ORDER: dict[str, int] = {Health.CRITICAL: 3, Health.WARNING: 2, Health.PASSING: 1, Health.UNKNOWN: 0}


def topology_snapshot(window: Window) -> dict[str, Any]:
    edges = _edges(window)
    served = {
        row["instance__service_id"]: row
        for row in InstanceRollup.objects.filter(**window.minutes())
        .values("instance__service_id")
        .annotate(count=Sum("count"), errors=Sum("errors"))
        .order_by()
    }
    incoming: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
    for edge in edges:
        incoming[edge["target"]][0] += edge["_count"]
        incoming[edge["target"]][1] += edge["_errors"]
    ids = {edge["source"] for edge in edges} | {edge["target"] for edge in edges} | served.keys()
    services = list(
        Service.objects.filter(Q(id__in=ids) | Q(in_consul=True, deregistered_at__isnull=True)).only(
            "name", "in_consul", "in_traces", "tags", "balancing_policy"
        )
    )
    # Only what a node shows of its live instances: whole Instance rows (meta, checks) cost more than the graph.
    freshness = HealthFreshness.now()
    live: defaultdict[int, list[tuple[str, bool]]] = defaultdict(list)
    stale: set[int] = set()
    for service_id, health, in_consul, datacenter in (
        Instance.objects.registered()
        .filter(service__in=services)
        .values_list("service_id", "health", "in_consul", "datacenter")
    ):
        live[service_id].append((freshness.shown(health, in_consul, datacenter), in_consul))
        if freshness.is_stale(in_consul, datacenter):
            stale.add(service_id)
    nodes = []
    names: dict[int, str] = {}
    for service in services:
        names[service.id] = service.name
        count, errors = (
            (served[service.id]["count"], served[service.id]["errors"])
            if service.id in served
            else incoming[service.id]
        )
        instances = live[service.id]
        nodes.append(
            {
                "id": service.name,
                "name": service.name,
                "rps": window.per_second(count),
                "error_rate": round(errors / count, 4) if count else 0.0,
                "health": _worst_health(instances),
                "health_stale": service.id in stale,
                "source": service.source,
                "instances": len(instances),
                "tags": service.tags,
                "balancing_policy": service.balancing_policy,
            }
        )
    # An edge whose service was deleted (in the admin) between the two reads goes with it.
    edges = [edge for edge in edges if edge["source"] in names and edge["target"] in names]
    for edge in edges:
        del edge["_count"], edge["_errors"]
        edge["source"], edge["target"] = names[edge["source"]], names[edge["target"]]
        edge["id"] = f"{edge['source']}->{edge['target']}/{edge['protocol']}/{edge['topic']}"
    return {
        "window": window.seconds,
        "until": window.until,
        "generated_at": timezone.now(),
        "nodes": sorted(nodes, key=lambda node: node["name"]),
        "edges": sorted(edges, key=lambda edge: edge["id"]),
        "sources": [status.as_dict() for status in SourceStatus.objects.all()],
    }


def _edges(window: Window) -> list[dict[str, Any]]:
    """Every edge of the window, its services by id (the caller names them)."""
    edges = []
    for (source, target, protocol, topic), total in edge_totals(window).items():
        count, errors = total.count, total.errors
        edges.append(
            {
                "source": source,
                "target": target,
                "protocol": protocol,
                "sync": "async" if topic else "sync",
                "topic": topic,
                "rps": window.per_second(count),
                "error_rate": round(errors / count, 4) if count else 0.0,
                **total.histogram.percentiles_ms(),
                "negative_delays": total.negative_delays,
                "_count": count,
                "_errors": errors,
            }
        )
    return edges


def _worst_health(instances: Iterable[tuple[str, bool]]) -> str:
    """The worst health Consul gives a live instance; ``instances`` are (health, in_consul) pairs."""
    in_consul = [health for health, registered in instances if registered]
    return max(in_consul, key=HEALTH_ORDER.__getitem__, default=Health.UNKNOWN)
