"""Turns Consul's answers into Service and Instance rows: upserts, never deletes.

An instance that leaves Consul gets ``deregistered_at``: spans and rollups still point at it. Rows that
name one process (a trace-only row for an instance that Consul now lists, an old registration at the
address of a new one) are merged as ``topology.instance_identity`` says, in the same transaction. A service
whose last Consul instance left gets ``deregistered_at`` too and keeps ``in_consul`` as history of where
it came from; both come back (``deregistered_at`` cleared) when Consul lists them again.

Everything Consul sends is untrusted: fields may be missing, of the wrong type, or huge. What does not
fit is cut to the column's size or replaced by Consul's default, never trusted as markup.
"""

import hashlib
import itertools
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any, TypedDict, TypeGuard

from django.db import connection, models, transaction

from topology.changes import REGISTRY_VIEWS, TRAFFIC_VIEWS, ChangedRows, announce_on_commit
from topology.instance_identity import absorb, hold_identity_lock, unify
from topology.models import Instance, Service
from topology.models.services import BalancingPolicy, Health

log = logging.getLogger(__name__)

# The service-registration meta key that holds a service's balancing policy (docs/consul.md).
POLICY_META_KEY = "meshscope-balancing"
# The check that maintenance mode adds (``PUT /v1/agent/service/maintenance``): its ID is this prefix and
# the service ID, its name Consul's own.
SERVICE_MAINTENANCE_CHECK_ID = "_service_maintenance:"
SERVICE_MAINTENANCE_CHECK = "Service Maintenance Mode"
BATCH_SERVICES = 500
# From this many new rows on, PostgreSQL gets them through COPY (see _create).
COPY_AT_LEAST = 200
MAX_TEXT = 255
MAX_TAG = 512
MAX_TAGS = 64
MAX_META_VALUE = 512
MAX_OUTPUT = 4096
HEALTH_ORDER: dict[str, int] = {Health.PASSING: 0, Health.UNKNOWN: 1, Health.WARNING: 2, Health.CRITICAL: 3}
MAINTENANCE_CHECKS = (SERVICE_MAINTENANCE_CHECK_ID, "_node_maintenance")
CONSUL_FIELDS = [
    "consul_id",
    "node",
    "address",
    "port",
    "datacenter",
    "tags",
    "meta",
    "weight_passing",
    "weight_warning",
    "health",
    "checks",
    "in_maintenance",
    "in_consul",
    "deregistered_at",
]
SERVICE_FIELDS = ["in_consul", "tags", "datacenter", "balancing_policy", "last_seen", "deregistered_at"]
# A JSON "\ud800" escape decodes to a lone surrogate, which is not Unicode text.
_SURROGATES = re.compile("[\ud800-\udfff]")


class CheckFields(TypedDict):
    """One check as an Instance row keeps it in ``checks``."""

    id: str
    scope: str  # "service" or "node"
    name: str
    status: str
    output: str


class InstanceFields(TypedDict):
    """The Instance fields that Consul decides (CONSUL_FIELDS), as ``parse_entry`` reads them."""

    consul_id: str
    node: str
    address: str
    port: int | None
    datacenter: str
    tags: list[str]
    meta: dict[str, str]
    weight_passing: int
    weight_warning: int
    health: str
    checks: list[CheckFields]
    in_maintenance: bool
    in_consul: bool
    deregistered_at: datetime | None


def _text(value: object, limit: int = MAX_TEXT) -> str:
    """The string cut to its column, else "". NUL, which PostgreSQL refuses in text and jsonb, is dropped, and
    a lone surrogate, which psycopg cannot encode, becomes U+FFFD: either would fail the whole batch."""
    if not isinstance(value, str):
        return ""
    if not _storable(value):
        value = _SURROGATES.sub("\ufffd", value.replace("\x00", ""))
    return value[:limit]


def _storable(value: str) -> bool:
    return "\x00" not in value and (value.isascii() or not _SURROGATES.search(value))


def is_service_name(name: object) -> TypeGuard[str]:
    """Whether a name from Consul can be a service's. A name is the service's identity: rather than cut or
    clean it into another service's, one that no column holds (empty, too long, NUL, a lone surrogate) is
    left out, and so is it from the collector's own JSON state, which PostgreSQL would refuse just the same."""
    return isinstance(name, str) and 0 < len(name) <= MAX_TEXT and _storable(name)


