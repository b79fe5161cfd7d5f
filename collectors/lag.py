"""Samples the lag of every consumer group (or of LAG_CONSUMER_GROUPS) on the Kafka cluster.

Each run reads, per partition: the group's committed offset, the end offset, and the timestamp of
the record at the committed offset, which is read by a consumer outside any group (assign, seek,
poll) so that sampling never joins or disturbs the groups it measures. The figures are computed and
stored by ``topology.consumer_lag.record_samples``.
"""

import logging
import time

from celery import shared_task
from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from dashboard.live import announce_change
from topology.consumer_lag import Observation, record_samples
from topology.models import SourceStatus

log = logging.getLogger(__name__)

# A run must finish well inside beat's 5-second period, even when the cluster does not answer
# (kafka-python's default is to try bootstrapping for 30 s).
BOOTSTRAP_TIMEOUT_MS = 3000
REQUEST_TIMEOUT_MS = 4000
RECORD_READ_SECONDS = 1.5


def _client_config():
    return {
        "bootstrap_servers": settings.KAFKA_BOOTSTRAP_SERVERS,
        "client_id": "meshscope-lag",
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
        **settings.KAFKA_SECURITY,
    }


def _groups(admin):
    """{group: state} for the configured groups, or for every consumer group on the cluster."""
    listed = {
        group["group_id"]: group.get("group_state", "")
        for group in admin.list_groups()
        # Kafka Connect and other protocols keep no consumer offsets worth a lag.
        if group.get("protocol_type", "consumer") in ("consumer", "")
    }
    if settings.LAG_CONSUMER_GROUPS:
        return {group: listed.get(group, "") for group in settings.LAG_CONSUMER_GROUPS}
    return listed


def _committed_offsets(admin, groups):
    committed = {}
    for group in groups:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset is not None and meta.offset >= 0}
    return committed


def read_record_timestamps(consumer, offsets, seconds=RECORD_READ_SECONDS):
    """{TopicPartition: epoch seconds} of the record at each given offset that could be read.

    A partition whose first record comes back past the offset asked for lost that record to
    retention or compaction: it gets no timestamp, and the lag falls back to interpolation.
    """
    if not offsets:
        return {}
    consumer.assign(list(offsets))
    for tp, offset in offsets.items():
        consumer.seek(tp, offset)
    found, done = {}, set()
    deadline = time.monotonic() + seconds
    while len(done) < len(offsets) and time.monotonic() < deadline:
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        for tp, records in consumer.poll(timeout_ms=min(remaining_ms, 500)).items():
            if tp in done or not records:
                continue
            first = records[0]
            if first.offset == offsets[tp] and first.timestamp >= 0:
                found[tp] = first.timestamp / 1000
            done.add(tp)
            consumer.pause(tp)
    return found


def observe(admin, consumer):
    """Reads every partition of every group once; returns the Observations."""
    groups = _groups(admin)
    committed = _committed_offsets(admin, groups)
    partitions = {tp for offsets in committed.values() for tp in offsets}
    end_offsets = consumer.end_offsets(list(partitions)) if partitions else {}
    # Several groups may sit at one offset of one partition: the record is read once.
    wanted = {}
    for offsets in committed.values():
        for tp, offset in offsets.items():
            if offset < end_offsets.get(tp, 0):
                wanted.setdefault(tp, set()).add(offset)
    timestamps = {}
    while wanted:
        batch = {tp: offsets.pop() for tp, offsets in wanted.items()}
        wanted = {tp: offsets for tp, offsets in wanted.items() if offsets}
        timestamps.update({(tp, batch[tp]): ts for tp, ts in read_record_timestamps(consumer, batch).items()})
        consumer.resume(*consumer.paused())
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
def sample_consumer_lag():
    """One lag sample of every partition of every measured group. An unreachable cluster marks the
    "kafka" source stale and leaves the last samples as they are."""
    admin = consumer = None
    try:
        admin = KafkaAdminClient(**_client_config())
        consumer = KafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=256 * 1024,
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
    announce_change("lag")
    return len(observations)
