"""Deletes what is older than its retention, in bounded batches so no statement holds locks for long."""

import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from topology.changes import LAG, TRAFFIC_VIEWS, announce_on_commit
from topology.models import (
    ConsumerPartitionLag,
    DeadLetter,
    EdgeRollup,
    IngestRollup,
    InstanceRollup,
    RouteHopRollup,
    RouteRollup,
    Span,
)
from topology.span_partitions import create_span_partitions, drop_span_partitions_before, span_partitions

DELETE_BATCH = 5000
# Beat runs prune every minute: a run may spend most of that minute deleting, so retention keeps up
# with any ingest rate the database itself can take, and one run never overlaps the next.
PRUNE_BUDGET_SECONDS = 45


def delete_older_than(
    queryset: QuerySet[Any], deadline: float, batch: int = DELETE_BATCH, views: tuple[str, ...] = ()
) -> int:
    """Deletes a queryset's rows a batch at a time until none is left or the monotonic ``deadline``
    has passed (one batch at least), announcing ``views`` after each batch; returns how many went."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(queryset.values_list("pk", flat=True)[:batch])
            if not ids:
                return deleted
            deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]
            announce_on_commit(*views)
        if time.monotonic() >= deadline:
            return deleted


def prune(now: datetime | None = None, seconds: float = PRUNE_BUDGET_SECONDS) -> dict[str, int]:
    """The one write path of retention: everything older than SPAN_RETENTION_HOURS (spans) and
    ROLLUP_RETENTION_DAYS (the rest) goes, within ``seconds``; returns how many rows of each kind.

    On PostgreSQL, spans go by the hourly partition (``topology.span_partitions``), whose next hours it
    makes first; only the rows outside any partition, older than every partition left, are deleted
    one by one. On SQLite every span is deleted as a row.
    """
    now = now or timezone.now()
    deadline = time.monotonic() + seconds
    span_cutoff = now - timedelta(hours=settings.SPAN_RETENTION_HOURS)
    rollup_cutoff = now - timedelta(days=settings.ROLLUP_RETENTION_DAYS)
    create_span_partitions(now)
    deleted = {"span_partitions": drop_span_partitions_before(span_cutoff)}
    if deleted["span_partitions"]:
        announce_on_commit(*TRAFFIC_VIEWS)
    row_cutoff = min([span_cutoff, *span_partitions()])
    spans = Span.objects.filter(started_at__lt=row_cutoff)
    deleted["spans"] = delete_older_than(spans, deadline, views=TRAFFIC_VIEWS)
    for model in (EdgeRollup, InstanceRollup, RouteRollup, RouteHopRollup, IngestRollup):
        rollups = model.objects.filter(minute__lt=rollup_cutoff)
        # The model's _meta.model_name, which django-stubs types as optional.
        deleted[model.__name__.lower()] = delete_older_than(rollups, deadline, views=TRAFFIC_VIEWS)
    deleted["deadletters"] = delete_older_than(DeadLetter.objects.filter(received_at__lt=rollup_cutoff), deadline)
    samples = ConsumerPartitionLag.objects.filter(sampled_at__lt=rollup_cutoff)
    deleted["lag_samples"] = delete_older_than(samples, deadline, views=(LAG,))
    return deleted
