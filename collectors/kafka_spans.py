"""Consumes trace spans from Kafka into the database, at least once.

Offsets are committed only after the transaction holding their spans has committed, so a worker
killed mid-batch redelivers the batch, and the span table's uniqueness keeps it from counting twice.
One bad message is dead-lettered and skipped; it never stops its partition.

Every process that runs a SpanConsumer is one member of the KAFKA_CONSUMER_GROUP, so scaling out is
starting more of them (see the README: a Celery worker on the ``spans`` queue with the solo pool).
"""

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from collectors.formats import Decoded, SpanRejected, decode
from topology.ingestion import store_spans
from topology.models import DeadLetter, SourceStatus

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
    def __init__(self, topics: Mapping[str, str] | None = None, **consumer_overrides: Any) -> None:
        self.topics: dict[str, str] = dict(topics or settings.TRACE_TOPICS)  # topic -> message format
        self.consumer = KafkaConsumer(*self.topics, **consumer_config(**consumer_overrides))
        self.failures = 0

    def close(self) -> None:
        self.consumer.close()

    def run(self, seconds: float, poll_timeout_ms: int = 500) -> int:
        """Consumes for about ``seconds``; returns the number of new spans stored."""
        deadline = time.monotonic() + seconds
        stored = 0
        while time.monotonic() < deadline:
            stored += self.poll_once(poll_timeout_ms)
        return stored

    def poll_once(self, timeout_ms: int = 500) -> int:
        try:
            polled = self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as error:
            self._back_off("kafka", error)
            return 0
        if not polled:
            return 0
        try:
            stored = self.process(polled)
        except (OperationalError, InterfaceError) as error:
            # The database is away: nothing was committed, so read the batch again once it is back.
            for partition, messages in polled.items():
                self.consumer.seek(partition, messages[0].offset)
            self._back_off("database", error)
            return 0
        try:
            self.consumer.commit({tp: OffsetAndMetadata(msgs[-1].offset + 1, "", -1) for tp, msgs in polled.items()})
        except KafkaError as error:
            # Typically a rebalance took the partitions away while the batch was stored: their next
            # owner reads the batch again, and the span table's uniqueness makes that harmless.
            log.warning("Span consumer: offsets not committed (%s); the batch will be redelivered", error)
        if self.failures:
            self.failures = 0
            SourceStatus.record_success("kafka")
        return stored

    def process(self, polled: Polled) -> int:
        messages = [message for batch in polled.values() for message in batch]
        decoded = [self._decode(message) for message in messages]
        try:
            with transaction.atomic():
                return self._store(decoded)
        except (OperationalError, InterfaceError):
            raise
        except UNSTORABLE:
            log.exception("A batch of %d messages failed to store; storing them one by one", len(messages))
        # Somewhere in the batch is a message the database refuses: isolate it rather than block.
        stored = 0
        for item in decoded:
            try:
                with transaction.atomic():
                    stored += self._store([item])
            except (OperationalError, InterfaceError):
                raise
            except UNSTORABLE as error:
                message, _ = item
                self._dead_letter(message, "unstorable", f"{type(error).__name__}: {error}")
        return stored

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

    def _store(self, decoded: Sequence[DecodedMessage]) -> int:
        spans: list[Any] = []
        dead: list[DeadLetter] = []
        for message, result in decoded:
            if isinstance(result, SpanRejected):
                dead.append(self._dead_letter_row(message, result.reason, result.detail, message.value))
                continue
            spans.extend(result.spans)
            for span_rejected in result.rejected:
                dead.append(self._dead_letter_row(message, span_rejected.reason, span_rejected.detail, message.value))
        dead = _not_yet_dead_lettered(dead)
        DeadLetter.objects.bulk_create(dead)
        return store_spans(spans, messages=len(decoded), rejected=len(dead)).new_spans

    def _dead_letter_row(
        self, message: ConsumerRecord, reason: str, detail: object, payload: bytes | None
    ) -> DeadLetter:
        log.warning("Dead letter %s at %s[%s]@%s: %s", reason, message.topic, message.partition, message.offset, detail)
        return DeadLetter(
            reason=reason,
            detail=str(detail)[:2000],
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            payload_head=payload_head(payload),
        )

    def _dead_letter(self, message: ConsumerRecord, reason: str, detail: str) -> None:
        DeadLetter.objects.bulk_create(
            _not_yet_dead_lettered([self._dead_letter_row(message, reason, detail, message.value)])
        )

    def _back_off(self, source: str, error: Exception) -> None:
        self.failures += 1
        log.warning("Span consumer: %s failed (%s); retrying", source, error)
        if source == "kafka":
            SourceStatus.record_failure("kafka", f"Span consumer: {error}")
        time.sleep(min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(self.failures, 6)))


def _not_yet_dead_lettered(rows: list[DeadLetter]) -> list[DeadLetter]:
    """Leaves out the messages a first delivery already dead-lettered: after a restart or a rebalance
    they come again, and the dead-letter table, like the span table, keeps one record of each."""
    if not rows:
        return rows
    known = set(
        DeadLetter.objects.filter(
            topic__in={row.topic for row in rows}, offset__in={row.offset for row in rows}
        ).values_list("topic", "partition", "offset")
    )
    return [row for row in rows if (row.topic, row.partition, row.offset) not in known]
