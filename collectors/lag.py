"""Samples the lag of every consumer group (or of LAG_CONSUMER_GROUPS) on the Kafka cluster.

Each run reads, per partition: the group's committed offset, the end offset, and the timestamp of
the record at the committed offset, which is fetched by a consumer outside any group (assign, seek,
poll) so that sampling never joins or disturbs the groups it measures. The figures are computed and
stored by ``topology.consumer_lag.record_samples``.
"""

import logging
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from celery import shared_task
from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from topology.consumer_lag import Observation, record_samples
from topology.models import SourceStatus

log = logging.getLogger(__name__)

# A run must finish well inside beat's 5-second period, even when the cluster does not answer
# (kafka-python's default is to try bootstrapping for 30 s).
BOOTSTRAP_TIMEOUT_MS = 3000
REQUEST_TIMEOUT_MS = 4000
RECORD_READ_SECONDS = 1.5
# Several groups at different offsets of one partition take one read each; past this budget the
# rest get their lag in seconds from the offset→time table instead.
READ_BUDGET_SECONDS = 2.5


def _client_config() -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "client_id": "meshscope-lag",
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        **settings.KAFKA_SECURITY,
    }


class _Admin(KafkaAdminClient):
    def _process_acl_operations(self, obj: dict[str, Any]) -> dict[str, Any]:
        # kafka-python names each authorized operation DescribeGroups returns and fails on a bit it
        # does not know, which Tansu sets; the collector never reads them.
        obj.pop("authorized_operations", None)
        return obj


def _groups(admin: KafkaAdminClient) -> dict[str, str]:
    """{group: state} for the configured groups, or for every consumer group on the cluster."""
    listed = {
        group["group_id"]: group.get("group_state", "")
        for group in admin.list_groups()
        # Kafka Connect and other protocols keep no consumer offsets worth a lag.
        if group.get("protocol_type", "consumer") in ("consumer", "")
    }
    if settings.LAG_CONSUMER_GROUPS:
        listed = {group: listed.get(group, "") for group in settings.LAG_CONSUMER_GROUPS}
    # Whether a group has members decides STOP or STALL (docs/statistics.md). ListGroups tells the
    # state from Kafka 2.6 (KIP-518); older brokers leave it out and Tansu answers "Unknown", so
    # those groups are described, which every broker answers with their state.
    unknown = [group for group, state in listed.items() if state.lower() in ("", "unknown")]
    if unknown:
        for group, description in admin.describe_groups(unknown).items():
            listed[group] = description.get("group_state") or listed[group]
    return listed


def _committed_offsets(admin: KafkaAdminClient, groups: Iterable[str]) -> dict[str, dict[TopicPartition, int]]:
    committed = {}
    for group in groups:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        committed[group] = {
            tp: meta.offset for tp, meta in offsets.items() if meta.offset is not None and meta.offset >= 0
        }
    return committed


def _existing(consumer: KafkaConsumer, partitions: Collection[TopicPartition]) -> set[TopicPartition]:
    """The partitions that exist: a group's offsets outlive a deleted topic, and asking for the end
    offset of a partition that does not exist waits for the whole timeout."""
    existing = {topic: consumer.partitions_for_topic(topic) or set() for topic in {tp.topic for tp in partitions}}
    return {tp for tp in partitions if tp.partition in existing[tp.topic]}


