from collections.abc import Iterable

from django.db import models
from django.db.models import Q
from django.utils import timezone

from topology.span_record import WIRE_FORMATS


class DeadLetter(models.Model):
    """A message, or one span of it, that could not be ingested, kept with where it came from."""

    reason = models.CharField(max_length=64)
    detail = models.TextField(blank=True)
    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    payload_head = models.TextField(blank=True, help_text="The start of the raw payload.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        indexes = [
            models.Index(fields=["received_at"], name="deadletter_received_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.reason} at {self.topic}[{self.partition}]@{self.offset}"


class IngestRollup(models.Model):
    """What our own span consumer did in one minute: the throughput on /api/ingest/."""

    minute = models.DateTimeField(unique=True)
    messages = models.PositiveBigIntegerField(default=0)
    spans = models.PositiveBigIntegerField(default=0)
    duplicate_spans = models.PositiveBigIntegerField(default=0)
    rejected = models.PositiveBigIntegerField(default=0)
    # New spans by the wire format they came in (topology.span_record.WIRE_FORMATS).
    spans_zipkin_json = models.PositiveBigIntegerField(default=0)
    spans_otlp_proto = models.PositiveBigIntegerField(default=0)
    spans_otlp_json = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"ingest at {self.minute:%Y-%m-%d %H:%M}"

    @property
    def spans_by_format(self) -> dict[str, int]:
        return {wire_format: getattr(self, f"spans_{wire_format}") for wire_format in WIRE_FORMATS}


# (topic, partition) of a stream, and a message's place in it.
StreamPartition = tuple[str, int]


class StreamPositionQuerySet(models.QuerySet["StreamPosition"]):
    def of(self, partitions: Iterable[StreamPartition]) -> dict[StreamPartition, int]:
        """The next offset to count in each of the partitions counted from before; the others are absent."""
        wanted = set(partitions)
        rows = self.filter(topic__in={topic for topic, _ in wanted}).values_list("topic", "partition", "next_offset")
        return {(topic, partition): offset for topic, partition, offset in rows if (topic, partition) in wanted}

    def claim(self, offsets: Iterable[tuple[str, int, int]]) -> set[tuple[str, int, int]]:
        """Of the messages at ``offsets`` (topic, partition, offset), the ones not counted yet, which the
        caller's transaction now counts: their partitions' positions move past them when it commits.

        Runs inside the caller's transaction, which stores what the messages hold. The positions are
        locked (SELECT … FOR UPDATE, in one order, so that two claimers never deadlock): a consumer that
        still believes it owns a partition after a rebalance waits for the new owner's transaction,
        then finds the position past its batch and counts nothing. On SQLite, which takes no row locks,
        the second writer fails with "database is locked" and reads its batch again.
        """
        wanted = list(offsets)
        if not wanted:
            return set()
        ends: dict[StreamPartition, int] = {}
        for topic, partition, offset in wanted:
            ends[(topic, partition)] = max(ends.get((topic, partition), 0), offset + 1)
        StreamPosition.objects.bulk_create(
            [StreamPosition(topic=t, partition=p, next_offset=0) for t, p in sorted(ends)],
            ignore_conflicts=True,
        )
        by_topic: dict[str, list[int]] = {}
        for topic, partition in ends:
            by_topic.setdefault(topic, []).append(partition)
        only_these = Q()
        for topic, partitions in by_topic.items():
            only_these |= Q(topic=topic, partition__in=partitions)
        locked = self.select_for_update().filter(only_these).order_by("topic", "partition")
        positions = {(row.topic, row.partition): row.next_offset for row in locked}
        fresh = {(t, p, o) for t, p, o in wanted if o >= positions[(t, p)]}
        now = timezone.now()
        for (topic, partition), end in ends.items():
            if end > positions[(topic, partition)]:
                self.filter(topic=topic, partition=partition).update(next_offset=end, updated_at=now)
        return fresh


class StreamPosition(models.Model):
    """How far the database has counted one partition: what makes counting exactly once.

    Kafka delivers at least once: a batch comes again after a crash, a rebalance, or a commit to Kafka
    that failed after the database had committed. The position is stored in the transaction that
    stores what the batch counted, as Kafka's consumer documentation describes for offsets kept outside
    Kafka (https://kafka.apache.org/documentation/#consumerconfigs, "Storing Offsets Outside Kafka"),
    so a redelivered message is recognised by its offset and skipped, never counted twice. Offsets are
    committed to Kafka as well, for the lag tools, but counting never relies on them.

    The position belongs to the database that counted, not to the consumer group: a renamed
    KAFKA_CONSUMER_GROUP carries on where counting stopped instead of counting the topics again. One
    database follows one Kafka cluster.
    """

    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    next_offset = models.BigIntegerField(help_text="The offset of the first message not counted yet.")
    updated_at = models.DateTimeField(default=timezone.now)

    objects = StreamPositionQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["topic", "partition"], name="streamposition_unique_partition")]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.next_offset}"
