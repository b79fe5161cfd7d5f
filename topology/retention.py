"""Deletes what is older than its retention, in bounded batches so no statement holds locks for long."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from topology.models import ConsumerPartitionLag, DeadLetter, EdgeRollup, IngestRollup, InstanceRollup, RouteRollup, Span

DELETE_BATCH = 5000


def delete_older_than(queryset, batch=DELETE_BATCH, max_batches=100):
    """Deletes a queryset's rows a batch at a time; returns how many went."""
    deleted = 0
    for _ in range(max_batches):
        with transaction.atomic():
            ids = list(queryset.values_list("pk", flat=True)[:batch])
            if not ids:
                break
            deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]
    return deleted


def prune(now=None):
    now = now or timezone.now()
    span_cutoff = now - timedelta(hours=settings.SPAN_RETENTION_HOURS)
    rollup_cutoff = now - timedelta(days=settings.ROLLUP_RETENTION_DAYS)
    deleted = {"spans": delete_older_than(Span.objects.filter(started_at__lt=span_cutoff))}
    for model in (EdgeRollup, InstanceRollup, RouteRollup, IngestRollup):
        deleted[model._meta.model_name] = delete_older_than(model.objects.filter(minute__lt=rollup_cutoff))
    deleted["deadletters"] = delete_older_than(DeadLetter.objects.filter(received_at__lt=rollup_cutoff))
    deleted["lag_samples"] = delete_older_than(ConsumerPartitionLag.objects.filter(sampled_at__lt=rollup_cutoff))
    return deleted