def _weight(weights: object, key: str) -> int:
    value = weights.get(key) if isinstance(weights, dict) else None
    return value if _is_int(value) and 0 <= value <= 2**31 - 1 else 1


def _port(value: object) -> int | None:
    return value if _is_int(value) and 0 < value < 65536 else None


def _is_int(value: object) -> TypeGuard[int]:
    """An int, not a bool: JSON true is an int to isinstance, and COPY writes it as "t", which an integer
    column refuses."""
    return isinstance(value, int) and not isinstance(value, bool)


def _health(status: Any) -> str:
    return status if status in (Health.PASSING, Health.WARNING, Health.CRITICAL) else Health.UNKNOWN


def parse_entry(entry: Any, datacenter: str) -> InstanceFields | None:
    """The Instance fields of one entry of /v1/health/service/:service, or None if it names no instance."""
    node = entry.get("Node") if isinstance(entry, dict) else None
    service = entry.get("Service") if isinstance(entry, dict) else None
    if not isinstance(node, dict) or not isinstance(service, dict) or not _text(service.get("ID")):
        return None
    checks = entry.get("Checks")
    # In check ID order, whatever order the answer gave: a row changes only when a check does.
    checks = sorted(
        (check for check in checks if isinstance(check, dict)) if isinstance(checks, list) else (),
        key=lambda c: _text(c.get("CheckID")),
    )
    statuses = [_health(check.get("Status")) for check in checks]
    tags, meta = service.get("Tags"), service.get("Meta")
    tags = tags if isinstance(tags, list) else []
    meta = meta if isinstance(meta, dict) else {}
    return {
        "consul_id": _text(service["ID"]),
        "node": _text(node.get("Node")),
        # Consul's rule: an instance registered without an address is reached at its node's address.
        "address": _text(service.get("Address")) or _text(node.get("Address")),
        "port": _port(service.get("Port")),
        "datacenter": datacenter,
        "tags": [_text(tag, MAX_TAG) for tag in tags if isinstance(tag, str)][:MAX_TAGS],
        "meta": {_text(key): _text(value, MAX_META_VALUE) for key, value in meta.items() if isinstance(value, str)},
        "weight_passing": _weight(service.get("Weights"), "Passing"),
        "weight_warning": _weight(service.get("Weights"), "Warning"),
        "health": max(statuses, key=HEALTH_ORDER.__getitem__, default=Health.PASSING),
        "checks": [
            {
                "id": _text(check.get("CheckID")),
                # A node's checks (Serf's, node maintenance) count for every instance on it.
                "scope": "service" if _text(check.get("ServiceID")) else "node",
                "name": _text(check.get("Name")),
                "status": _health(check.get("Status")),
                "output": _text(check.get("Output"), MAX_OUTPUT),
            }
            for check in checks
        ],
        "in_maintenance": any(
            _text(check.get("CheckID")).startswith(MAINTENANCE_CHECKS) and check.get("Status") == Health.CRITICAL
            for check in checks
        ),
        "in_consul": True,
        "deregistered_at": None,
    }


def entry_of(instance: Instance) -> dict[str, Any]:
    """The entry of /v1/health/service/:service that ``parse_entry`` reads back as this instance: the
    mapping's other direction, so that a write Consul accepted updates the rows as a reconcile would."""
    checks = [
        {
            "CheckID": check.get("id", ""),
            "ServiceID": instance.consul_id if check.get("scope") == "service" else "",
            "Name": check.get("name"),
            "Status": check.get("status"),
            "Output": check.get("output"),
        }
        for check in instance.checks
    ]
    return {
        "Node": {"Node": instance.node, "Address": instance.address},
        "Service": {
            "ID": instance.consul_id,
            "Address": instance.address,
            "Port": instance.port,
            "Tags": list(instance.tags),
            "Meta": dict(instance.meta),
            "Weights": {"Passing": instance.weight_passing, "Warning": instance.weight_warning},
        },
        "Checks": checks,
    }


