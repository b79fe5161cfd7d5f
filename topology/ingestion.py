"""Turns decoded spans into Span rows, services, instances and rollups.

A message is counted once: the consumer skips what its partition's StreamPosition says was counted.
A span can still come twice in two messages (an exporter retrying a request that had in fact
arrived), so a span is unique on (trace id, span id, start) and only spans newly inserted add to
the rollups. A call is counted once, when the second span of its CLIENT/SERVER (or PRODUCER/CONSUMER)
pair is stored, whichever arrives first.
"""

import copy
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from topology.changes import TRAFFIC_VIEWS, announce_on_commit
from topology.instance_identity import IDENTITY_FIELDS, canonical, hold_identity_lock, resolve_names
from topology.models import IngestRollup, Instance, Service, Span
from topology.rollup_batch import RollupBatch, minute_of
from topology.shared_spans import shared_server_id
from topology.span_keeping import keep_ratio, keeps_trace
from topology.span_record import WIRE_FORMATS, SpanRecord

PARENT_KINDS = {"client": "server", "producer": "consumer"}  # a parent's kind -> its child's kind
PAIRED_KINDS = ("client", "server", "producer", "consumer")
SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_id",
    "service_id",
    "instance_id",
    "kind",
    "name",
    "protocol",
    "started_at",
    "duration_us",
    "status_code",
    "error",
    "peer",
    "topic",
    "attributes",
    "paired",
    "hops_pending",
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INSERT_CHUNK = 500  # rows a statement on SQLite, under its limit of bound parameters

ServiceIds = Mapping[str, int]  # service name -> id
InstanceIds = Mapping[tuple[int, str], int]  # (service id, instance key) -> instance id


@dataclass
class IngestResult:
    new_spans: int = 0
    duplicate_spans: int = 0
    new_by_format: Counter[str] = field(default_factory=Counter)


@transaction.atomic
def store_spans(records: Iterable[SpanRecord], messages: int = 0, rejected: int = 0) -> IngestResult:
    """Stores decoded spans and counts what they add. The one write path of new spans: commit Kafka
    offsets only after the caller's transaction commits; the traffic views are announced then."""
    result = IngestResult()
    now = timezone.now()
    if records:
        # First, before any row is locked: a merge waits for this batch, or this batch for a merge.
        hold_identity_lock(exclusive=False)
        by_key = {(r.trace_id, r.span_id): r for r in _join_shared_halves(list(records))}
        records = list(by_key.values())
        services = _services(records, now)
        instances = _instances(records, services, now)
        # Most pairs arrive in the same batch: marked paired as they are inserted, they cost no UPDATE.
        in_batch = {(span.trace_id, span.span_id) for pair in _match(records) for span in pair}
        ratio = keep_ratio()
        # Every span is stored, a dropped trace's too, until its trace's hops are counted
        # (``topology.route_hops``): only then may SPAN_KEEP_RATIO thin what stays.
        counted = _insert(records, services, instances, in_batch, ratio)
        batch = RollupBatch(ratio)
        result.new_spans = len(counted)
        result.duplicate_spans = len(records) - len(counted)
        result.new_by_format.update(by_key[(row.trace_id, row.span_id)].wire_format for row in counted)
        _count_roots(counted, batch)
        confirmed = _match([row for row in counted if row.paired and row.kind in PAIRED_KINDS])
        for parent, child in confirmed:
            _count_pair(parent, child, batch)
        # A partner that was a duplicate leaves its new half to be paired with the stored spans.
        confirmed_ids = {row.id for pair in confirmed for row in pair}
        unconfirmed = {
            row.id
            for row in counted
            if row.paired
            and row.kind in PAIRED_KINDS
            and row.id not in confirmed_ids
            and (row.parent_id or row.kind in PARENT_KINDS)
        }
        if unconfirmed:
            Span.objects.filter(pk__in=unconfirmed).update(paired=False)
        waiting = {row.trace_id for row in counted if not row.paired or row.id in unconfirmed}
        candidates = _pairing_candidates(waiting)
        settled = _pair(candidates, batch)
        batch.save()
        if ratio < 1:
            _mark_exemplars(batch.exemplar_spans, ratio)
            _forget_dropped([row for row in candidates if row.id in settled], ratio)
        if counted:
            announce_on_commit(*TRAFFIC_VIEWS, rows=batch.changed_rows)
    _count_ingest(now, messages, result, rejected)
    return result


