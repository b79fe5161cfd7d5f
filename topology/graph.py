"""The service graph over a window: what /api/topology/ returns and the topology page draws.

``topology_view`` is the live view: each node and edge carries its ``count`` of calls in the window
and the view its ``covered_seconds``, so a record changes only when its traffic does, not each time
the window's length steps (every RATE_STEP_SECONDS, which would resend every record). The API's
``topology_snapshot`` adds each record's ``rps``. The records are made by ``node_record`` and
``edge_record``, which ``topology.live_topology`` calls too: the incremental and the full reading
build the same records from the same sums.
"""

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from topology.edge_totals import EdgeKey, edge_totals
from topology.models import Instance, InstanceRollup, Service, SourceStatus
from topology.models.services import Health
from topology.models.sources import HealthFreshness
from topology.sliding_sums import RollupSums
from topology.window import Window

# Keyed by str: instances' health is read from the database as plain text.
HEALTH_ORDER: dict[str, int] = {Health.CRITICAL: 3, Health.WARNING: 2, Health.PASSING: 1, Health.UNKNOWN: 0}


@dataclass(frozen=True, slots=True)
class ServiceFacts:
    """What a node shows of its service apart from traffic: the registry's and Consul's part."""

    name: str
    source: str
    tags: Any
    balancing_policy: str
    health: str
    health_stale: bool
    instances: int
    shown_always: bool  # registered in Consul: drawn even without traffic


def service_facts(service_ids: Collection[int] | None, freshness: HealthFreshness) -> dict[int, ServiceFacts]:
    """The facts of ``service_ids`` (None: of every service registered in Consul, and those ids)."""
    if service_ids is None:
        services = Service.objects.filter(in_consul=True, deregistered_at__isnull=True)
    else:
        services = Service.objects.filter(id__in=service_ids)
    rows = list(
        services.values_list("id", "name", "in_consul", "in_traces", "tags", "balancing_policy", "deregistered_at")
    )
    # Only what a node shows of its live instances: whole Instance rows (meta, checks) cost more than the graph.
    live: defaultdict[int, list[tuple[str, bool]]] = defaultdict(list)
    stale: set[int] = set()
    for service_id, health, in_consul, datacenter in (
        Instance.objects.registered()
        .filter(service_id__in=[row[0] for row in rows])
        .values_list("service_id", "health", "in_consul", "datacenter")
    ):
        live[service_id].append((freshness.shown(health, in_consul, datacenter), in_consul))
        if freshness.is_stale(in_consul, datacenter):
            stale.add(service_id)
    facts = {}
    for service_id, name, in_consul, in_traces, tags, policy, deregistered_at in rows:
        source = "both" if in_consul and in_traces else "consul" if in_consul else "traces"
        instances = live[service_id]
        facts[service_id] = ServiceFacts(
            name=name,
            source=source,
            tags=tags,
            balancing_policy=policy,
            health=_worst_health(instances),
            health_stale=service_id in stale,
            instances=len(instances),
            shown_always=in_consul and deregistered_at is None,
        )
    return facts


def node_record(facts: ServiceFacts, count: int, errors: int) -> dict[str, Any]:
    return {
        "id": facts.name,
        "name": facts.name,
        "count": count,
        "error_rate": round(errors / count, 4) if count else 0.0,
        "health": facts.health,
        "health_stale": facts.health_stale,
        "source": facts.source,
        "instances": facts.instances,
        "tags": facts.tags,
        "balancing_policy": facts.balancing_policy,
    }


def edge_record(key: EdgeKey, sums: RollupSums, names: dict[int, str]) -> dict[str, Any]:
    source, target, protocol, topic = key
    count, errors = sums.count, sums.errors
    return {
        "id": f"{names[source]}->{names[target]}/{protocol}/{topic}",
        "source": names[source],
        "target": names[target],
        "protocol": protocol,
        "sync": "async" if topic else "sync",
        "topic": topic,
        "count": count,
        "error_rate": round(errors / count, 4) if count else 0.0,
        **sums.histogram.percentiles_ms(),
        "negative_delays": sums.negative_delays,
    }


def view_header(window: Window) -> dict[str, Any]:
    """The view's fields apart from its records: what the window covers, and the sources' state."""
    return {
        "window": window.seconds,
        "until": window.until,
        "covered_seconds": window.covered_seconds,
        "generated_at": timezone.now(),
        "sources": [status.as_dict() for status in SourceStatus.objects.all()],
    }


def topology_view(window: Window) -> dict[str, Any]:
    """The whole graph of ``window``, read from the rollups: records with counts (module doc)."""
    edges = edge_totals(window)
    served: dict[int, tuple[int, int]] = {
        service_id: (count, errors)
        for service_id, count, errors in InstanceRollup.objects.filter(**window.minutes())
        .values_list("instance__service_id")
        .annotate(Sum("count"), Sum("errors"))
        .order_by()
    }
    incoming: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0])
    for (_source, target, _protocol, _topic), sums in edges.items():
        incoming[target][0] += sums.count
        incoming[target][1] += sums.errors
    ids = {key[0] for key in edges} | {key[1] for key in edges} | served.keys()
    freshness = HealthFreshness.now()
    facts = service_facts(None, freshness)
    facts.update(service_facts(ids - facts.keys(), freshness))
    names = {service_id: fact.name for service_id, fact in facts.items()}
    nodes = [
        node_record(fact, *(served[service_id] if service_id in served else incoming[service_id]))
        for service_id, fact in facts.items()
        if service_id in ids or fact.shown_always
    ]
    # An edge whose service was deleted (in the admin) between the two reads goes with it.
    records = [edge_record(key, sums, names) for key, sums in edges.items() if key[0] in names and key[1] in names]
    return {
        **view_header(window),
        "nodes": sorted(nodes, key=lambda node: node["name"]),
        "edges": sorted(records, key=lambda edge: edge["id"]),
    }


def with_rates(view: dict[str, Any], window: Window) -> dict[str, Any]:
    """The view as the API gives it: each node and edge with its ``rps`` as well."""
    for record in (*view["nodes"], *view["edges"]):
        record["rps"] = window.per_second(record["count"])
    return view


def topology_snapshot(window: Window) -> dict[str, Any]:
    return with_rates(topology_view(window), window)


def _worst_health(instances: Iterable[tuple[str, bool]]) -> str:
    """The worst health Consul gives a live instance; ``instances`` are (health, in_consul) pairs."""
    in_consul = [health for health, registered in instances if registered]
    return max(in_consul, key=HEALTH_ORDER.__getitem__, default=Health.UNKNOWN)
