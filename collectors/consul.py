"""The Consul collector: services, instances, health and weights, from every configured datacenter.

One run of the ``sync_consul`` task is one round of blocking queries; beat starts the next. Per
datacenter a round sends two blocking queries with the indexes the last round kept
(``ConsulDatacenter``), and Consul holds each until something changes or the wait ends:

- ``/v1/catalog/services`` moves when an instance is registered or deregistered. Then every service of
  the datacenter is read again from ``/v1/health/service/:service``; only those whose own index moved
  are reconciled.
- ``/v1/health/state/any`` moves when a check changes. The checks say which services they belong to, so
  only those services are read again.

While nothing changes, a round is these two requests per datacenter, whatever the number of services.
An index that goes backwards (a rebuilt cluster, a restored snapshot) or is 0 forces a full resync, as
https://developer.hashicorp.com/consul/api-docs/features/blocking asks.

When Consul cannot be reached, times out, answers 5xx or refuses the token, nothing in the database
changes: ``SourceStatus`` "consul:<dc>" says since when and why the data is stale, and the datacenter
is not asked again before an exponential backoff has passed.

A datacenter meshscope no longer reads (Consul is no longer configured, ``CONSUL_DATACENTERS`` leaves it
out, or ``/v1/catalog/datacenters`` no longer lists it) is forgotten: its status and its indexes go, so
the pages stop showing it, and its instances' health, which nobody reads any more, shows as unknown.
"""

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import timedelta
from typing import Any

import consul
from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from collectors.consul_client import CONSUL_ERRORS, connect, describe
from collectors.consul_reconcile import BATCH_SERVICES, is_service_name, log_left_out, mark_absent, reconcile
from topology.changes import REGISTRY_VIEWS, announce_on_commit
from topology.models import SourceStatus
from topology.models.services import ConsulDatacenter
from topology.models.sources import CONSUL_PREFIX

log = logging.getLogger(__name__)

TASK_NAME = "collectors.sync_consul"
# Concurrent reads of /v1/health/service when many services changed.
READERS = 16
# After an early answer, the pause before the next blocking query of the same endpoint: a busy cluster
# must not turn the watch into a tight loop.
REWATCH_AFTER_SECONDS = 0.5
BACKOFF_FIRST_SECONDS = 5
BACKOFF_MAX_SECONDS = 60
# A run that died (a killed worker) frees its datacenter after this much longer than a round can take.
LEASE_MARGIN_SECONDS = 120


# What a blocking query brings back: (when it came, monotonic; its X-Consul-Index; the answer's body).
Answer = tuple[float, int, Any]
Query = Callable[[ConsulDatacenter, str], Answer]
Handler = Callable[[ConsulDatacenter, float, int, Any], None]


class UnexpectedAnswer(Exception):
    """Consul answered, but not with what its documentation describes."""


@shared_task(name=TASK_NAME, ignore_result=True)
def sync_consul() -> None:
    if not settings.CONSUL_HTTP_ADDR:
        SourceStatus.objects.update_or_create(name="consul", defaults={"configured": False})
        _forget_datacenters_but(())
        return
    if settings.CONSUL_DATACENTERS:
        # Nothing is discovered: a failure of discovery from before is no longer a source either.
        SourceStatus.objects.filter(name="consul").delete()
        _forget_datacenters_but(settings.CONSUL_DATACENTERS)
    else:
        SourceStatus.objects.filter(name="consul", configured=False).delete()
    now = timezone.now()
    known = list(ConsulDatacenter.objects.all())
    if known and all(row.retry_after and row.retry_after > now for row in known):
        return
    names = settings.CONSUL_DATACENTERS or _discover(known)
    rows = [row for row in map(_lease, names or []) if row is not None]
    if not rows:
        return
    try:
        Round(rows).run()
    finally:
        ConsulDatacenter.objects.filter(pk__in=[row.pk for row in rows]).update(leased_until=None)


def _discover(known: Sequence[ConsulDatacenter]) -> list[str]:
    """Every datacenter the agent knows of, when CONSUL_DATACENTERS does not list them."""
    try:
        names = connect().catalog.datacenters()
    except CONSUL_ERRORS as error:
        reason = describe(error)
        for row in known:
            _back_off(row, reason)
        if not known:
            SourceStatus.record_failure("consul", reason)
        log.warning("Consul datacenters unknown: %s", reason)
        return []
    SourceStatus.objects.filter(name="consul").delete()
    listed = [name for name in names if isinstance(name, str) and name] if isinstance(names, list) else []
    _forget_datacenters_but(listed)
    return listed