def with_maintenance(instance: Instance, enable: bool) -> list[dict[str, str]]:
    """The instance's checks, as a row keeps them, once Consul has added (or removed) the critical check of
    maintenance mode; in check ID order, as Consul lists them. The reason goes to the check's Notes,
    which is not kept."""
    check_id = f"{SERVICE_MAINTENANCE_CHECK_ID}{instance.consul_id}"
    checks = [check for check in instance.checks if check.get("id") != check_id]
    if enable:
        checks.append(
            {
                "id": check_id,
                "scope": "service",
                "name": SERVICE_MAINTENANCE_CHECK,
                "status": Health.CRITICAL,
                "output": "",
            }
        )
    return sorted(checks, key=lambda check: check.get("id", ""))


def reconcile(datacenter: str, answers: Mapping[str, list[Any]], now: datetime) -> bool:
    """Applies /v1/health/service answers, ``{service name: entries}``, for one datacenter.

    Returns whether any row changed.
    """
    names = [name for name in answers if is_service_name(name)]
    for name in set(answers) - set(names):
        log_left_out(name)
    changed = False
    for start in range(0, len(names), BATCH_SERVICES):
        batch = names[start : start + BATCH_SERVICES]
        changed |= _reconcile_batch(datacenter, {name: answers[name] for name in batch}, now)
    return changed


def log_left_out(name: object) -> None:
    log.warning(
        "Consul service name not stored (empty, longer than %s characters, or with NUL or a lone surrogate): %.80r",
        MAX_TEXT,
        name,
    )


def mark_absent(datacenter: str, present: Iterable[str], now: datetime) -> bool:
    """Deregisters, in this datacenter, the instances of every service the catalog no longer lists."""
    live = Instance.objects.registered().filter(in_consul=True, datacenter=datacenter)
    gone = set(live.values_list("service__name", flat=True).distinct()) - set(present)
    if not gone:
        return False
    _reconcile_batch(datacenter, {name: [] for name in gone}, now)
    return True


@dataclass
class _Plan:
    """What a batch writes: rows to create, rows to update, rows only read, services that changed,
    merged rows that Consul lists again, and rows that name one process to merge
    (``instance_identity.unify``)."""

    to_create: list[Instance] = field(default_factory=list)
    to_update: list[Instance] = field(default_factory=list)
    read: list[int] = field(default_factory=list)
    services_changed: list[Service] = field(default_factory=list)
    revived: list[int] = field(default_factory=list)
    merges: list[tuple[Instance, list[Instance]]] = field(default_factory=list)


@transaction.atomic
def _reconcile_batch(datacenter: str, answers: dict[str, list[Any]], now: datetime) -> bool:
    """The one write path of Consul's state: one transaction per batch of services, announced to the
    registry views once committed when any row changed.

    It holds the exclusive identity lock (``topology.instance_identity``): span batches wait for it,
    which costs them the few milliseconds a batch of Consul's changes takes.
    """
    parsed = {
        name: [f for f in (parse_entry(e, datacenter) for e in entries) if f] for name, entries in answers.items()
    }
    # Before anything is read: a span batch in progress may be storing a trace-only row of an instance
    # that this batch creates, or adding requests to a row that it merges.
    hold_identity_lock(exclusive=True)
    plan = _plan(datacenter, parsed, _services(parsed, now), now)

    _create(plan.to_create)
    # Rows whose Consul fields changed are rewritten; the others only learn when they were last read.
    Instance.objects.bulk_update(plan.to_update, CONSUL_FIELDS, batch_size=500)
    for start in range(0, len(plan.read), 1000):
        Instance.objects.filter(pk__in=plan.read[start : start + 1000]).update(last_seen=now)
    Service.objects.bulk_update(plan.services_changed, SERVICE_FIELDS, batch_size=500)
    Instance.objects.filter(pk__in=plan.revived).update(merged_into=None)
    _merge(plan.merges, now)
    changed = bool(plan.to_create or plan.to_update or plan.services_changed or plan.revived or plan.merges)
    if changed and plan.merges:
        # Merged instances' requests moved: the traffic views are read afresh.
        announce_on_commit(*REGISTRY_VIEWS, *TRAFFIC_VIEWS)
    elif changed:
        services = {instance.service_id for instance in (*plan.to_create, *plan.to_update)}
        services |= {service.pk for service in plan.services_changed}
        services |= set(Instance.objects.filter(pk__in=plan.revived).values_list("service_id", flat=True))
        announce_on_commit(*REGISTRY_VIEWS, rows=ChangedRows(services=frozenset(services)))
    return changed


