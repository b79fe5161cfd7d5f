"""Which Instance row a span's instance name means, and when two rows are one process.

Spans name an instance with what their format carries: OTLP's ``service.instance.id``, else
``host.name`` and the server's port; Zipkin's ``localEndpoint`` address and port. Consul, or an
operator (``record_instance``), records it by an ID, with its address and port. One process must be
one row, or the balancer statistics count it as two instances and call a lone instance skewed.

- **Matching.** A name matches a row by the row's identity, its Consul service ID or its
  ``address:port``. Addresses are compared as addresses: ``localhost`` is ``127.0.0.1``,
  ``::ffff:10.0.0.1`` is ``10.0.0.1``, ``[::1]`` is ``::1``.
- **Preference.** When several rows match a name, a live recorded row (Consul's or an operator's)
  wins, the newest first; then a row that only traces know; then a deregistered recorded row (a name
  that only a process that has gone carried).
- **Merging** (``unify``). Rows that name the same process become one, the live recorded row, which
  keeps the registry's identity:

  - a trace-only row whose name is one of its aliases: spans came before the registry recorded the
    instance, whichever of Consul or the spans came first;
  - a deregistered recorded row at the same address and port, in the same datacenter, that left at
    most ``RESTART_GAP`` before the new one came: the instance was registered again under another ID
    (a restart that makes a new ID). A balancer sends requests to an address, so the new registration
    carries on the old one's requests and presence in the window, and spans that still name the old
    ID count for the new one. One that left earlier was another process at a reused address (a
    Kubernetes pod's IP): it stays a deregistered instance of its own.

  A merged row that was last there (deregistered, or last served a request) more than ``RESTART_GAP``
  before the kept row appeared moves its counts but not its presence: the kept row is owed only the
  part of the window since it came.

  Two live recorded rows at one address (an old registration not yet removed) stay two, since the
  registry lists both; spans that name the address count for the newest.

  Merging moves the rollups and the spans still waiting for their partner to the kept row. The merged
  row is kept, since stored spans point at it, with ``merged_into`` set and ``deregistered_at``
  stamped: nothing counts it as an instance any more, and its names resolve to the kept row.

Merging and resolving must not interleave: a span batch that resolved a name to a row which a merge
then retires would add its requests to the retired row, and a registration planned while a span batch
stores a trace-only row of the same process would not see that row. On PostgreSQL every span write
holds a shared advisory lock for its transaction, and every Consul reconcile batch and operator record
an exclusive one (``hold_identity_lock``); SQLite lets one writer at a time anyway.
"""

import ipaddress
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce, Least
from django.utils import timezone

from topology.changes import REGISTRY_VIEWS, TRAFFIC_VIEWS, announce_on_commit
from topology.models import Instance, Service, Span
from topology.rollup_batch import RollupBatch

# pg_advisory_xact_lock's key for instance identities: "mesh" "iden" as two 32-bit words.
IDENTITY_LOCK_KEY = 0x6D657368_6964656E
# How long an instance may be gone before one at its address is another process rather than it, restarted
# (under a new ID, or before the registry recorded it).
RESTART_GAP = timedelta(minutes=5)
LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
# What resolving and merging read of an Instance row.
IDENTITY_FIELDS = (
    "id",
    "service_id",
    "identity",
    "consul_id",
    "address",
    "port",
    "datacenter",
    "in_consul",
    "recorded_by_operator",
    "first_seen",
    "deregistered_at",
    "merged_into_id",
)


def hold_identity_lock(exclusive: bool) -> None:
    """Takes the identity lock until the current transaction ends: shared to resolve names (span
    writes), exclusive to create or merge recorded rows."""
    if connection.vendor != "postgresql":
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s)", [IDENTITY_LOCK_KEY])


def canonical_host(host: str) -> str:
    """The address as one spelling: loopback names as 127.0.0.1, IPv6 compressed and unbracketed,
    IPv4-mapped IPv6 as IPv4. A host name other than localhost is left as it is."""
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return address.compressed


def canonical(name: str) -> str:
    """A span's instance name, or a row's alias, with its address in canonical form when it is
    ``host:port``; any other name as it is."""
    host, colon, port = name.rpartition(":")
    if not colon or not host or not port.isdigit():
        return name
    return f"{canonical_host(host)}:{int(port)}"


def names_of(instance: Instance) -> set[str]:
    """The canonical names that spans may give the instance."""
    return {canonical(alias) for alias in instance.aliases()}


def _endpoint(instance: Instance) -> str:
    return canonical(instance.host_port) if instance.host_port else ""


def _is_live_record(instance: Instance) -> bool:
    return instance.merged_into_id is None and instance.in_registry and instance.deregistered_at is None


def preference(instance: Instance) -> tuple[int, float, int]:
    """Sorts the rows that match one name, the one that the name means first."""
    if instance.in_registry and instance.deregistered_at is None:
        tier = 0
    elif not instance.in_registry:
        tier = 1
    else:
        tier = 2
    return tier, -instance.first_seen.timestamp(), -(instance.pk or 0)


