"""Creates the demo's Kafka topics: the two span topics and the orders topic, 3 partitions each."""

import contextlib
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

PARTITIONS = 3


def create_topics(bootstrap_servers, names, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
            break
        except KafkaError:  # a broker from the environment may still be starting
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        admin.close()