def _plan(
    datacenter: str, parsed: Mapping[str, list[InstanceFields]], services: Mapping[str, Service], now: datetime
) -> _Plan:
    plan = _Plan()
    instances: defaultdict[int, list[Instance]] = defaultdict(list)
    for stored in Instance.objects.filter(service__in=services.values()):
        instances[stored.service_id].append(stored)
    for name, entries in parsed.items():
        service = services.get(name)
        if service is None:  # gone before it was ever stored
            continue
        rows = instances[service.pk]
        lookup = _Lookup(rows)
        seen: set[int] = set()
        for fields in entries:
            instance = lookup.match(fields)
            if instance is None:
                instance = Instance(
                    service=service, identity=lookup.free_identity(fields), first_seen=now, last_seen=now, **fields
                )
                lookup.add(instance)
                plan.to_create.append(instance)
            elif instance.pk is None:  # Consul listed the same instance twice: the last entry wins
                for key, value in fields.items():
                    setattr(instance, key, value)
            else:
                if instance.merged_into_id is not None:
                    # Listed again after it was merged into its successor: its own row again, from now on.
                    instance.merged_into_id = None
                    plan.revived.append(instance.pk)
                if any(getattr(instance, key) != value for key, value in fields.items()):
                    for key, value in fields.items():
                        setattr(instance, key, value)
                    plan.to_update.append(instance)
                plan.read.append(instance.pk)
            seen.add(id(instance))
        for instance in rows:
            if (
                instance.in_consul
                and instance.datacenter == datacenter
                and instance.deregistered_at is None
                and id(instance) not in seen
            ):
                instance.deregistered_at = now
                plan.to_update.append(instance)
        if _summarise(service, lookup.rows, now):
            plan.services_changed.append(service)
        plan.merges.extend(unify(lookup.rows))
    return plan


def _merge(merges: Sequence[tuple[Instance, list[Instance]]], now: datetime) -> None:
    """Merges rows into the instances that the batch kept; a kept instance that the batch created (by
    COPY, which gives no primary key back) is read back by its identity first."""
    unsaved = [kept for kept, _ in merges if kept.pk is None]
    if unsaved:
        ids = {
            (service_id, identity): pk
            for pk, service_id, identity in Instance.objects.filter(
                service_id__in={kept.service_id for kept in unsaved}, identity__in={kept.identity for kept in unsaved}
            ).values_list("pk", "service_id", "identity")
        }
        for kept in unsaved:
            kept.pk = ids[(kept.service_id, kept.identity)]
    for kept, merged in merges:
        absorb(kept, merged, now)


def _create(instances: Sequence[Instance]) -> None:
    """Inserts new Instance rows.

    A first sync creates every instance of the catalog at once. On PostgreSQL, bulk_create's INSERT has
    each of its parameters quoted in Python (psycopg's client-side binding, Django's default): about half
    the time of reconciling 10,000 new instances, and the first sync missed its 10 s target. COPY sends
    the rows as text for the server to parse.
    """
    if connection.vendor != "postgresql" or len(instances) < COPY_AT_LEAST:
        Instance.objects.bulk_create(instances, batch_size=1000)
        return
    fields = [field for field in Instance._meta.concrete_fields if not field.primary_key]
    # A concrete field always has a column; django-stubs types Field.column as optional.
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)  # type: ignore[arg-type]
    table = connection.ops.quote_name(Instance._meta.db_table)
    # JSON columns get their text; every other value already is what psycopg writes (str, int, bool, None,
    # an aware datetime), and Django's preparation of each value would cost as much as COPY saves.
    json_fields = {field.attname for field in fields if isinstance(field, models.JSONField)}
    attnames = [field.attname for field in fields]
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for instance in instances:
            values = instance.__dict__
            copy.write_row([json.dumps(values[name]) if name in json_fields else values[name] for name in attnames])


