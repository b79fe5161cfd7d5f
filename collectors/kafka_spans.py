"""Consumes trace spans from Kafka into the database, counting each message exactly once.

Kafka delivers at least once. Each partition's position is stored in the database, in the transaction
that stores what the batch counted (topology.models.StreamPosition), so a message delivered again after
a kill -9, a rebalance, or a crash between the database commit and the Kafka commit is skipped by its
offset. On assignment the consumer seeks to the stored position. Offsets are committed to Kafka too,
after the database, for lag tools; counting never relies on them. One bad message is dead-lettered and
skipped; it never stops its partition.

Every process that runs a SpanConsumer is one member of the KAFKA_CONSUMER_GROUP, so scaling out is
starting more of them (see the README: a Celery worker on the ``spans`` queue with the solo pool).
"""

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from collectors.formats import Decoded, SpanRejected, decode
from topology.ingestion import store_spans
from topology.models import DeadLetter, SourceStatus, StreamPosition

log = logging.getLogger(__name__)

PAYLOAD_HEAD_BYTES = 1024
MAX_BACKOFF_SECONDS = 30
# What the database refuses, or its driver cannot even send (text that is no UTF-8, such as the lone
# surrogates JSON allows): the message is dead-lettered, the rest of its batch kept.
UNSTORABLE = (DatabaseError, UnicodeEncodeError)

Polled = Mapping[TopicPartition, Sequence[ConsumerRecord]]
# A message and what decoding it gave: its spans, or why it was rejected as a whole.
DecodedMessage = tuple[ConsumerRecord, Decoded | SpanRejected]


def consumer_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "group_id": settings.KAFKA_CONSUMER_GROUP,
        "client_id": "meshscope-spans",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 200,  # 10,000 spans a transaction at 50 a message
        "max_poll_interval_ms": settings.KAFKA_MAX_POLL_INTERVAL_MS,
        "session_timeout_ms": settings.KAFKA_SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": max(100, settings.KAFKA_SESSION_TIMEOUT_MS // 3),
        "fetch_max_bytes": 64 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
        **settings.KAFKA_SECURITY,
    }
    config.update(overrides)
    return config


def payload_head(payload: bytes | None) -> str:
    head = (payload or b"")[:PAYLOAD_HEAD_BYTES]
    return head.decode("utf-8", errors="backslashreplace").replace("\x00", "\\x00")


