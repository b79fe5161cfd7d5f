"""The lag collector against a real Kafka-protocol broker (Tansu), with a producer at a steady rate
and a consumer that is paused, resumed slowly, and let go."""

import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

from collectors.lag import _existing, sample_consumer_lag
from demo.embedded import free_port
from tests.kafka_helpers import FAST_GROUP, create_topic
from topology.consumer_lag import latest_for_group
from topology.models import ConsumerPartitionLag, SourceStatus

RATE = 50  # messages a second
SAMPLE_EVERY = 0.5
# With the producer still running, a consumer that keeps up is a poll (100 ms) behind at most.
CAUGHT_UP = RATE // 5


class SteadyProducer(threading.Thread):
    """Sends RATE messages a second and remembers when each offset was produced."""

    def __init__(self, bootstrap, topic):
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        self.topic = topic
        self.sent_at = {}  # offset -> epoch seconds
        self.running = True

    @property
    def end_offset(self):
        return len(self.sent_at)

    def run(self):
        next_send = time.monotonic()
        while self.running:
            metadata = self.producer.send(self.topic, b"x", partition=0).get(timeout=10)
            self.sent_at[metadata.offset] = metadata.timestamp / 1000
            next_send += 1 / RATE
            time.sleep(max(0.0, next_send - time.monotonic()))

    def stop(self):
        self.running = False
        self.join(5)
        self.producer.close()


class ControllableConsumer(threading.Thread):
    """A group member that commits after every poll, unless paused; ``rate`` limits it when set."""

    def __init__(self, bootstrap, topic, group):
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **FAST_GROUP,
        )
        self.mode = "run"
        self.rate = None
        self.committed = 0
        self.running = True

    def run(self):
        while self.running:
            assigned = self.consumer.assignment()
            if self.mode == "paused":
                self.consumer.pause(*assigned)
            elif self.consumer.paused():
                self.consumer.resume(*self.consumer.paused())
            records = self.consumer.poll(timeout_ms=100, max_records=1 if self.rate else 500)
            if self.mode == "paused" or not records:
                continue
            self.consumer.commit()
            self.committed = max(r.offset for batch in records.values() for r in batch) + 1
            if self.rate:
                time.sleep(1 / self.rate)

    def stop(self):
        self.running = False
        self.join(5)
        self.consumer.close()


@pytest.fixture
def kafka_settings(settings, kafka_bootstrap):
    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_bootstrap]
    settings.KAFKA_SECURITY = {}
    settings.LAG_CONSUMER_GROUPS = []
    return settings


def wait_for(condition, timeout=20):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sample_for(seconds, group, at_least=0):
    """Samples every SAMPLE_EVERY seconds, ``at_least`` times however slow the machine; returns the
    group's statuses in order."""
    statuses = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(statuses) < at_least:
        sample_consumer_lag()
        statuses.append(latest_for_group(group)["status"])
        time.sleep(SAMPLE_EVERY)
    return statuses


@pytest.mark.django_db
def test_paused_consumer_lag_is_measured_and_judged_then_recovers(kafka_settings, kafka_bootstrap):
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:8]}"
    kafka_settings.LAG_CONSUMER_GROUPS = [group]
    create_topic(kafka_bootstrap, topic, partitions=1)
    producer = SteadyProducer(kafka_bootstrap, topic)
    consumer = ControllableConsumer(kafka_bootstrap, topic, group)
    producer.start()
    consumer.start()
    try:
        wait_for(lambda: consumer.committed > 0)
        assert set(sample_for(2, group)) == {"OK"}

        consumer.mode = "paused"
        time.sleep(0.3)  # let an in-flight commit land
        # Burrow's window is the last 10 commits: two more samples than that, so the commit that was
        # in flight when the pause began has left it.
        paused_statuses = sample_for(10, group, at_least=12)
        end_before = producer.end_offset
        sample_consumer_lag()
        end_after = producer.end_offset
        measured_at = time.time()
        lag = latest_for_group(group)
        committed = consumer.committed

        true_lag = (end_before + end_after) / 2 - committed
        assert abs(lag["lag_messages"] - true_lag) <= 0.05 * true_lag
        true_seconds = measured_at - producer.sent_at[committed]
        assert abs(lag["lag_seconds"] - true_seconds) <= 1.0
        assert lag["partitions"][0]["lag_seconds_method"] == "record_timestamp"
        # The paused consumer is still a member, so every sample counts as a commit at the same
        # offset: STALL once a window of 10 holds only those (docs/statistics.md), never STOP.
        assert ConsumerPartitionLag.objects.filter(group=group).latest("sampled_at").group_state == "Stable"
        assert lag["status"] == "STALL"
        assert paused_statuses[-1] == "STALL"

        # Resumed slower than the producer: the offset moves but the lag keeps growing.
        consumer.rate, consumer.mode = RATE / 2, "run"
        slow_statuses = sample_for(7, group)
        consumer.rate = None
        catch_up_statuses = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            catch_up_statuses += sample_for(SAMPLE_EVERY, group)
            if latest_for_group(group)["lag_messages"] <= CAUGHT_UP and catch_up_statuses[-1] == "OK":
                break

        after_resume = slow_statuses + catch_up_statuses
        assert "WARN" in after_resume
        first_warn = after_resume.index("WARN")
        assert "OK" in after_resume[first_warn:]
        assert after_resume[-1] == "OK"
        assert latest_for_group(group)["lag_messages"] <= CAUGHT_UP
        print(
            f"\ntrue lag {true_lag:.0f} msgs, measured {lag['lag_messages']}; true {true_seconds:.2f} s, "
            f"measured {lag['lag_seconds']:.2f} s; paused {paused_statuses}; after resume {after_resume}"
        )
    finally:
        consumer.stop()
        producer.stop()


