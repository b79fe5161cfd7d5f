"""Each message is counted exactly once, whatever Kafka delivers again: the partition's position is
stored with what the batch counted, and a message below it is skipped."""

import threading
import time

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from kafka import TopicPartition

from tests.kafka_helpers import consume_until, create_topic, produce, span_consumer
from tests.test_bad_span_messages import BAD_MESSAGES
from tests.test_consumer_restart import sessions_waiting_on_a_lock, wait_for
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf
from topology.models import DeadLetter, EdgeRollup, IngestRollup, InstanceRollup, RouteRollup, Span, StreamPosition

pytestmark = pytest.mark.django_db(transaction=True)


def gateway_to_cart(traces_per_message, messages):
    """Messages of traces gateway -> cart, three spans each, alternating between two cart instances."""
    traces = OtelTraces()
    payloads = []
    for _ in range(messages):
        for n in range(traces_per_message):
            start = now_ns()
            root = traces.span("gateway", "gateway-1", "GET /api/cart", "server", start, 20)
            call = traces.span("gateway", "gateway-1", "GET", "client", start + 10**6, 15, parent=root)
            traces.span("cart", f"cart-{n % 2 + 1}", "GET /cart", "server", start + 2 * 10**6, 10, parent=call)
        payloads.append(otlp_protobuf(traces.finished()))
    return payloads


def counts():
    def total(queryset):
        return queryset.aggregate(n=Sum("count"))["n"] or 0

    return {
        "edges": total(EdgeRollup.objects.filter(source__name="gateway", target__name="cart")),
        "routes": total(RouteRollup.objects.all()),
        "cart instances": total(InstanceRollup.objects.filter(instance__service__name="cart")),
        "spans": Span.objects.count(),
        "messages": IngestRollup.objects.aggregate(n=Sum("messages"))["n"] or 0,
        "duplicate spans": IngestRollup.objects.aggregate(n=Sum("duplicate_spans"))["n"] or 0,
        "dead letters": DeadLetter.objects.count(),
    }


def poll_everything(consumer, expected_messages):
    """What the consumer's poll returns, gathered until it has every message, without processing it."""
    polled = {}
    deadline = time.monotonic() + 30
    while sum(len(batch) for batch in polled.values()) < expected_messages and time.monotonic() < deadline:
        for partition, batch in consumer.consumer.poll(timeout_ms=300).items():
            polled.setdefault(partition, []).extend(batch)
    return polled


def test_a_batch_delivered_again_after_its_transaction_committed_is_skipped(kafka_bootstrap, topic_name):
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [*gateway_to_cart(2, 5), BAD_MESSAGES["bad_id"]])
    consumer = span_consumer(kafka_bootstrap, {topic_name: "auto"})
    try:
        polled = poll_everything(consumer, 6)
        assert consumer.process(polled) == 30
        first = counts()
        assert consumer.process(polled) == 0
    finally:
        consumer.close()

    assert first == {
        "edges": 10,
        "routes": 10,
        "cart instances": 10,
        "spans": 30,
        "messages": 6,
        "duplicate spans": 0,
        "dead letters": 1,
    }
    # Not even seen as duplicate spans: the messages were recognised by their offsets and not read.
    assert counts() == first
    assert StreamPosition.objects.get(topic=topic_name, partition=0).next_offset == 6


def test_a_crash_between_the_database_commit_and_the_kafka_commit_counts_nothing_twice(kafka_bootstrap, topic_name):
    create_topic(kafka_bootstrap, topic_name, partitions=2)
    for partition in (0, 1):
        produce(kafka_bootstrap, topic_name, gateway_to_cart(2, 4), partition=partition)
    group = f"crash-{topic_name}"
    crashed = span_consumer(kafka_bootstrap, {topic_name: "otlp_proto"}, group=group)
    try:
        # The database commits; the process dies before it commits to Kafka.
        crashed.process(poll_everything(crashed, 8))
    finally:
        crashed.consumer.close(autocommit=False)
    after_crash = counts()
    assert after_crash["edges"] == 16

    restarted = span_consumer(kafka_bootstrap, {topic_name: "otlp_proto"}, group=group)
    try:
        partitions = [TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)]
        stored = StreamPosition.objects.of((topic_name, p) for p in (0, 1))

        def resumed_at_the_stored_positions():
            assignment = restarted.consumer.assignment()
            return len(assignment) == 2 and all(
                restarted.consumer.position(tp) == stored[(tp.topic, tp.partition)] for tp in partitions
            )

        assert consume_until(restarted, resumed_at_the_stored_positions)
        assert counts() == after_crash
        produce(kafka_bootstrap, topic_name, gateway_to_cart(2, 3))
        assert consume_until(restarted, lambda: counts()["messages"] == 11)
    finally:
        restarted.close()
    assert counts()["edges"] == 22
    assert counts()["duplicate spans"] == 0


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="SQLite takes no row locks: writers fail instead")
def test_two_consumers_claiming_the_same_messages_at_once_count_them_once():
    """A consumer that still believes it owns a partition after a rebalance waits for the new owner's
    transaction, then finds nothing left to count."""
    offsets = [("spans", 0, offset) for offset in range(10, 20)]
    claimed = {}
    holding, release = threading.Event(), threading.Event()

    def first_owner():
        try:
            with transaction.atomic():
                claimed["first"] = StreamPosition.objects.claim(offsets)
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    def second_owner():
        try:
            with transaction.atomic():
                claimed["second"] = StreamPosition.objects.claim(offsets)
        finally:
            connection.close()

    first = threading.Thread(target=first_owner)
    first.start()
    assert holding.wait(30)
    second = threading.Thread(target=second_owner)
    second.start()

    assert wait_for(lambda: sessions_waiting_on_a_lock() == 1, 30), "the second claim did not wait for the first"
    release.set()
    first.join(30)
    second.join(30)

    assert claimed == {"first": set(offsets), "second": set()}
    assert StreamPosition.objects.get(topic="spans", partition=0).next_offset == 20


def test_a_run_stores_the_batch_it_decoded_while_storing_the_one_before(kafka_bootstrap, topic_name):
    """Pipelined, a poll's batch is stored by the next poll; the batch still in flight when a run ends is
    stored before the run returns, so a Celery task's run leaves nothing half done."""
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, gateway_to_cart(2, 6))
    consumer = span_consumer(kafka_bootstrap, {topic_name: "otlp_proto"}, max_poll_records=2)
    stored = 0
    try:
        deadline = time.monotonic() + 30
        while counts()["messages"] < 6 and time.monotonic() < deadline:
            stored += consumer.run(0.5)
            assert consumer._in_flight is None
    finally:
        consumer.close()
    assert stored == 36
    assert counts()["edges"] == 12