def _restarted_as(old: Instance, new: Instance) -> bool:
    """Whether a deregistered registration left shortly before (or as) the new one at its address came:
    a restart under a new ID, rather than an address reused by a later process."""
    return old.deregistered_at is not None and old.deregistered_at >= new.first_seen - RESTART_GAP


def resolve_names(rows: Sequence[Instance]) -> dict[str, int]:
    """{canonical name: id of the row it counts for}, over all the rows of one service. A merged row's
    names count for the row it was merged into."""
    by_id = {row.pk: row for row in rows}
    best: dict[str, Instance] = {}
    for row in rows:
        target = by_id.get(row.merged_into_id, row) if row.merged_into_id is not None else row
        for name in names_of(row):
            current = best.get(name)
            if current is None or preference(target) < preference(current):
                best[name] = target
    return {name: row.pk for name, row in best.items()}


def unify(rows: Sequence[Instance]) -> list[tuple[Instance, list[Instance]]]:
    """The merges that make one row of each process among one service's rows: (kept, merged rows).
    Rows may be new (not saved yet)."""
    if all(row.merged_into_id is not None or _is_live_record(row) for row in rows):
        return []  # nothing to merge: the steady state, and every first sync
    by_name: dict[str, Instance] = {}
    by_endpoint: dict[tuple[str, str], Instance] = {}
    for kept in sorted((row for row in rows if _is_live_record(row)), key=preference):
        for name in names_of(kept):
            by_name.setdefault(name, kept)
        if endpoint := _endpoint(kept):
            by_endpoint.setdefault((kept.datacenter, endpoint), kept)
    groups: dict[int, tuple[Instance, list[Instance]]] = {}
    for row in rows:
        if row.merged_into_id is not None or _is_live_record(row):
            continue
        if not row.in_registry:
            target = by_name.get(canonical(row.identity))
        else:
            endpoint = _endpoint(row)
            target = by_endpoint.get((row.datacenter, endpoint)) if endpoint else None
            if target is not None and not _restarted_as(row, target):
                target = None
        if target is not None:
            groups.setdefault(id(target), (target, []))[1].append(row)
    return list(groups.values())


def absorb(kept: Instance, merged: Iterable[Instance], now: datetime) -> None:
    """Makes ``merged`` rows part of ``kept``: call inside the transaction that holds the exclusive
    identity lock. ``kept`` must be saved."""
    merged = list(merged)
    ids = [row.pk for row in merged]
    batch = RollupBatch()
    last_served = batch.move_instance_rollups(ids, kept.pk)
    batch.save()
    # Spans still waiting for their partner count for the kept row when they pair. Paired spans keep
    # naming the merged row: their requests are counted already, and traces show the name they sent.
    Span.objects.filter(paired=False, instance_id__in=ids).update(instance_id=kept.pk)
    Instance.objects.filter(merged_into_id__in=ids).update(merged_into_id=kept.pk)
    Instance.objects.filter(pk__in=ids).update(
        merged_into_id=kept.pk, deregistered_at=Coalesce(F("deregistered_at"), now)
    )
    # The kept row was there as long as a merged row that was there until shortly before it came: the
    # balancer owes it that part of the window. A row last seen long before is an earlier process at a
    # reused address, and owes the kept row no presence.
    contiguous = [
        row.first_seen
        for row in merged
        if (until := row.deregistered_at or last_served.get(row.pk)) is not None
        and until >= kept.first_seen - RESTART_GAP
    ]
    if contiguous:
        Instance.objects.filter(pk=kept.pk).update(first_seen=Least(F("first_seen"), min(contiguous)))
    if any(row.in_traces for row in merged):
        Instance.objects.filter(pk=kept.pk).update(in_traces=True)


def unify_service(service: Service, now: datetime) -> bool:
    """Merges the rows of one service that name the same process; True if any were. Inside the
    transaction that holds the exclusive identity lock."""
    rows = list(Instance.objects.filter(service=service).only(*IDENTITY_FIELDS, "in_traces"))
    merges = unify(rows)
    for kept, merged in merges:
        absorb(kept, merged, now)
    return bool(merges)


@transaction.atomic
def record_instance(
    service: str,
    identity: str,
    address: str = "",
    port: int | None = None,
    weight_passing: int = 1,
    weight_warning: int = 1,
    in_maintenance: bool = False,
) -> Instance:
    """An operator's record of an instance that no Consul lists: its name, the address and port it
    serves on, its weights, and whether it is in maintenance. Rows that spans made for the same process
    become this one. The one write path of such records."""
    hold_identity_lock(exclusive=True)
    now = timezone.now()
    row, _ = Service.objects.get_or_create(name=service, defaults={"first_seen": now, "last_seen": now})
    recorded = {
        "address": address,
        "port": port,
        "weight_passing": weight_passing,
        "weight_warning": weight_warning,
        "in_maintenance": in_maintenance,
        "recorded_by_operator": True,
    }
    instance, _ = Instance.objects.update_or_create(
        service=row,
        identity=identity,
        defaults={**recorded, "deregistered_at": None, "merged_into": None},
        create_defaults={**recorded, "first_seen": now, "last_seen": now},
    )
    unify_service(row, now)
    announce_on_commit(*REGISTRY_VIEWS, *TRAFFIC_VIEWS)
    instance.refresh_from_db()
    return instance