def _forget_datacenters_but(read: Collection[str]) -> None:
    """Forgets every datacenter but those read: its ``SourceStatus`` and its indexes.

    Its instances stay (spans and rollups point at them) with the health Consul last gave, which the
    pages then show as unknown (``topology.models.sources.HealthFreshness``). A datacenter that a run
    holds is left to a later call: that run still writes its indexes and its status.
    """
    now = timezone.now()
    keep = {name[:128] for name in read}
    held = Q(leased_until__gt=now)
    keep |= set(ConsulDatacenter.objects.filter(held).values_list("name", flat=True))
    statuses = SourceStatus.objects.filter(name__startswith=CONSUL_PREFIX).values_list("name", flat=True)
    known = {name.removeprefix(CONSUL_PREFIX) for name in statuses}
    known |= set(ConsulDatacenter.objects.values_list("name", flat=True))
    gone = known - keep
    if not gone:
        return
    with transaction.atomic():
        ConsulDatacenter.objects.filter(name__in=gone).exclude(held).delete()
        SourceStatus.objects.filter(name__in=[CONSUL_PREFIX + name for name in gone]).delete()
        announce_on_commit(*REGISTRY_VIEWS)
    log.info("Consul datacenters no longer read, forgotten: %s", ", ".join(sorted(gone)))


def _lease(name: str) -> ConsulDatacenter | None:
    """The datacenter's state, if no other run holds it and its backoff has passed."""
    now = timezone.now()
    row, _ = ConsulDatacenter.objects.get_or_create(name=name[:128])
    if row.retry_after and row.retry_after > now:
        return None
    lease = now + timedelta(seconds=2 * settings.CONSUL_BLOCKING_WAIT_SECONDS + LEASE_MARGIN_SECONDS)
    free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    if not ConsulDatacenter.objects.filter(free, pk=row.pk).update(leased_until=lease):
        return None
    return row


def _back_off(row: ConsulDatacenter, reason: str) -> None:
    failures = SourceStatus.record_failure(CONSUL_PREFIX + row.name, reason)
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (failures - 1))
    row.retry_after = timezone.now() + timedelta(seconds=delay)
    row.save(update_fields=["retry_after"])


