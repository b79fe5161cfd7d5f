"""Deletes what is older than its retention, in bounded batches so no statement holds locks for long."""

import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from topology.models import (
    ConsumerPartitionLag,
    DeadLetter,
    EdgeRollup,
    IngestRollup,
    InstanceRollup,
    RouteRollup,
    Span,
)

DELETE_BATCH = 5000
# Beat runs prune every minute: a run may spend most of that minute deleting, so retention keeps up
# with any ingest rate the database itself can take, and one run never overlaps the next.
PRUNE_BUDGET_SECONDS = 45


def delete_older_than(queryset, deadline, batch=DELETE_BATCH):
    """Deletes a queryset's rows a batch at a time until none is left or the monotonic ``deadline``
    has passed (one batch at least); returns how many went."""
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(queryset.values_list("pk", flat=True)[:batch])
            if not ids:
                return deleted
            deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]
        if time.monotonic() >= deadline:
            return deleted


def prune(now=None, seconds=PRUNE_BUDGET_SECONDS):
    now = now or timezone.now()
    deadline = time.monotonic() + seconds
    span_cutoff = now - timedelta(hours=settings.SPAN_RETENTION_HOURS)
    rollup_cutoff = now - timedelta(days=settings.ROLLUP_RETENTION_DAYS)
    deleted = {"spans": delete_older_than(Span.objects.filter(started_at__lt=span_cutoff), deadline)}
    for model in (EdgeRollup, InstanceRollup, RouteRollup, IngestRollup):
        deleted[model._meta.model_name] = delete_older_than(model.objects.filter(minute__lt=rollup_cutoff), deadline)
    deleted["deadletters"] = delete_older_than(DeadLetter.objects.filter(received_at__lt=rollup_cutoff), deadline)
    deleted["lag_samples"] = delete_older_than(
        ConsumerPartitionLag.objects.filter(sampled_at__lt=rollup_cutoff), deadline
    )
    return deleted
