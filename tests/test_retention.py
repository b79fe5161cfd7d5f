"""Raw spans go after SPAN_RETENTION_HOURS and rollups after ROLLUP_RETENTION_DAYS, in bounded batches."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from topology import retention
from topology.models import ConsumerPartitionLag, DeadLetter, EdgeRollup, RouteHopRollup, Service, Span

pytestmark = pytest.mark.django_db


def make_span(service, index, started_at):
    return Span(
        trace_id=f"{index:032x}",
        span_id=f"{index + 1:016x}",
        service=service,
        kind="server",
        name="GET /",
        protocol="http",
        started_at=started_at,
        duration_us=1000,
        paired=True,
    )


def test_spans_and_rollups_past_their_retention_are_deleted_and_the_rest_stay(settings):
    settings.SPAN_RETENTION_HOURS = 24
    settings.ROLLUP_RETENTION_DAYS = 14
    now = timezone.now()
    service = Service.objects.create(name="api")
    Span.objects.bulk_create(
        [make_span(service, i, now - timedelta(hours=30)) for i in range(25)]
        + [make_span(service, 100 + i, now - timedelta(hours=1)) for i in range(5)]
    )
    minute = now.replace(second=0, microsecond=0)
    EdgeRollup.objects.create(
        minute=minute - timedelta(days=15), source=service, target=service, protocol="http", count=1
    )
    EdgeRollup.objects.create(
        minute=minute - timedelta(days=13), source=service, target=service, protocol="http", count=2
    )
    for days, count in ((15, 1), (13, 2)):
        RouteHopRollup.objects.create(
            minute=minute - timedelta(days=days),
            service=service,
            operation="GET /",
            path="[]",
            path_key="0",
            count=count,
        )
    DeadLetter.objects.create(reason="bad_id", topic="t", partition=0, offset=1, received_at=now - timedelta(days=20))
    for age in (20, 1):
        ConsumerPartitionLag.objects.create(
            group="g",
            topic="t",
            partition=0,
            sampled_at=now - timedelta(days=age),
            committed_offset=1,
            end_offset=2,
            lag_messages=1,
            offset_moved_at=now,
            lag_seconds_method="record_timestamp",
            status="OK",
        )

    deleted = retention.prune(now)

    assert deleted["spans"] == 25 and Span.objects.count() == 5
    assert list(EdgeRollup.objects.values_list("count", flat=True)) == [2]
    assert list(RouteHopRollup.objects.values_list("count", flat=True)) == [2]
    assert not DeadLetter.objects.exists()
    assert ConsumerPartitionLag.objects.count() == 1


def test_a_shorter_span_retention_deletes_spans_sooner_and_leaves_rollups_alone(settings):
    settings.SPAN_RETENTION_HOURS = 2
    now = timezone.now()
    service = Service.objects.create(name="api")
    Span.objects.bulk_create(
        [make_span(service, 1, now - timedelta(hours=2, minutes=1)), make_span(service, 2, now - timedelta(hours=1))]
    )
    EdgeRollup.objects.create(
        minute=now.replace(second=0, microsecond=0) - timedelta(hours=3),
        source=service,
        target=service,
        protocol="http",
        count=1,
    )

    deleted = retention.prune(now)

    assert deleted["spans"] == 1
    assert list(Span.objects.values_list("trace_id", flat=True)) == [f"{2:032x}"]
    assert EdgeRollup.objects.count() == 1


def test_a_longer_rollup_retention_keeps_rollups_dead_letters_and_lag_samples_longer(settings):
    settings.ROLLUP_RETENTION_DAYS = 30
    now = timezone.now()
    service = Service.objects.create(name="api")
    for age_days, count in ((31, 1), (29, 2)):
        EdgeRollup.objects.create(
            minute=now.replace(second=0, microsecond=0) - timedelta(days=age_days),
            source=service,
            target=service,
            protocol="http",
            count=count,
        )
        DeadLetter.objects.create(
            reason="bad_id", topic="t", partition=0, offset=count, received_at=now - timedelta(days=age_days)
        )
        ConsumerPartitionLag.objects.create(
            group="g",
            topic="t",
            partition=0,
            sampled_at=now - timedelta(days=age_days),
            committed_offset=count,
            end_offset=count + 1,
            lag_messages=1,
            offset_moved_at=now,
            lag_seconds_method="record_timestamp",
            status="OK",
        )

    retention.prune(now)

    assert list(EdgeRollup.objects.values_list("count", flat=True)) == [2]
    assert list(DeadLetter.objects.values_list("offset", flat=True)) == [2]
    assert list(ConsumerPartitionLag.objects.values_list("committed_offset", flat=True)) == [2]


def test_deletion_goes_in_batches_until_none_is_left():
    service = Service.objects.create(name="api")
    old = timezone.now() - timedelta(days=3)
    Span.objects.bulk_create([make_span(service, i, old) for i in range(30)])

    assert retention.delete_older_than(Span.objects.all(), time.monotonic() + 60, batch=7) == 30
    assert not Span.objects.exists()


def test_deletion_past_its_deadline_stops_after_one_batch():
    service = Service.objects.create(name="api")
    old = timezone.now() - timedelta(days=3)
    Span.objects.bulk_create([make_span(service, i, old) for i in range(30)])

    assert retention.delete_older_than(Span.objects.all(), time.monotonic(), batch=7) == 7
    assert Span.objects.count() == 23
