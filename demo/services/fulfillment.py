"""Fulfillment: applies order events from Kafka to its own store, and is slow now and then.

Every SLOW_CYCLE seconds it spends SLOW_SECONDS handling events at a third of the rate orders arrive,
so the consumer group's lag and the orders → fulfillment propagation delay rise, then drain.
"""

import json
import logging
import os
import threading
import time
from typing import Any

from kafka import KafkaConsumer
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from demo.load import ORDER_SHARE
from demo.system import FULFILLMENT_GROUP, ORDERS_TOPIC

log = logging.getLogger(__name__)
SLOW_CYCLE = 90
SLOW_SECONDS = 30


def in_slow_phase(started):
    return (time.monotonic() - started) % SLOW_CYCLE >= SLOW_CYCLE - SLOW_SECONDS


def build(service):
    shipments: dict[str, dict[str, Any]] = {}
    orders_per_second = max(0.1, float(os.environ.get("DEMO_RPS", "20")) * ORDER_SHARE)
    slow_delay = 3 / orders_per_second  # handles a third of what arrives

    @service.app.get("/shipments/<order_id>")
    def shipment(order_id):
        return shipments.get(order_id) or ({"error": "not shipped yet"}, 404)

    def handle(message):
        carrier = {key: value.decode() for key, value in message.headers or ()}
        with service.tracer.start_as_current_span(
            f"process {ORDERS_TOPIC}",
            context=propagate.extract(carrier),  # the PRODUCER span is the parent
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": ORDERS_TOPIC,
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": FULFILLMENT_GROUP,
                "messaging.destination.partition.id": str(message.partition),
                "messaging.kafka.offset": message.offset,
            },
        ):
            order = json.loads(message.value)
            shipments[order["id"]] = {"order": order, "status": "shipped", "by": service.instance.id}

    def consume():
        # A short session lets the group form in seconds rather than the ~20 s that Tansu takes
        # with kafka-python's default 45 s session.
        consumer = KafkaConsumer(
            ORDERS_TOPIC,
            bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
            group_id=FULFILLMENT_GROUP,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=2000,
            max_poll_records=10,
        )
        started = time.monotonic()
        try:
            while not service.stopping.is_set():
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        if in_slow_phase(started):
                            time.sleep(slow_delay)
                        handle(message)
        finally:
            consumer.close()

    service.workers.append(threading.Thread(target=consume, name="fulfillment-consumer"))
