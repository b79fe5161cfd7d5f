"""Partitions moving between two span consumers of one group while the stream flows lose nothing and
count nothing twice, even while two consumers own a partition at once: a message is counted by the
first consumer to claim its offset, and skipped by any other."""

import contextlib
import os
import re
import signal
import time

import pytest
from django.db import connection, transaction  # noqa: F401 (the skipif condition names connection)
from django.db.models import Sum
from kafka import KafkaProducer

from tests.kafka_helpers import create_topic
from tests.test_consumer_restart import sessions_waiting_on_a_lock, start_consumer, wait_for
from tests.test_exactly_once import counts, gateway_to_cart
from topology.models import IngestRollup, StreamPosition

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="holds the positions' row locks, as SQLite cannot"),
]

PARTITIONS = 4
EVERY = set(range(PARTITIONS))


class Stream:
    """Messages of two gateway -> cart traces each, to every partition in turn, as a live system sends them.

    Remembers where the broker put each one: the partitions' end offsets come from there, since Tansu's
    ListOffsets can answer short of the end (see collectors/lag.py)."""

    def __init__(self, bootstrap, topic):
        self.topic = topic
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.sent = []

    def send(self, messages):
        for payload in gateway_to_cart(2, messages):
            self.sent.append(self.producer.send(self.topic, payload, partition=len(self.sent) % PARTITIONS))
        self.producer.flush()

    def counted(self):
        """Every message sent counted, or more: a double count then fails the exact check, not a wait."""
        return (IngestRollup.objects.aggregate(n=Sum("messages"))["n"] or 0) >= len(self.sent)

    def ends(self):
        ends = {}
        for future in self.sent:
            placed = future.get(timeout=30)
            ends[placed.partition] = max(ends.get(placed.partition, 0), placed.offset + 1)
        return ends


def assignments(log):
    """The partitions the consumer logging to ``log`` was given, a set a rebalance (collectors/kafka_spans.py)."""
    found = re.findall(r"Span consumer: assigned (.*)", log.read_text(errors="replace"))
    return [{int(partition) for partition in re.findall(r"\[(\d+)\]", line)} for line in found]


def owns_a_share(log, rebalances=1):
    """Whether the consumer's last assignment, from at least its ``rebalances``-th, is some partitions, not all."""
    given = assignments(log)
    return len(given) >= rebalances and set() < given[-1] < EVERY


def test_a_rebalance_between_two_consumers_loses_and_double_counts_nothing(kafka_bootstrap, topic_name, tmp_path):
    create_topic(kafka_bootstrap, topic_name, partitions=PARTITIONS)
    stream = Stream(kafka_bootstrap, topic_name)
    logs = {name: tmp_path / f"{name}.log" for name in ("first", "second")}
    consumers = {}
    try:
        stream.send(200)
        with open(logs["first"], "wb") as output:
            consumers["first"] = start_consumer(kafka_bootstrap, topic_name, output)
        assert wait_for(stream.counted, 60), "the first consumer did not count the stream"

        # The second joins mid-stream and the partitions are shared: the stream flows through every wait.
        with open(logs["second"], "wb") as output:
            consumers["second"] = start_consumer(kafka_bootstrap, topic_name, output)
        shared = wait_for(lambda: stream.send(1) or all(owns_a_share(log) for log in logs.values()), 60)
        assert shared, "the partitions were never shared"
        stream.send(100)
        assert wait_for(stream.counted, 60), "not counted by the two consumers"

        # Its partitions' positions locked, the first consumer waits to store its next batch past its poll
        # interval: the group gives its partitions to the second, which reads the same messages again (the
        # first has not committed them to Kafka) and waits for the same positions. Two consumers own the
        # same partitions until the lock goes: whichever claims the batch first counts it. (The group is
        # stable when the first drops out: Tansu never completes a join that a member leaves midway.)
        rebalances = len(assignments(logs["first"]))
        with transaction.atomic():
            held = assignments(logs["first"])[-1]
            list(StreamPosition.objects.select_for_update().filter(topic=topic_name, partition__in=held))
            stream.send(100)
            assert wait_for(lambda: sessions_waiting_on_a_lock() == 2, 60), (
                "the two consumers never claimed the same batch"
            )
        assert wait_for(lambda: stream.send(1) or owns_a_share(logs["first"], rebalances + 1), 60), "no rejoin"
        stream.send(100)
        assert wait_for(stream.counted, 60), "not counted after the two claimed the same batch"

        # The first is stopped mid-stream as docker stop does, and leaves the group: all partitions go to
        # the second.
        stream.send(200)
        consumers["first"].send_signal(signal.SIGTERM)
        assert consumers["first"].wait(30) == 0, "SIGTERM did not stop the consumer as Ctrl-C does"
        assert wait_for(lambda: stream.send(1) or assignments(logs["second"])[-1] == EVERY, 60), "never took over"
        stream.send(100)
        assert wait_for(stream.counted, 60), "not counted after the first left"
        time.sleep(1.5)  # a double count would show up as rollups above the truth
    finally:
        for process in consumers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        stream.producer.close()

    messages = len(stream.sent)
    assert counts() == {
        "edges": 2 * messages,
        "routes": 2 * messages,
        "cart instances": 2 * messages,
        "spans": 6 * messages,
        "messages": messages,
        "duplicate spans": 0,
        "dead letters": 0,
    }
    positions = StreamPosition.objects.filter(topic=topic_name).values_list("partition", "next_offset")
    assert dict(positions) == stream.ends()