def read_at_offsets(
    consumer: KafkaConsumer, offsets: Mapping[TopicPartition, int], seconds: float = RECORD_READ_SECONDS
) -> dict[TopicPartition, tuple[int | None, float | None]]:
    """Fetches each partition at the given offset: {TopicPartition: (high watermark, timestamp)}.

    The timestamp (epoch seconds) is that of the record at the offset, or None when there is none:
    the offset is at the end, or its record was lost to retention or compaction (the first record
    then comes back past the offset). The high watermark comes with every fetch response.
    """
    if not offsets:
        return {}
    consumer.assign(list(offsets))
    for tp, offset in offsets.items():
        consumer.seek(tp, offset)
    found: dict[TopicPartition, tuple[int | None, float | None]] = {}
    deadline = time.monotonic() + seconds
    while len(found) < len(offsets) and time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=100)
        for tp, offset in offsets.items():
            if tp in found:
                continue
            records = polled.get(tp)
            highwater = consumer.highwater(tp)
            if records:
                first = records[0]
                exact = first.offset == offset and first.timestamp >= 0
                found[tp] = (highwater, first.timestamp / 1000 if exact else None)
            elif highwater is not None and highwater <= offset:
                found[tp] = (highwater, None)
            else:
                continue
            consumer.pause(tp)
    consumer.resume(*consumer.paused())
    return found


def observe(admin: KafkaAdminClient, consumer: KafkaConsumer) -> list[Observation]:
    """Reads every partition of every group once; returns the Observations."""
    groups = _groups(admin)
    committed = _committed_offsets(admin, groups)
    partitions = _existing(consumer, {tp for offsets in committed.values() for tp in offsets})
    committed = {
        group: {tp: o for tp, o in offsets.items() if tp in partitions} for group, offsets in committed.items()
    }
    end_offsets = consumer.end_offsets(list(partitions), timeout_ms=REQUEST_TIMEOUT_MS) if partitions else {}
    # Several groups may sit at one offset of one partition: each offset is read once.
    wanted: dict[TopicPartition, set[int]] = {}
    for offsets in committed.values():
        for tp, offset in offsets.items():
            wanted.setdefault(tp, set()).add(offset)
    timestamps: dict[tuple[TopicPartition, int], float | None] = {}
    deadline = time.monotonic() + READ_BUDGET_SECONDS
    while wanted and time.monotonic() < deadline:
        batch = {tp: offsets.pop() for tp, offsets in wanted.items()}
        wanted = {tp: offsets for tp, offsets in wanted.items() if offsets}
        seconds = min(RECORD_READ_SECONDS, deadline - time.monotonic())
        for tp, (highwater, timestamp) in read_at_offsets(consumer, batch, seconds).items():
            timestamps[(tp, batch[tp])] = timestamp
            # Tansu answers ListOffsets with the last batch's base offset + 1, short of the end
            # when batches hold several records; the fetch's high watermark is right.
            end_offsets[tp] = max(end_offsets.get(tp, 0), highwater or 0)
    return [
        Observation(
            group=group,
            topic=tp.topic,
            partition=tp.partition,
            committed_offset=offset,
            end_offset=end_offsets.get(tp, offset),
            record_timestamp=timestamps.get((tp, offset)),
            group_state=groups.get(group, ""),
        )
        for group, offsets in committed.items()
        for tp, offset in sorted(offsets.items())
    ]


@shared_task(name="collectors.sample_consumer_lag", ignore_result=True)
def sample_consumer_lag() -> int:
    """One lag sample of every partition of every measured group. An unreachable cluster marks the
    "kafka" source stale and leaves the last samples as they are."""
    admin = consumer = None
    try:
        admin = _Admin(**_client_config())
        consumer = KafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=256 * 1024,
            # A caught-up partition answers an empty fetch: do not let the broker sit on it.
            fetch_max_wait_ms=100,
            # Looking up a deleted topic's partitions must not create it again.
            allow_auto_create_topics=False,
            **_client_config(),
        )
        observations = observe(admin, consumer)
    except (KafkaError, OSError) as error:
        log.warning("Consumer lag sampling failed: %s", error)
        SourceStatus.record_failure("kafka", f"Consumer lag: {error!r}")
        return 0
    finally:
        for client in (consumer, admin):
            if client is not None:
                try:
                    client.close()
                except (KafkaError, OSError):
                    log.debug("Closing a Kafka client failed", exc_info=True)
    record_samples(observations)
    SourceStatus.record_success("kafka")
    return len(observations)