def _index(value: Any) -> int:
    """X-Consul-Index as a number; anything else counts as 0, which forces a resync."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _check_digests(checks: Iterable[Any]) -> dict[str, str]:
    """{service name: digest of its checks}; node checks, which every service on the node shares, under ""."""
    by_service: dict[str, list[str]] = {}
    for check in checks:
        if not isinstance(check, dict):
            continue
        name = check.get("ServiceName")
        if not isinstance(name, str):
            name = ""
        elif name and not is_service_name(name):
            continue  # a service that is never read: its checks call for no read either
        fields = [check.get(key) for key in ("Node", "CheckID", "ServiceID", "Status", "Output")]
        by_service.setdefault(name, []).append(json.dumps(fields, default=str))
    return {
        name: hashlib.blake2b("\n".join(sorted(lines)).encode(), digest_size=12).hexdigest()
        for name, lines in by_service.items()
    }


class Round:
    """One run: the blocking queries of every leased datacenter, then the reads their answers call for.

    HTTP happens in threads; the database is written from the calling thread only.
    """

    def __init__(self, rows: Sequence[ConsulDatacenter]) -> None:
        self.rows = rows
        self.failed: set[str] = set()
        # (datacenter, service) -> when this round last asked for the service
        self.read_at: dict[tuple[str, str], float] = {}
        self.local = threading.local()
        self.readers: ThreadPoolExecutor | None = None  # while run() runs

    def client(self) -> consul.Consul:
        # One client, and so one HTTP session, per thread: requests' sessions are not shared safely.
        if not hasattr(self.local, "client"):
            self.local.client = connect()
        return self.local.client

    def run(self) -> None:
        """Watches until the blocking wait has passed, acting on each answer as it comes."""
        deadline = time.monotonic() + settings.CONSUL_BLOCKING_WAIT_SECONDS
        with ThreadPoolExecutor(2 * len(self.rows)) as watchers, ThreadPoolExecutor(READERS) as self.readers:
            pending: dict[Future[Answer], tuple[Query, Handler, ConsulDatacenter]] = {}

            def watch(query: Query, handle: Handler, row: ConsulDatacenter, delay: float = 0.0) -> None:
                pending[watchers.submit(self.block, query, row, deadline, delay)] = (query, handle, row)

            for row in self.rows:
                watch(self.watch_catalog, self.on_catalog, row)
                watch(self.watch_checks, self.on_checks, row)
            # A datacenter seen for the first time answers both queries at once. Acting on the first answer
            # before the second is in would have the second, received while those reads are under way, look
            # newer than them, and call for the same services again.
            futures.wait(
                [future for future, (_, _, row) in pending.items() if not (row.catalog_index or row.checks_index)]
            )
            while pending:
                done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for future in done:
                    query, handle, row = pending.pop(future)
                    if row.name in self.failed:
                        continue
                    try:
                        handle(row, *future.result())
                    except (*CONSUL_ERRORS, UnexpectedAnswer) as error:
                        self.failed.add(row.name)
                        _back_off(row, describe(error))
                        log.warning("Consul datacenter %s is stale: %s", row.name, describe(error))
                        continue
                    # Consul answered early because something changed: keep watching until the deadline,
                    # no more often than the blocking-queries page's advice to rate-limit allows.
                    if deadline - time.monotonic() > REWATCH_AFTER_SECONDS:
                        watch(query, handle, row, delay=REWATCH_AFTER_SECONDS)
        for row in self.rows:
            if row.name not in self.failed:
                SourceStatus.record_success(CONSUL_PREFIX + row.name)
                if row.retry_after:
                    row.retry_after = None
                    row.save(update_fields=["retry_after"])

    # --- the two blocking queries (in threads) ---------------------------------------------------------

    def block(self, query: Query, row: ConsulDatacenter, deadline: float, delay: float) -> Answer:
        time.sleep(delay)
        wait = max(deadline - time.monotonic(), 0.001)
        return query(row, f"{int(wait * 1000)}ms")

    def watch_catalog(self, row: ConsulDatacenter, wait: str) -> Answer:
        index, services = self.client().catalog.services(index=row.catalog_index or None, wait=wait, dc=row.name)
        return time.monotonic(), _index(index), services

    def watch_checks(self, row: ConsulDatacenter, wait: str) -> Answer:
        index, checks = self.client().health.state("any", index=row.checks_index or None, wait=wait, dc=row.name)
        return time.monotonic(), _index(index), checks

    # --- what their answers call for (in the calling thread) -------------------------------------------

    def on_catalog(self, row: ConsulDatacenter, received_at: float, index: int, services: Any) -> None:
        if not isinstance(services, dict):
            raise UnexpectedAnswer(f"/v1/catalog/services answered a {type(services).__name__}, not an object")
        resync = index == 0 or index < row.catalog_index
        if index == row.catalog_index and not resync:
            return
        names = [name for name in services if is_service_name(name)]
        for name in services.keys() - set(names):
            log_left_out(name)
        self.read_and_reconcile(row, names if resync else self.not_read_since(row, names, received_at), force=resync)
        mark_absent(row.name, names, timezone.now())
        row.service_indexes = {name: row.service_indexes[name] for name in names if name in row.service_indexes}
        # The blocking-queries page: an index must be at least 1, else queries stop blocking.
        row.catalog_index = max(index, 1)
        row.save(update_fields=["catalog_index", "service_indexes"])

    def on_checks(self, row: ConsulDatacenter, received_at: float, index: int, checks: Any) -> None:
        if not isinstance(checks, list):
            raise UnexpectedAnswer(f"/v1/health/state/any answered a {type(checks).__name__}, not a list")
        resync = index == 0 or index < row.checks_index
        if index == row.checks_index and not resync:
            return
        digests = _check_digests(checks)
        names: Collection[str]
        if resync or digests.get("") != row.check_digests.get(""):
            names = set(row.service_indexes) | set(digests)
        else:
            names = {
                name
                for name in digests.keys() | row.check_digests.keys()
                if digests.get(name) != row.check_digests.get(name)
            }
        names = self.not_read_since(row, [name for name in names if name], received_at)
        self.read_and_reconcile(row, names, force=resync)
        row.check_digests = digests
        row.checks_index = max(index, 1)
        row.save(update_fields=["checks_index", "check_digests", "service_indexes"])

    def not_read_since(self, row: ConsulDatacenter, names: Iterable[str], received_at: float) -> list[str]:
        """Leaves out the services this round read after the answer came: they are as fresh as it is."""
        return [name for name in names if self.read_at.get((row.name, name), -1) < received_at]

    def read_and_reconcile(self, row: ConsulDatacenter, names: Iterable[str], force: bool) -> None:
        """Reads the services, reconciling each batch of answers while the next ones are on their way."""
        if self.readers is None:
            raise RuntimeError("Round.read_and_reconcile reads with run()'s readers: call it from run()")
        answers: dict[str, list[Any]] = {}
        reads: dict[Future[tuple[int, list[Any]]], str] = {}
        for name in names:
            reads[self.readers.submit(self.read_service, row.name, name)] = name
        try:
            for future in as_completed(reads):
                index, entries = future.result()
                name = reads[future]
                if force or index == 0 or index != row.service_indexes.get(name):
                    answers[name] = entries
                    row.service_indexes[name] = index
                if len(answers) >= BATCH_SERVICES:
                    reconcile(row.name, answers, timezone.now())
                    answers = {}
        finally:
            for future in reads:
                future.cancel()
        reconcile(row.name, answers, timezone.now())

    def read_service(self, datacenter: str, name: str) -> tuple[int, list[Any]]:
        self.read_at[(datacenter, name)] = time.monotonic()
        index, entries = self.client().health.service(name, dc=datacenter)
        return _index(index), entries if isinstance(entries, list) else []
