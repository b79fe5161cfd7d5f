"""The service graph over a window: what /api/topology/ returns and the topology page draws."""

from collections import defaultdict

from django.db.models import Sum
from django.utils import timezone

from topology.latency import LatencyHistogram
from topology.models import EdgeRollup, Instance, InstanceRollup, Service, SourceStatus
from topology.models.services import Health

HEALTH_ORDER = {Health.CRITICAL: 3, Health.WARNING: 2, Health.PASSING: 1, Health.UNKNOWN: 0}


def topology_snapshot(window):
    edges = _edges(window)
    served = {
        row["instance__service__name"]: row
        for row in InstanceRollup.objects.filter(**window.minutes())
        .values("instance__service__name")
        .annotate(count=Sum("count"), errors=Sum("errors"))
    }
    incoming = defaultdict(lambda: [0, 0])
    for edge in edges:
        incoming[edge["target"]][0] += edge["_count"]
        incoming[edge["target"]][1] += edge["_errors"]
    names = {edge["source"] for edge in edges} | {edge["target"] for edge in edges} | served.keys()
    services = (Service.objects.filter(name__in=names) | Service.objects.registered().filter(in_consul=True)).distinct()
    # Only what a node shows of its live instances: whole Instance rows (meta, checks) cost more than the graph.
    live = defaultdict(list)
    for service_id, health, in_consul in Instance.objects.registered().filter(service__in=services).values_list(
        "service_id", "health", "in_consul"
    ):
        live[service_id].append((health, in_consul))
    nodes = []
    for service in services:
        count, errors = (served[service.name]["count"], served[service.name]["errors"]) if service.name in served else incoming[service.name]
        instances = live[service.id]
        nodes.append({
            "id": service.name,
            "name": service.name,
            "rps": window.per_second(count),
            "error_rate": round(errors / count, 4) if count else 0.0,
            "health": _worst_health(instances),
            "source": service.source,
            "instances": len(instances),
            "tags": service.tags,
            "balancing_policy": service.balancing_policy,
        })  # fmt: skip
    for edge in edges:
        del edge["_count"], edge["_errors"]
    return {
        "window": window.seconds,
        "until": window.until,
        "generated_at": timezone.now(),
        "nodes": sorted(nodes, key=lambda node: node["name"]),
        "edges": edges,
        "sources": [status.as_dict() for status in SourceStatus.objects.all()],
    }


def _edges(window):
    merged = {}
    rows = EdgeRollup.objects.filter(**window.minutes()).values_list(
        "source__name", "target__name", "protocol", "topic", "count", "errors", "negative_delays", "latency_buckets"
    )
    for source, target, protocol, topic, count, errors, negative, buckets in rows:
        key = (source, target, protocol, topic)
        if key not in merged:
            merged[key] = [0, 0, 0, LatencyHistogram()]
        entry = merged[key]
        entry[0] += count
        entry[1] += errors
        entry[2] += negative
        entry[3].merge(buckets)
    edges = []
    for (source, target, protocol, topic), (count, errors, negative, histogram) in sorted(merged.items()):
        edges.append({
            "id": f"{source}->{target}/{protocol}/{topic}",
            "source": source,
            "target": target,
            "protocol": protocol,
            "sync": "async" if topic else "sync",
            "topic": topic,
            "rps": window.per_second(count),
            "error_rate": round(errors / count, 4) if count else 0.0,
            **histogram.percentiles_ms(),
            "negative_delays": negative,
            "_count": count,
            "_errors": errors,
        })  # fmt: skip
    return edges


def _worst_health(instances):
    """The worst health Consul gives a live instance; ``instances`` are (health, in_consul) pairs."""
    in_consul = [health for health, registered in instances if registered]
    return max(in_consul, key=HEALTH_ORDER.__getitem__, default=Health.UNKNOWN)
