"""Seeded data for the dashboard's tests: a small mesh stored through the lead's ingestion path,
so spans, services, instances and rollups agree with each other."""

import time
import uuid

from topology.ingestion import store_spans
from topology.span_record import SpanRecord

HOSTILE = "<img src=x onerror=alert(1)>"


def _id(length):
    return uuid.uuid4().hex[:length] if length <= 32 else uuid.uuid4().hex


class Trace:
    def __init__(self, start_us=None):
        self.trace_id = uuid.uuid4().hex
        self.start_us = start_us or int(time.time() * 1_000_000) - 5_000_000
        self.records = []

    def span(
        self,
        service,
        instance,
        name,
        kind,
        offset_ms,
        duration_ms,
        parent=None,
        error=False,
        protocol="http",
        peer="",
        topic="",
        attributes=None,
        status_code="",
    ):
        record = SpanRecord(
            trace_id=self.trace_id,
            span_id=uuid.uuid4().hex[:16],
            parent_id=parent.span_id if parent is not None else "",
            service=service,
            instance=instance,
            kind=kind,
            name=name,
            protocol=protocol,
            start_us=self.start_us + int(offset_ms * 1000),
            duration_us=int(duration_ms * 1000),
            status_code=status_code or ("500" if error else "200"),
            error=error,
            peer=peer,
            topic=topic,
            attributes=attributes or {},
        )
        self.records.append(record)
        return record


def checkout(error=False, start_us=None):
    """gateway GET /api/orders → orders GET /orders → payments POST /charge, and orders publishes
    order-events that inventory consumes (asynchronous)."""
    t = Trace(start_us)
    root = t.span(
        "gateway",
        "gateway-1",
        "GET /api/orders",
        "server",
        0,
        120,
        attributes={"http.route": "/api/orders", "http.request.method": "GET"},
    )
    call = t.span("gateway", "gateway-1", "GET", "client", 5, 100, parent=root, peer="orders")
    orders = t.span(
        "orders", "orders-1", "GET /orders", "server", 8, 95, parent=call, attributes={"db.system": "postgresql"}
    )
    pay = t.span("orders", "orders-1", "POST", "client", 20, 60, parent=orders, peer="payments", error=error)
    t.span(
        "payments",
        "payments-1",
        "POST /charge",
        "server",
        22,
        55,
        parent=pay,
        error=error,
        attributes={"payment.provider": "acme"},
    )
    messaging = {"messaging.system": "kafka", "messaging.destination.name": "order-events"}
    send = t.span(
        "orders",
        "orders-1",
        "order-events publish",
        "producer",
        85,
        3,
        parent=orders,
        protocol="messaging",
        topic="order-events",
        attributes=messaging,
    )
    t.span(
        "inventory",
        "inventory-1",
        "order-events process",
        "consumer",
        140,
        12,
        parent=send,
        protocol="messaging",
        topic="order-events",
        attributes=messaging,
    )
    return t


def one_call(caller, route, callee, operation):
    """``caller`` serving ``route`` calls ``callee``'s ``operation``: one new call, for tests that watch
    a change arrive."""
    t = Trace()
    root = t.span(caller, f"{caller}-1", route, "server", 0, 20)
    call = t.span(caller, f"{caller}-1", "GET", "client", 2, 10, parent=root, peer=callee)
    t.span(callee, f"{callee}-1", operation, "server", 3, 8, parent=call)
    return t


def hostile():
    t = Trace()
    root = t.span(
        HOSTILE,
        "<b>bold-1</b>",
        "<script>alert(2)</script>",
        "server",
        0,
        30,
        attributes={"note": "<img src=y onerror=alert(3)>", "<i>key</i>": "x"},
    )
    call = t.span(HOSTILE, "<b>bold-1</b>", "GET", "client", 2, 20, parent=root, peer="orders")
    t.span("orders", "orders-1", "GET /orders", "server", 3, 18, parent=call)
    return t


def store(*traces):
    from django.db import transaction

    records = [record for trace in traces for record in trace.records]
    with transaction.atomic():
        store_spans(records, messages=1)
    return traces


def seed_mesh(traces=6, errors=1):
    stored = [checkout(error=i < errors) for i in range(traces)]
    store(*stored)
    return stored