@pytest.mark.django_db
def test_idle_topic_with_a_caught_up_consumer_is_ok_and_never_stop(kafka_settings, kafka_bootstrap):
    topic, group = f"idle-{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:8]}"
    kafka_settings.LAG_CONSUMER_GROUPS = [group]
    create_topic(kafka_bootstrap, topic, partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for _ in range(20):
        producer.send(topic, b"x", partition=0)
    producer.close()
    consumer = ControllableConsumer(kafka_bootstrap, topic, group)
    consumer.start()
    try:
        wait_for(lambda: consumer.committed == 20)
        # Far longer than the commit window spans, with the offset standing still.
        statuses = sample_for(4, group)
    finally:
        consumer.stop()
    statuses += sample_for(1.5, group)  # the consumer is gone, and still nothing is left to read

    assert set(statuses) == {"OK"}
    lag = latest_for_group(group)
    assert (lag["lag_messages"], lag["lag_seconds"]) == (0, 0.0)
    assert lag["partitions"][0]["lag_seconds_method"] == "caught_up"


@pytest.mark.django_db
def test_every_group_is_sampled_when_none_is_configured_and_batched_records_count(kafka_settings, kafka_bootstrap):
    topic, group = f"all-{uuid.uuid4().hex[:8]}", f"app-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50)
    for _ in range(30):  # one batch of 30 records
        producer.send(topic, b"x", partition=0)
    producer.close()
    before = time.time()
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False, **FAST_GROUP
    )
    try:
        consumer.poll(timeout_ms=3000)
        consumer.commit(
            {tp: OffsetAndMetadata(10 if tp.partition == 0 else 0, None, -1) for tp in consumer.assignment()}
        )
    finally:
        consumer.close()

    assert sample_consumer_lag() >= 2

    lag = latest_for_group(group)
    assert [(p["partition"], p["lag_messages"]) for p in lag["partitions"]] == [(0, 20), (1, 0)]
    assert lag["partitions"][0]["lag_seconds_method"] == "record_timestamp"
    assert 0 <= lag["lag_seconds"] <= time.time() - before + 1


def test_offsets_left_on_a_deleted_topic_are_skipped():
    # Kafka keeps a group's offsets after their topic is deleted (Tansu drops them, so this is not
    # driven through the broker); their end offsets would be waited for until the timeout.
    class Metadata:
        def partitions_for_topic(self, topic):
            return {0, 1} if topic == "orders" else None

    partitions = {TopicPartition("orders", 0), TopicPartition("orders", 1), TopicPartition("deleted", 0)}
    assert _existing(Metadata(), partitions) == {TopicPartition("orders", 0), TopicPartition("orders", 1)}


@pytest.mark.django_db
def test_a_kafka_outage_marks_the_source_stale_and_does_not_crash(kafka_settings):
    kafka_settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]

    assert sample_consumer_lag() == 0

    status = SourceStatus.objects.get(name="kafka")
    assert status.is_stale and "Consumer lag" in status.stale_reason
    assert not ConsumerPartitionLag.objects.exists()