@transaction.atomic
def resolve_unpaired(grace_seconds: float, limit: int = 5000) -> int:
    """Settles spans whose partner never came: a CLIENT or PRODUCER span counts as a call to the peer
    it names (the callee sends no spans), and a SERVER span as a request from an unknown caller.
    One batch of at most ``limit`` traces, in one transaction. Returns how many spans it settled."""
    cutoff = timezone.now() - timedelta(seconds=grace_seconds)
    overdue = list(
        Span.objects.filter(paired=False, started_at__lt=cutoff)
        .order_by("started_at")
        .values_list("trace_id", flat=True)[:limit]
    )
    if not overdue:
        return 0
    hold_identity_lock(exclusive=False)
    ratio = keep_ratio()
    batch = RollupBatch(ratio)
    candidates = _pairing_candidates(set(overdue))
    settled = _pair(candidates, batch)
    # started_at is None only in spans fresh from an insert, never in candidates read back.
    alone = [
        row
        for row in candidates
        if not row.paired and row.id not in settled and row.started_at is not None and row.started_at < cutoff
    ]
    peers = _service_ids({row.peer for row in alone if row.kind in PARENT_KINDS and row.peer}, timezone.now())
    for row in alone:
        if row.kind in PARENT_KINDS and row.peer:
            protocol = row.protocol if row.kind == "client" else "messaging"
            topic = row.topic if row.kind == "producer" else ""
            batch.add_edge(
                row.start_us, row.service_id, peers[row.peer], protocol, topic, row.duration_ms, row.error, (row,)
            )
        elif row.kind == "server" and row.instance_id:
            batch.add_instance(row.start_us, row.instance_id, None, row.duration_ms, row.error)
    Span.objects.filter(pk__in=[row.id for row in alone]).update(paired=True)
    batch.save()
    if ratio < 1:
        _mark_exemplars(batch.exemplar_spans, ratio)
        _forget_dropped([row for row in candidates if row.id in settled] + alone, ratio)
    if settled or alone:
        announce_on_commit(*TRAFFIC_VIEWS, rows=batch.changed_rows)
    return len(settled) + len(alone)


class StoredSpan:
    """The fields of a stored span that counting needs, from a fresh insert or from the database."""

    __slots__ = (
        "duration_us",
        "error",
        "id",
        "instance_id",
        "kind",
        "name",
        "paired",
        "parent_id",
        "peer",
        "protocol",
        "service_id",
        "span_id",
        "start_us",
        "started_at",
        "topic",
        "trace_id",
    )

    # Named parameters rather than a loop over the slots: this runs for every stored span.
    def __init__(
        self,
        id: int,
        trace_id: str,
        span_id: str,
        parent_id: str,
        kind: str,
        service_id: int,
        instance_id: int | None,
        name: str,
        duration_us: int,
        error: bool,
        protocol: str,
        topic: str,
        peer: str,
        paired: bool,
        start_us: int | None = None,
        started_at: datetime | None = None,
    ) -> None:
        self.id, self.trace_id, self.span_id, self.parent_id, self.kind = id, trace_id, span_id, parent_id, kind
        self.service_id, self.instance_id, self.name, self.duration_us, self.error = (
            service_id,
            instance_id,
            name,
            duration_us,
            error,
        )
        self.protocol, self.topic, self.peer, self.paired, self.started_at = protocol, topic, peer, paired, started_at
        if start_us is not None:
            self.start_us = start_us
        elif started_at is not None:
            self.start_us = int(started_at.timestamp() * 1_000_000)
        else:
            raise TypeError("a StoredSpan needs start_us or started_at")

    @property
    def duration_ms(self) -> float:
        return self.duration_us / 1000


class _Pairable(Protocol):
    """What pairing reads of a span: a decoded record or a StoredSpan."""

    @property
    def trace_id(self) -> str: ...
    @property
    def span_id(self) -> str: ...
    @property
    def parent_id(self) -> str: ...
    @property
    def kind(self) -> str: ...


_P = TypeVar("_P", bound=_Pairable)


def _service_ids(names: set[str], now: datetime) -> dict[str, int]:
    """Maps names to service ids, creating the services that traces mention for the first time."""
    services = dict(Service.objects.filter(name__in=names).values_list("name", "id"))
    missing = names - services.keys()
    if missing:
        Service.objects.bulk_create(
            [Service(name=name, in_traces=True, first_seen=now, last_seen=now) for name in sorted(missing)],
            ignore_conflicts=True,
        )
        services = dict(Service.objects.filter(name__in=names).values_list("name", "id"))
    return services