class SpanConsumer:
    """One member of the span consumer group.

    Decoding is pure Python and storing mostly waits on PostgreSQL, so the two overlap: while one
    batch is stored, the next one is decoded on a thread of its own (psycopg releases the GIL while it
    waits). ``pipelined=False`` does one after the other, for the benchmark's side-by-side figure.
    """

    def __init__(
        self, topics: Mapping[str, str] | None = None, pipelined: bool = True, **consumer_overrides: Any
    ) -> None:
        self.topics: dict[str, str] = dict(topics or settings.TRACE_TOPICS)  # topic -> message format
        self.consumer = KafkaConsumer(**consumer_config(**consumer_overrides))
        self.assigned = AssignedPartitions()
        self.consumer.subscribe(list(self.topics), listener=self.assigned)
        self.failures = 0
        self.pipelined = pipelined
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="span-decoder")
        # A batch polled and being decoded, stored by the next poll_once.
        self._in_flight: tuple[Polled, Future[list[DecodedMessage]]] | None = None

    def close(self) -> None:
        """Leaves the group; a batch decoded but not stored is read again by the partition's next owner."""
        self._in_flight = None
        self._decoder.shutdown(wait=True)
        self.consumer.close()

    def run(self, seconds: float, poll_timeout_ms: int = 500) -> int:
        """Consumes for about ``seconds``; returns the number of new spans stored."""
        deadline = time.monotonic() + seconds
        stored = 0
        while time.monotonic() < deadline:
            stored += self.poll_once(poll_timeout_ms)
        return stored + self.flush()

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Polls a batch; stores the batch polled before it when pipelined, else this one."""
        try:
            # With a batch in flight, take only what is already fetched: that batch waits to be stored.
            polled = self.consumer.poll(timeout_ms=0 if self._in_flight else timeout_ms)
        except KafkaError as error:
            self._back_off("kafka", error)
            return 0
        self._skip_to_counted_positions(polled)
        if not self.pipelined:
            return self._store_and_commit(polled, self._decode_all(polled)) if polled else 0
        ready = self._in_flight
        self._in_flight = (polled, self._decoder.submit(self._decode_all, polled)) if polled else None
        return self._store_and_commit(ready[0], ready[1].result()) if ready else 0

    def flush(self) -> int:
        """Stores the batch in flight, if any."""
        ready, self._in_flight = self._in_flight, None
        return self._store_and_commit(ready[0], ready[1].result()) if ready else 0

    def _store_and_commit(self, polled: Polled, decoded: list[DecodedMessage]) -> int:
        try:
            stored = self._store_decoded(decoded)
        except (OperationalError, InterfaceError) as error:
            # The database is away: nothing was committed, so read the batch (and the one in flight
            # behind it) again once it is back.
            first = {tp: msgs[0].offset for tp, msgs in polled.items()}
            if self._in_flight:
                for tp, msgs in self._in_flight[0].items():
                    first[tp] = min(first.get(tp, msgs[0].offset), msgs[0].offset)
                self._in_flight = None
            for partition, offset in first.items():
                self._seek(partition, offset)
            self._back_off("database", error)
            return 0
        try:
            self.consumer.commit({tp: OffsetAndMetadata(msgs[-1].offset + 1, "", -1) for tp, msgs in polled.items()})
        except KafkaError as error:
            # Typically a rebalance took the partitions away while the batch was stored: their next
            # owner seeks to the position stored with the batch, or skips the batch if it reads it again.
            log.warning("Span consumer: offsets not committed (%s); the batch will be redelivered", error)
        if self.failures:
            self.failures = 0
            SourceStatus.record_success("kafka")
        return stored

    def _skip_to_counted_positions(self, polled: Polled) -> None:
        """Moves newly assigned partitions forward to where counting stopped.

        Kafka's committed offset can be behind the stored position (a crash between the two commits):
        starting there would only read again messages that the claim then skips. Only past what this
        poll returned of the partition, if anything: those messages are claimed or skipped anyway, and
        asking the client for its position could block through a rebalance.
        """
        assigned = self.assigned.take()
        if not assigned:
            return
        try:
            positions = StreamPosition.objects.of((tp.topic, tp.partition) for tp in assigned)
        except (OperationalError, InterfaceError):
            self.assigned.give_back(assigned)  # the claim still skips what was counted
            return
        for tp in assigned:
            position = positions.get((tp.topic, tp.partition))
            fetched = polled.get(tp)
            if position is not None and (not fetched or fetched[-1].offset + 1 < position):
                self._seek(tp, position)

    def _seek(self, partition: TopicPartition, offset: int) -> None:
        # A rebalance may have taken the partition away (seeking it would raise): its next owner starts
        # where counting stopped.
        if partition in self.consumer.assignment():
            self.consumer.seek(partition, offset)

    def process(self, polled: Polled) -> int:
        """Decodes and stores one polled batch, in the calling thread."""
        return self._store_decoded(self._decode_all(polled))

    def _decode_all(self, polled: Polled) -> list[DecodedMessage]:
        return [self._decode(message) for batch in polled.values() for message in batch]

    def _store_decoded(self, decoded: list[DecodedMessage]) -> int:
        try:
            with transaction.atomic():
                return self._count(decoded)
        except (OperationalError, InterfaceError):
            raise
        except UNSTORABLE:
            log.exception("A batch of %d messages failed to store; storing them one by one", len(decoded))
        # Somewhere in the batch is a message the database refuses: isolate it rather than block.
        stored = 0
        for item in decoded:
            try:
                with transaction.atomic():
                    stored += self._count([item])
            except (OperationalError, InterfaceError):
                raise
            except UNSTORABLE as error:
                message, _ = item
                with transaction.atomic():
                    if self._claim([item]):
                        DeadLetter.objects.create(
                            **self._dead_letter_fields(message, "unstorable", f"{type(error).__name__}: {error}")
                        )
        return stored

    def _claim(self, decoded: Sequence[DecodedMessage]) -> list[DecodedMessage]:
        """The messages of ``decoded`` this transaction counts: those not counted yet."""
        fresh = StreamPosition.objects.claim((m.topic, m.partition, m.offset) for m, _ in decoded)
        return [item for item in decoded if (item[0].topic, item[0].partition, item[0].offset) in fresh]

    def _decode(self, message: ConsumerRecord) -> DecodedMessage:
        try:
            fmt = self.topics.get(message.topic, "auto")
            result = decode(message.value, fmt, settings.SPAN_MAX_MESSAGE_BYTES, settings.SPAN_RETENTION_HOURS * 3600)
            return message, result
        except SpanRejected as rejected:
            return message, rejected
        except Exception as error:
            log.exception("Undecodable message at %s[%s]@%s", message.topic, message.partition, message.offset)
            return message, SpanRejected("wrong_shape", f"{type(error).__name__}: {error}")

    def _count(self, decoded: Sequence[DecodedMessage]) -> int:
        """Stores what the messages not counted yet hold, in the caller's transaction; returns new spans."""
        fresh = self._claim(decoded)
        if not fresh:
            return 0
        spans: list[Any] = []
        dead: list[DeadLetter] = []
        for message, result in fresh:
            if isinstance(result, SpanRejected):
                dead.append(DeadLetter(**self._dead_letter_fields(message, result.reason, result.detail)))
                continue
            spans.extend(result.spans)
            for span_rejected in result.rejected:
                dead.append(DeadLetter(**self._dead_letter_fields(message, span_rejected.reason, span_rejected.detail)))
        DeadLetter.objects.bulk_create(dead)
        return store_spans(spans, messages=len(fresh), rejected=len(dead)).new_spans

    def _dead_letter_fields(self, message: ConsumerRecord, reason: str, detail: object) -> dict[str, Any]:
        log.warning("Dead letter %s at %s[%s]@%s: %s", reason, message.topic, message.partition, message.offset, detail)
        return {
            "reason": reason,
            "detail": str(detail)[:2000],
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "payload_head": payload_head(message.value),
        }

    def _back_off(self, source: str, error: Exception) -> None:
        self.failures += 1
        log.warning("Span consumer: %s failed (%s); retrying", source, error)
        if source == "kafka":
            SourceStatus.record_failure("kafka", f"Span consumer: {error}")
        time.sleep(min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(self.failures, 6)))


class AssignedPartitions(ConsumerRebalanceListener):
    """The partitions a rebalance gave this consumer and that it has not yet moved to their positions.

    kafka-python runs rebalance callbacks on its IO thread, the one that sends heartbeats: reading the
    database there would hold heartbeats up, so the consumer's own thread reads the positions.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        with self._lock:
            self._pending.difference_update(revoked)

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # Which process counts which partitions: what an operator following a rebalance needs to see.
        log.info(
            "Span consumer: assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "nothing",
        )
        with self._lock:
            self._pending.update(assigned)

    def take(self) -> set[TopicPartition]:
        with self._lock:
            taken, self._pending = self._pending, set()
        return taken

    def give_back(self, partitions: Iterable[TopicPartition]) -> None:
        with self._lock:
            self._pending.update(partitions)
