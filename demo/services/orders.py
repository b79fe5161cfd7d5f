"""Orders: takes an order (checks the user, reserves stock, charges it over gRPC) and publishes it to Kafka.

The event carries the PRODUCER span's context in its headers, so fulfillment's CONSUMER span is its
child and the dashboard sees the asynchronous edge orders → fulfillment through the topic.
"""

import collections
import json
import threading
import uuid
from typing import Any

from flask import jsonify, request
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from demo import rpc
from demo.system import ORDERS_TOPIC
from demo.web import UpstreamError

RECENT = 20


def build(service):
    recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT)
    lock = threading.Lock()

    def publish(order):
        with service.tracer.start_as_current_span(
            f"send {ORDERS_TOPIC}",
            kind=SpanKind.PRODUCER,
            record_exception=False,
            set_status_on_exception=False,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": ORDERS_TOPIC,
                "messaging.operation.type": "send",
                "messaging.kafka.message.key": order["id"],
            },
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            try:
                metadata = service.producer.send(
                    ORDERS_TOPIC,
                    key=order["id"].encode(),
                    value=json.dumps(order).encode(),
                    headers=[(key, value.encode()) for key, value in headers.items()],
                ).get(timeout=5)
            except Exception as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise UpstreamError(f"Kafka did not take the order: {error}") from error
            span.set_attribute("messaging.destination.partition.id", str(metadata.partition))
            span.set_attribute("messaging.kafka.offset", metadata.offset)

    @service.app.post("/orders")
    def create():
        body = request.json
        order = {
            "id": uuid.uuid4().hex[:12],
            "user_id": int(body["user_id"]),
            "sku": body["sku"],
            "quantity": int(body.get("quantity", 1)),
            "taken_by": service.instance.id,
        }
        try:
            user = service.call("users", "GET", f"/users/{order['user_id']}", route="/users/{user_id}")
            if user.status_code == 404:
                return jsonify(error="unknown user"), 422
            service.call(
                "inventory", "POST", "/reservations", json={"sku": order["sku"], "quantity": order["quantity"]}
            )
            order["payment_id"] = rpc.call(service, "payments", "Charge", {"order_id": order["id"]})["payment_id"]
            publish(order)
        except UpstreamError as error:
            return jsonify(error=str(error)), 502
        with lock:
            recent.appendleft(order)
        return order, 201

    @service.app.get("/orders")
    def latest():
        with lock:
            return {"orders": list(recent)}