def _services(records: Iterable[Any], now: datetime) -> dict[str, int]:
    services = _service_ids({record.service for record in records}, now)
    # last_seen is kept to the minute: writing it for every batch would make the service rows hot.
    Service.objects.filter(pk__in=services.values()).filter(
        Q(in_traces=False) | Q(last_seen__lt=now - timedelta(minutes=1))
    ).update(in_traces=True, last_seen=now)
    return services


def _instances(records: Iterable[Any], services: ServiceIds, now: datetime) -> dict[tuple[int, str], int]:
    """Maps (service id, instance key) to the instance id it counts for, as ``instance_identity``
    resolves names; creates a trace-only instance for a name that no row has. Call with the identity
    lock held (shared)."""
    wanted = {(services[r.service], r.instance) for r in records if r.instance}
    if not wanted:
        return {}
    rows: defaultdict[int, list[Instance]] = defaultdict(list)
    for instance in Instance.objects.filter(service_id__in={service_id for service_id, _ in wanted}).only(
        *IDENTITY_FIELDS
    ):
        rows[instance.service_id].append(instance)
    names = {service_id: resolve_names(service_rows) for service_id, service_rows in rows.items()}
    known: dict[tuple[int, str], int] = {}
    # (service id, canonical name) -> the first key that spells it, the new row's identity
    missing: dict[tuple[int, str], str] = {}
    for service_id, key in wanted:
        name = canonical(key)
        instance_id = names.get(service_id, {}).get(name)
        if instance_id is not None:
            known[(service_id, key)] = instance_id
        else:
            missing.setdefault((service_id, name), key)
    if missing:
        Instance.objects.bulk_create(
            [
                Instance(service_id=sid, identity=key, in_traces=True, first_seen=now, last_seen=now)
                for (sid, _), key in sorted(missing.items())
            ],
            ignore_conflicts=True,
        )
        created = {
            (instance.service_id, canonical(instance.identity)): instance.id
            for instance in Instance.objects.filter(
                service_id__in={sid for sid, _ in missing}, identity__in=set(missing.values())
            )
        }
        for service_id, key in wanted - known.keys():
            known[(service_id, key)] = created[(service_id, canonical(key))]
    return known


def _insert(
    records: Iterable[Any],
    services: ServiceIds,
    instances: InstanceIds,
    in_batch_pairs: set[tuple[str, str]],
    ratio: float,
) -> list[StoredSpan]:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: the rows that come back are the new spans. A root, and
    every span of a trace that ``ratio`` drops, is stored with its trace's hops pending."""
    # (trace id, span id) -> (record, its row); records are unique on the key already
    rows: dict[tuple[str, str], tuple[Any, tuple[Any, ...]]] = {}
    for r in records:
        service_id = services[r.service]
        paired = _settled_on_arrival(r, in_batch_pairs)
        rows[(r.trace_id, r.span_id)] = (
            r,
            (
                r.trace_id,
                r.span_id,
                r.parent_id,
                service_id,
                instances.get((service_id, r.instance)),
                r.kind,
                r.name,
                r.protocol,
                datetime.fromtimestamp(r.start_us / 1_000_000, UTC),
                r.duration_us,
                r.status_code,
                r.error,
                r.peer,
                r.topic,
                json.dumps(r.attributes),
                paired,
                not r.parent_id or not keeps_trace(r.trace_id, ratio),
            ),
        )
    returned = _insert_returning_new([row for _, row in rows.values()])
    new_rows = []
    for span_pk, trace_id, span_id in returned:
        r, row = rows[(trace_id, span_id)]
        new_rows.append(
            StoredSpan(
                span_pk,
                trace_id,
                span_id,
                r.parent_id,
                r.kind,
                row[3],
                row[4],
                r.name,
                r.duration_us,
                r.error,
                r.protocol,
                r.topic,
                r.peer,
                row[15],  # paired
                start_us=r.start_us,
            )
        )
    return new_rows


def _settled_on_arrival(record: Any, in_batch_pairs: set[tuple[str, str]]) -> bool:
    """Whether a span's share of the counts is done once its batch is stored: it has no partner to wait
    for (it is not a CLIENT, SERVER, PRODUCER or CONSUMER span, or it is a root), or that partner is in
    the batch."""
    return (
        record.kind not in PAIRED_KINDS
        or (record.kind in ("server", "consumer") and not record.parent_id)
        or (record.trace_id, record.span_id) in in_batch_pairs
    )


