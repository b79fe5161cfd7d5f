"""Turns decoded spans into Span rows, services, instances and rollups.

Delivery is at least once, so everything here is idempotent: a span is unique on (trace id, span id)
and only spans that were newly inserted add to the rollups. A call is counted once, when the second
span of its CLIENT/SERVER (or PRODUCER/CONSUMER) pair is stored, whichever arrives first.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from topology.models import IngestRollup, Instance, Service, Span
from topology.rollup_batch import RollupBatch, minute_of

PARENT_KINDS = {"client": "server", "producer": "consumer"}  # a parent's kind -> its child's kind
PAIRED_KINDS = ("client", "server", "producer", "consumer")
SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_id", "service_id", "instance_id", "kind", "name", "protocol",
    "started_at", "duration_us", "status_code", "error", "peer", "topic", "attributes", "paired",
)  # fmt: skip
INSERT_CHUNK = 500


@dataclass
class IngestResult:
    new_spans: int = 0
    duplicate_spans: int = 0
    new_services: int = 0


def store_spans(records, messages=0, rejected=0):
    """Stores decoded spans. Call inside a transaction; commit Kafka offsets only after it commits."""
    result = IngestResult()
    now = timezone.now()
    if records:
        services, result.new_services = _services(records, now)
        instances = _instances(records, services, now)
        new_rows = _insert(records, services, instances)
        result.new_spans = len(new_rows)
        result.duplicate_spans = len(records) - len(new_rows)
        batch = RollupBatch()
        _count_roots(new_rows, batch)
        _pair(_pairing_candidates({row.trace_id for row in new_rows if row.kind in PAIRED_KINDS}), batch)
        batch.save()
    _count_ingest(now, messages, result, rejected)
    return result


def resolve_unpaired(grace_seconds, limit=5000):
    """Settles spans whose partner never came: a CLIENT or PRODUCER span counts as a call to the peer
    it names (the callee sends no spans), and a SERVER span as a request from an unknown caller.
    Call inside a transaction. Returns how many spans it settled."""
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    overdue = list(
        Span.objects.filter(paired=False, started_at__lt=cutoff).order_by("started_at").values_list("trace_id", flat=True)[:limit]
    )
    if not overdue:
        return 0
    batch = RollupBatch()
    candidates = _pairing_candidates(set(overdue))
    settled = _pair(candidates, batch)
    alone = [row for row in candidates if row.id not in settled and row.started_at < cutoff]
    peers, _ = _service_ids({row.peer for row in alone if row.kind in PARENT_KINDS and row.peer}, timezone.now())
    for row in alone:
        if row.kind in PARENT_KINDS and row.peer:
            protocol = row.protocol if row.kind == "client" else "messaging"
            batch.add_edge(row.start_us, row.service_id, peers[row.peer], protocol, row.topic if row.kind == "producer" else "", row.duration_ms, row.error)
        elif row.kind == "server" and row.instance_id:
            batch.add_instance(row.start_us, row.instance_id, None, row.duration_ms, row.error)
    Span.objects.filter(pk__in=[row.id for row in alone]).update(paired=True)
    batch.save()
    return len(settled) + len(alone)


class StoredSpan:
    """The fields of a stored span that counting needs, from a fresh insert or from the database."""

    __slots__ = ("id", "trace_id", "span_id", "parent_id", "kind", "service_id", "instance_id", "name",
                 "start_us", "duration_us", "error", "protocol", "topic", "peer", "started_at")  # fmt: skip

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))
        if self.start_us is None:
            self.start_us = int(self.started_at.timestamp() * 1_000_000)

    @property
    def duration_ms(self):
        return self.duration_us / 1000


def _service_ids(names, now):
    """Maps names to service ids, creating the services that traces mention for the first time."""
    services = dict(Service.objects.filter(name__in=names).values_list("name", "id"))
    missing = names - services.keys()
    if missing:
        Service.objects.bulk_create(
            [Service(name=name, in_traces=True, first_seen=now, last_seen=now) for name in sorted(missing)],
            ignore_conflicts=True,
        )
        services = dict(Service.objects.filter(name__in=names).values_list("name", "id"))
    return services, len(missing)


def _services(records, now):
    services, created = _service_ids({record.service for record in records}, now)
    # last_seen is kept to the minute: writing it for every batch would make the service rows hot.
    Service.objects.filter(pk__in=services.values()).filter(
        Q(in_traces=False) | Q(last_seen__lt=now - timedelta(minutes=1))
    ).update(in_traces=True, last_seen=now)
    return services, created


def _instances(records, services, now):
    """Maps (service id, instance key) to an instance id, matching Consul's aliases first."""
    wanted = {(services[r.service], r.instance) for r in records if r.instance}
    if not wanted:
        return {}
    known = {}
    for instance in Instance.objects.filter(service_id__in={service_id for service_id, _ in wanted}):
        for alias in instance.aliases():
            known.setdefault((instance.service_id, alias), instance.id)
    missing = wanted - known.keys()
    if missing:
        Instance.objects.bulk_create(
            [Instance(service_id=sid, identity=key, in_traces=True, first_seen=now, last_seen=now) for sid, key in sorted(missing)],
            ignore_conflicts=True,
        )
        for instance in Instance.objects.filter(service_id__in={sid for sid, _ in missing}, identity__in={key for _, key in missing}):
            known[(instance.service_id, instance.identity)] = instance.id
    return known


