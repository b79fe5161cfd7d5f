"""Producing to and consuming from the test broker the way the product does."""

import time
import uuid

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from collectors.kafka_spans import SpanConsumer

# kafka-python waits for the rebalance timeout when it joins a group on Tansu: keep it short.
FAST_GROUP = {"max_poll_interval_ms": 3000, "session_timeout_ms": 3000, "heartbeat_interval_ms": 1000}


def create_topic(bootstrap, name, partitions=3):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def produce(bootstrap, topic, payloads, partition=None):
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for payload in payloads:
            producer.send(topic, payload, partition=partition)
        producer.flush()
    finally:
        producer.close()


def span_consumer(bootstrap, topics, group=None, **overrides):
    return SpanConsumer(
        topics=topics,
        bootstrap_servers=[bootstrap],
        group_id=group or f"test-{uuid.uuid4().hex[:8]}",
        **{**FAST_GROUP, **overrides},
    )


def consume_until(consumer, condition, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer.poll_once(300)
        if condition():
            return True
    return False