def _mark_exemplars(exemplar_spans: Iterable[StoredSpan], ratio: float) -> None:
    """Marks the spans of dropped traces that an edge or a route took as exemplars, so that settling
    their traces (``topology.route_hops``) and pairing (``_forget_dropped``) leave them. A kept trace's
    spans need no mark: nothing deletes them before retention."""
    ids = {span.id for span in exemplar_spans if not keeps_trace(span.trace_id, ratio)}
    if ids:
        Span.objects.filter(pk__in=ids, exemplar=False).update(exemplar=True)


def _forget_dropped(settled: Iterable[StoredSpan], ratio: float) -> None:
    """Deletes the spans of dropped traces that waited for a partner and are counted now, once their
    trace's hops are counted (``hops_pending`` false; until then settling needs them and deletes them
    itself), but for the exemplars."""
    ids = [row.id for row in settled if not keeps_trace(row.trace_id, ratio)]
    if ids:
        Span.objects.filter(pk__in=ids, hops_pending=False, exemplar=False).delete()


def _insert_returning_new(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    table = Span._meta.db_table
    columns = ", ".join(SPAN_COLUMNS)
    conflict = "ON CONFLICT (trace_id, span_id, started_at) DO NOTHING RETURNING id, trace_id, span_id"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY into a scratch table, then one INSERT … SELECT: psycopg's COPY is written in C,
            # where binding thousands of parameters is not.
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS span_incoming ON COMMIT DELETE ROWS AS SELECT {columns} FROM {table} WITH NO DATA"
            )
            # The raw psycopg cursor raises psycopg's errors: made Django's, a refused row or a lost
            # connection is handled by the consumer as it is for any other statement.
            with (
                connection.wrap_database_errors,
                cursor.cursor.copy(f"COPY span_incoming ({columns}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM span_incoming {conflict}")
            returned = cursor.fetchall()
            cursor.execute("TRUNCATE span_incoming")
            return returned
        returned = []
        adapt = connection.ops.adapt_datetimefield_value
        placeholder = "(" + ", ".join(["%s"] * len(SPAN_COLUMNS)) + ")"
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            params = [value if i != 8 else adapt(value) for row in chunk for i, value in enumerate(row)]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholder] * len(chunk))} {conflict}", params
            )
            returned.extend(cursor.fetchall())
        return returned


def _keeps_client_id(record: Any) -> bool:
    """A Zipkin shared SERVER span that named no parent and so still has its CLIENT half's id."""
    return bool(getattr(record, "shares_client_id", False)) and record.kind == "server" and not record.parent_id


def _with_own_id(record: Any) -> Any:
    """The shared SERVER span as the child of its CLIENT half, under the id the decoder gives any other
    server half. A copy: the consumer may store the same records again, one message at a time."""
    joined = copy.copy(record)
    joined.parent_id = record.span_id
    joined.span_id = shared_server_id(record.trace_id, record.span_id)
    joined.shares_client_id = False
    return joined


def _join_shared_halves(records: list[Any]) -> list[Any]:
    """A shared SERVER span without a parent keeps its id only while no CLIENT span has it: when its
    client half is in the same batch or stored already, it takes its own id and becomes the client's
    child here. (A client that comes after it is joined by pairing: ``_join_shared_roots``.)"""
    shared = [record for record in records if _keeps_client_id(record)]
    if not shared:
        return records
    clients = {(r.trace_id, r.span_id) for r in records if r.kind == "client"}
    clients.update(
        Span.objects.filter(
            trace_id__in={r.trace_id for r in shared}, span_id__in={r.span_id for r in shared}, kind="client"
        ).values_list("trace_id", "span_id")
    )
    return [
        _with_own_id(record) if _keeps_client_id(record) and (record.trace_id, record.span_id) in clients else record
        for record in records
    ]


