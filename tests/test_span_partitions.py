"""On PostgreSQL, spans live in hourly partitions: retention drops whole hours, the next hours are made
ahead of the clock, and a span whose hour has no partition is stored all the same."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Sum

from tests.seed import checkout
from topology import retention
from topology.ingestion import store_spans
from topology.models import EdgeRollup, RouteRollup, Span
from topology.span_partitions import DEFAULT_PARTITION, create_span_partitions, partition_name, span_partitions

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="SQLite has no partitions: it deletes rows"),
]

# Far from the clock, so that the partitions the migration made for today play no part.
NOW = datetime(2030, 1, 10, 12, 30, tzinfo=UTC)


def start_us(moment):
    return int(moment.timestamp() * 1_000_000)


def tables_holding(trace_id):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT tableoid::regclass::text FROM {Span._meta.db_table} WHERE trace_id = %s", [trace_id]
        )
        return {row[0] for row in cursor.fetchall()}


def test_retention_drops_the_hours_past_span_retention_and_keeps_the_rest(settings):
    settings.SPAN_RETENTION_HOURS = 24
    create_span_partitions(NOW - timedelta(hours=30), hours_back=0, hours_ahead=2)
    old, recent = (
        checkout(start_us=start_us(NOW - timedelta(hours=30))),
        checkout(start_us=start_us(NOW - timedelta(hours=1))),
    )
    store_spans(old.records + recent.records)
    assert tables_holding(old.trace_id) == {partition_name(datetime(2030, 1, 9, 6, tzinfo=UTC))}
    calls = EdgeRollup.objects.aggregate(calls=Sum("count"))["calls"]

    deleted = retention.prune(NOW)

    hours = set(span_partitions())
    assert not {datetime(2030, 1, 9, hour, tzinfo=UTC) for hour in (6, 7, 8)} & hours
    assert deleted["span_partitions"] >= 3
    assert not Span.objects.filter(trace_id=old.trace_id).exists()
    assert Span.objects.filter(trace_id=recent.trace_id).count() == len(recent.records)
    # Raw spans go; what was counted from them stays for ROLLUP_RETENTION_DAYS.
    assert EdgeRollup.objects.aggregate(calls=Sum("count"))["calls"] == calls


def test_a_partition_goes_only_once_its_last_hour_is_past_retention(settings):
    settings.SPAN_RETENTION_HOURS = 24
    create_span_partitions(NOW - timedelta(hours=24), hours_back=0, hours_ahead=0)
    trace = checkout(start_us=start_us(NOW - timedelta(hours=24, minutes=20)))
    store_spans(trace.records)

    retention.prune(NOW)

    # 12:10 the day before is past retention at 12:30, but its hour runs until 13:00: it stays an hour.
    assert datetime(2030, 1, 9, 12, tzinfo=UTC) in span_partitions()
    assert Span.objects.filter(trace_id=trace.trace_id).count() == len(trace.records)


def test_partitions_are_made_ahead_of_the_clock():
    retention.prune(NOW)

    hours = set(span_partitions())
    assert {datetime(2030, 1, 10, hour, tzinfo=UTC) for hour in range(11, 16)} <= hours
    assert retention.prune(NOW)["span_partitions"] == 0
    assert create_span_partitions(NOW) == []


def test_a_span_whose_hour_has_no_partition_is_stored_and_moves_into_its_partition_when_made():
    moment = datetime(2031, 3, 1, 10, 15, tzinfo=UTC)
    assert moment.replace(minute=0) not in span_partitions()
    trace = checkout(start_us=start_us(moment))

    result = store_spans(trace.records)

    assert result.new_spans == len(trace.records)
    assert tables_holding(trace.trace_id) == {DEFAULT_PARTITION}
    assert RouteRollup.objects.get(minute=moment.replace(second=0)).count == 1

    assert create_span_partitions(moment, hours_back=0, hours_ahead=0) == [partition_name(moment.replace(minute=0))]

    assert tables_holding(trace.trace_id) == {partition_name(moment.replace(minute=0))}
    assert Span.objects.filter(trace_id=trace.trace_id).count() == len(trace.records)
    # Moved, the spans are still the ones stored: sent again, they are found and not counted twice.
    assert store_spans(trace.records).new_spans == 0
    assert RouteRollup.objects.get(minute=moment.replace(second=0)).count == 1