def _insert(records, services, instances):
    """INSERT … ON CONFLICT DO NOTHING RETURNING: the rows that come back are the new spans."""
    ops = connection.ops
    table = Span._meta.db_table
    json_placeholder = "%s::jsonb" if connection.vendor == "postgresql" else "%s"
    row_placeholder = "(" + ", ".join(json_placeholder if c == "attributes" else "%s" for c in SPAN_COLUMNS) + ")"
    new_rows = []
    unique = {}
    for record in records:
        unique.setdefault((record.trace_id, record.span_id), record)
    records = list(unique.values())
    with connection.cursor() as cursor:
        for start in range(0, len(records), INSERT_CHUNK):
            chunk = records[start : start + INSERT_CHUNK]
            params = []
            for r in chunk:
                service_id = services[r.service]
                started_at = datetime.fromtimestamp(r.start_us / 1_000_000, UTC)
                paired = r.kind not in PAIRED_KINDS or (r.kind in ("server", "consumer") and not r.parent_id)
                params.extend((
                    r.trace_id, r.span_id, r.parent_id, service_id, instances.get((service_id, r.instance)),
                    r.kind, r.name, r.protocol, ops.adapt_datetimefield_value(started_at), r.duration_us,
                    r.status_code, r.error, r.peer, r.topic, json.dumps(r.attributes), paired,
                ))  # fmt: skip
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(SPAN_COLUMNS)}) VALUES {', '.join([row_placeholder] * len(chunk))} "
                f"ON CONFLICT (trace_id, span_id) DO NOTHING RETURNING id, trace_id, span_id",
                params,
            )
            by_identity = {(r.trace_id, r.span_id): r for r in chunk}
            for span_pk, trace_id, span_id in cursor.fetchall():
                r = by_identity[(trace_id, span_id)]
                service_id = services[r.service]
                new_rows.append(StoredSpan(
                    id=span_pk, trace_id=trace_id, span_id=span_id, parent_id=r.parent_id, kind=r.kind,
                    service_id=service_id, instance_id=instances.get((service_id, r.instance)), name=r.name,
                    start_us=r.start_us, duration_us=r.duration_us, error=r.error, protocol=r.protocol,
                    topic=r.topic, peer=r.peer,
                ))  # fmt: skip
    return new_rows


def _count_roots(new_rows, batch):
    for row in new_rows:
        if row.parent_id:
            continue
        batch.add_route(row.start_us, row.service_id, row.name, row.duration_ms, row.error)
        if row.kind == "server" and row.instance_id:
            batch.add_instance(row.start_us, row.instance_id, None, row.duration_ms, row.error)


def _pairing_candidates(trace_ids):
    if not trace_ids:
        return []
    rows = (
        Span.objects.select_for_update()
        .filter(trace_id__in=trace_ids, paired=False, kind__in=PAIRED_KINDS)
        .order_by("pk")
        .values(*(name for name in StoredSpan.__slots__ if name != "start_us"))
    )
    return [StoredSpan(**row) for row in rows]


def _pair(candidates, batch):
    """Counts every CLIENT→SERVER and PRODUCER→CONSUMER pair among unpaired spans; returns their ids."""
    parents = {(row.trace_id, row.span_id): row for row in candidates if row.kind in PARENT_KINDS}
    paired = set()
    for child in candidates:
        parent = parents.get((child.trace_id, child.parent_id))
        if parent is None or PARENT_KINDS[parent.kind] != child.kind or parent.id in paired:
            continue
        paired.update((parent.id, child.id))
        if child.kind == "server":
            protocol = child.protocol if child.protocol != "other" else parent.protocol
            batch.add_edge(parent.start_us, parent.service_id, child.service_id, protocol, "", parent.duration_ms, parent.error or child.error)
            if child.instance_id:
                batch.add_instance(child.start_us, child.instance_id, parent.service_id, child.duration_ms, child.error)
        else:
            delay_ms = (child.start_us - parent.start_us) / 1000
            topic = child.topic or parent.topic
            batch.add_edge(parent.start_us, parent.service_id, child.service_id, "messaging", topic, delay_ms, parent.error or child.error)
    if paired:
        Span.objects.filter(pk__in=paired).update(paired=True)
    return paired


def _count_ingest(now, messages, result, rejected):
    minute = minute_of(int(now.timestamp() * 1_000_000))
    IngestRollup.objects.get_or_create(minute=minute)
    IngestRollup.objects.filter(minute=minute).update(
        messages=F("messages") + messages,
        spans=F("spans") + result.new_spans,
        duplicate_spans=F("duplicate_spans") + result.duplicate_spans,
        rejected=F("rejected") + rejected,
    )
