"""On PostgreSQL the span table is partitioned by the hour of ``started_at``, so that retention drops
whole hours instead of deleting rows.

At 100,000 spans/s an hour is 360 million rows: deleting them row by row writes as much WAL as
inserting them did and leaves the table to vacuum, where ``DROP TABLE`` of the hour's partition is
one catalogue change (PostgreSQL's documentation, "Table Partitioning", 5.11.3: "Partition
Maintenance"). https://www.postgresql.org/docs/15/ddl-partitioning.html

- Partitions are made ``HOURS_AHEAD`` hours ahead of the clock by the retention task, which runs
  every minute, so an hour's spans never wait for their partition.
- A span whose hour has no partition (a clock far off, or an outage of the retention task) goes to
  the DEFAULT partition: it is stored and counted like any other, and never fails its batch. When its
  hour's partition is made, the rows of that hour move from the default partition into it.
- Retention drops a partition once its last hour is older than SPAN_RETENTION_HOURS, so spans are kept
  between SPAN_RETENTION_HOURS and one hour longer. The default partition is pruned row by row.

SQLite has no partitions: there, retention deletes rows (``topology.retention``).
"""

import logging
from datetime import UTC, datetime, timedelta

from django.db import OperationalError, connection, transaction

from topology.models import Span

logger = logging.getLogger(__name__)

PARTITION_SPAN = timedelta(hours=1)
HOURS_AHEAD = 3
DEFAULT_PARTITION = f"{Span._meta.db_table}_default"
PARTITION_PREFIX = f"{Span._meta.db_table}_p"
# Making or dropping a partition locks the span table for a moment. Behind a long query it waits at
# most this long, rather than holding every insert queued behind it; the next minute's run tries again.
LOCK_TIMEOUT = "2s"


def is_partitioned() -> bool:
    """Whether the span table is a partitioned PostgreSQL table (migration 0011 made it one)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [Span._meta.db_table])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def partition_name(hour: datetime) -> str:
    return f"{PARTITION_PREFIX}{hour:%Y%m%d%H}"


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def span_partitions() -> dict[datetime, str]:
    """The hourly partitions of the span table: first hour -> table name; none on SQLite. The default
    partition is not among them."""
    if not is_partitioned():
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [Span._meta.db_table],
        )
        names = [row[0] for row in cursor.fetchall()]
    partitions = {}
    for name in names:
        if name.startswith(PARTITION_PREFIX):
            hour = datetime.strptime(name.removeprefix(PARTITION_PREFIX) + "+0000", "%Y%m%d%H%z")
            partitions[hour] = name
    return partitions


def create_span_partitions(now: datetime, hours_ahead: int = HOURS_AHEAD, hours_back: int = 1) -> list[str]:
    """Makes the missing hourly partitions from ``hours_back`` hours before ``now`` to ``hours_ahead``
    after it; returns their names. Rows of their hours waiting in the default partition move into them."""
    if not is_partitioned():
        return []
    existing = span_partitions()
    first = hour_of(now) - hours_back * PARTITION_SPAN
    created = []
    for step in range(hours_back + hours_ahead + 1):
        hour = first + step * PARTITION_SPAN
        if hour in existing:
            continue
        try:
            _create_partition(hour)
        except OperationalError as error:
            logger.warning("Span partition for %s not made this time: %s", hour.isoformat(), error)
            break
        created.append(partition_name(hour))
    return created


def _create_partition(hour: datetime) -> None:
    table, name = Span._meta.db_table, partition_name(hour)
    start, end = hour.isoformat(), (hour + PARTITION_SPAN).isoformat()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # Taken first, so that no span of the hour enters the default partition between the move and
        # the attach, whose check that none is left there would then fail.
        cursor.execute(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE")
        # Made apart and attached, rather than CREATE TABLE … PARTITION OF, which locks the whole span
        # table against inserts: ATTACH PARTITION takes a lock that lets them through.
        cursor.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS)")
        cursor.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE started_at >= '{start}' AND started_at < '{end}'"
            f" RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )
        cursor.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')")


def drop_span_partitions_before(cutoff: datetime) -> int:
    """Drops the partitions whose every span started before ``cutoff``; returns how many went."""
    dropped = 0
    for hour, name in sorted(span_partitions().items()):
        if hour + PARTITION_SPAN > cutoff:
            break
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                cursor.execute(f"DROP TABLE {name}")
        except OperationalError as error:
            logger.warning("Span partition %s not dropped this time: %s", name, error)
            break
        dropped += 1
    return dropped