def _services(parsed: Mapping[str, list[InstanceFields]], now: datetime) -> dict[str, Service]:
    """The batch's services; the new ones are created with their Consul fields already summarised."""
    services = {service.name: service for service in Service.objects.filter(name__in=parsed)}
    missing: list[Service] = []
    for name, entries in parsed.items():
        if name not in services and entries:
            service = Service(name=name, first_seen=now)
            # Plain records: _summarise reads only fields, and model instances cost thousands of __init__s.
            _summarise(service, [SimpleNamespace(**fields) for fields in entries], now)
            missing.append(service)
    if missing:
        Service.objects.bulk_create(missing, ignore_conflicts=True)
        services.update(
            (service.name, service) for service in Service.objects.filter(name__in=[s.name for s in missing])
        )
    return services


class _Lookup:
    """A service's instance rows, found by Consul instance or by the identity spans give them."""

    def __init__(self, rows: list[Instance]) -> None:
        self.rows = rows
        self.by_consul = {(r.datacenter, r.node, r.consul_id): r for r in rows if r.in_consul}
        self.by_identity = {r.identity: r for r in rows}

    def add(self, row: Instance) -> None:
        self.rows.append(row)
        self.by_consul[(row.datacenter, row.node, row.consul_id)] = row
        self.by_identity[row.identity] = row

    def match(self, fields: InstanceFields) -> Instance | None:
        """The same Consul instance, else the row that spans or an operator made under its service ID,
        which becomes Consul's. A row that spans named by ``address:port`` is not taken over: the new
        row keeps the registry's identity, and ``instance_identity.unify`` merges the two."""
        row = self.by_consul.get((fields["datacenter"], fields["node"], fields["consul_id"]))
        if row is not None:
            return row
        row = self.by_identity.get(fields["consul_id"])
        if row is not None and not row.in_consul and row.merged_into_id is None:
            return row
        return None

    def free_identity(self, fields: InstanceFields) -> str:
        """The Consul service ID, unless another node already uses it for this service (IDs are unique per agent).

        Cut to the column, all three candidates can be taken: a 255-character ID on two nodes, or an ID on three
        nodes whose names differ only past the cut. Then a digest of the instance's whole Consul key (which
        match found no row for) tells it apart, where the last candidate broke the unique constraint and with
        it the reconcile of the whole batch.
        """
        candidates = [
            c[:MAX_TEXT]
            for c in (
                fields["consul_id"],
                f"{fields['consul_id']}@{fields['node']}",
                f"{fields['consul_id']}@{fields['node']}.{fields['datacenter']}",
            )
        ]
        free = next((c for c in candidates if c not in self.by_identity), None)
        if free is not None:
            return free
        key = "\x00".join((fields["datacenter"], fields["node"], fields["consul_id"]))
        digests = (hashlib.blake2b(f"{key}\x00{n}".encode(), digest_size=8).hexdigest() for n in itertools.count())
        identities = (f"{candidates[-1][: MAX_TEXT - len(digest) - 1]}#{digest}" for digest in digests)
        return next(identity for identity in identities if identity not in self.by_identity)


def _summarise(service: Service, rows: Sequence[Instance | SimpleNamespace], now: datetime) -> bool:
    """Sets the service's Consul fields from its live Consul instances in every datacenter; True if any moved."""
    before = [getattr(service, field) for field in SERVICE_FIELDS]
    live = [row for row in rows if row.in_consul and row.deregistered_at is None]
    if live:
        service.in_consul = True
        service.deregistered_at = None
        service.last_seen = now
        service.tags = sorted({tag for row in live for tag in row.tags})
        service.datacenter = ",".join(sorted({row.datacenter for row in live}))[:128]
        service.balancing_policy = _policy(live)
    elif service.in_consul and service.deregistered_at is None:
        service.deregistered_at = now
    return before != [getattr(service, field) for field in SERVICE_FIELDS]


def _policy(live: Iterable[Instance | SimpleNamespace]) -> str:
    """The most common valid ``meshscope-balancing`` value among the instances; empty when none sets it."""
    counts = Counter(row.meta.get(POLICY_META_KEY) for row in live)
    votes = [(count, value) for value, count in counts.items() if value in BalancingPolicy.values]
    return max(votes)[1] if votes else ""