def _join_shared_roots(candidates: Sequence[StoredSpan], batch: RollupBatch) -> None:
    """A shared SERVER root stored before its CLIENT half came becomes the child of that client, which
    is among the unpaired ``candidates`` now: it takes its own id, and what it counted as an entry route
    and as a request from no known caller is taken back, for pairing to count the call instead.

    Pairing reads the roots of the traces it pairs (``_pairing_candidates``), so it finds the two
    whichever came first, and also when two consumers stored them at the same moment, neither seeing
    the other: then the client waits unpaired, and the pairing of overdue spans (``resolve_unpaired``)
    joins them. If the root's instance was merged into another
    since, its request moved there, and it is taken back there.
    """
    clients = {(span.trace_id, span.span_id) for span in candidates if span.kind == "client"}
    roots = [
        span
        for span in candidates
        if span.kind == "server" and not span.parent_id and (span.trace_id, span.span_id) in clients
    ]
    if not roots:
        return
    merged: dict[int | None, int | None] = dict(
        Instance.objects.filter(pk__in={root.instance_id for root in roots}, merged_into__isnull=False).values_list(
            "pk", "merged_into_id"
        )
    )
    for root in roots:
        instance_id = merged.get(root.instance_id, root.instance_id)
        batch.retract_route(root.start_us, root.service_id, root.name, root.duration_ms, root.error)
        if instance_id:
            batch.retract_instance(root.start_us, instance_id, None, root.duration_ms, root.error)
        root.parent_id, root.span_id = root.span_id, shared_server_id(root.trace_id, root.span_id)
        root.instance_id, root.paired = instance_id, False
        Span.objects.filter(pk=root.id).update(
            span_id=root.span_id, parent_id=root.parent_id, instance_id=instance_id, paired=False
        )


def _count_roots(new_rows: Iterable[StoredSpan], batch: RollupBatch) -> None:
    for row in new_rows:
        if row.parent_id:
            continue
        batch.add_route(row.start_us, row.service_id, row.name, row.duration_ms, row.error, (row,))
        if row.kind == "server" and row.instance_id:
            batch.add_instance(row.start_us, row.instance_id, None, row.duration_ms, row.error)


def _pairing_candidates(trace_ids: set[str]) -> list[StoredSpan]:
    if not trace_ids:
        return []
    # With the unpaired spans, the traces' roots: a shared SERVER root's CLIENT half may be among them.
    rows = (
        Span.objects.select_for_update()
        .filter(
            Q(paired=False, kind__in=PAIRED_KINDS) | Q(kind="server", parent_id=""),
            trace_id__in=trace_ids,
        )
        .order_by("pk")
        .values(*(name for name in StoredSpan.__slots__ if name != "start_us"))
    )
    return [StoredSpan(**row) for row in rows]


def _match(spans: Sequence[_P]) -> list[tuple[_P, _P]]:
    """The CLIENT→SERVER and PRODUCER→CONSUMER (parent, child) pairs among ``spans``, which may be
    decoded records or stored spans: a parent takes one child."""
    parents = {(span.trace_id, span.span_id): span for span in spans if span.kind in PARENT_KINDS}
    pairs = []
    for child in spans:
        parent = parents.pop((child.trace_id, child.parent_id), None) if child.parent_id else None
        if parent is None:
            continue
        if PARENT_KINDS[parent.kind] != child.kind:
            parents[(parent.trace_id, parent.span_id)] = parent
            continue
        pairs.append((parent, child))
    return pairs


def _count_pair(parent: StoredSpan, child: StoredSpan, batch: RollupBatch) -> None:
    error = parent.error or child.error
    if child.kind == "server":
        protocol = child.protocol if child.protocol != "other" else parent.protocol
        topic, latency_ms = "", parent.duration_ms
        if child.instance_id:
            batch.add_instance(child.start_us, child.instance_id, parent.service_id, child.duration_ms, child.error)
    else:
        protocol, topic = "messaging", child.topic or parent.topic
        latency_ms = (child.start_us - parent.start_us) / 1000  # the propagation delay
    batch.add_edge(
        parent.start_us, parent.service_id, child.service_id, protocol, topic, latency_ms, error, (parent, child)
    )


def _pair(candidates: Sequence[StoredSpan], batch: RollupBatch) -> set[int]:
    """Counts every pair among stored unpaired spans, marks them paired; returns their ids."""
    _join_shared_roots(candidates, batch)
    paired: set[int] = set()
    for parent, child in _match(candidates):
        paired.update((parent.id, child.id))
        _count_pair(parent, child, batch)
    if paired:
        Span.objects.filter(pk__in=paired).update(paired=True)
    return paired


def _count_ingest(now: datetime, messages: int, result: IngestResult, rejected: int) -> None:
    minute = minute_of(int(now.timestamp() * 1_000_000))
    IngestRollup.objects.get_or_create(minute=minute)
    IngestRollup.objects.filter(minute=minute).update(
        messages=F("messages") + messages,
        spans=F("spans") + result.new_spans,
        duplicate_spans=F("duplicate_spans") + result.duplicate_spans,
        rejected=F("rejected") + rejected,
        **{
            f"spans_{wire_format}": F(f"spans_{wire_format}") + result.new_by_format[wire_format]
            for wire_format in WIRE_FORMATS
            if result.new_by_format[wire_format]
        },
    )
