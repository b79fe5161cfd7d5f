"""A stream of spans of a known shape, and what meshscope must make of it.

Every trace is gateway → orders → payments: gateway's SERVER span (the entry route) and CLIENT span,
orders' SERVER and CLIENT spans, recorded through the OpenTelemetry SDK and sent as OTLP protobuf, and
payments' SERVER span sent as Zipkin JSON v2 on another topic, as a service on another tracer would.
A trace's spans thus reach meshscope in two messages, on two topics, often on different partitions
and in either order, so every call edge is paired across messages.

With ``unpaired_every``, every so many traces come with a call of orders' to its database, which sends
no spans: a CLIENT span alone, in a trace of its own, UNPAIRED_AGE_SECONDS old, that only the beat
worker's resolve_unpaired_spans counts (as an edge to the peer it names) once the pairing grace is past.

Instances, routes and errors follow the trace's number, so the expected rollups are known exactly:
``build`` returns them with the messages, and ``observed()`` reads the same figures from the database.
"""

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db.models import Count, Sum

from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf, zipkin_json, zipkin_span
from topology.models import DeadLetter, EdgeRollup, InstanceRollup, RouteRollup, Span

GATEWAYS = ("gateway-1", "gateway-2")
ORDERS = ("orders-1", "orders-2", "orders-3")
PAYMENT_PORTS = (9001, 9002)  # payments' Zipkin localEndpoint: its instance is 10.0.0.1:<port>
ROUTES = ("GET /api/cart", "POST /api/checkout", "GET /api/orders")
SPANS_PER_TRACE = 5
UNPAIRED_PEER = "inventory-db"
UNPAIRED_ROUTE = "SELECT stock"
# Older than the pairing grace a scenario gives the worker, and outside the live windows it watches.
UNPAIRED_AGE_SECONDS = 1800
TRACES_PER_MESSAGE = 10
# Messages no decoder accepts, with the dead-letter reason each must be recorded under, per format.
MALFORMED = {
    "otlp_proto": [(b"this is no protobuf", "not_decodable")],
    "zipkin_json": [(b"{not json", "not_decodable"), (b'{"spans": []}', "wrong_shape")],
}


@dataclass
class Figures:
    """The counts a stream makes: what ``build`` expects, and what ``observed()`` reads back."""

    spans: int = 0
    edges: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (calls, errors)
    instances: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (service, instance, caller)
    routes: dict[tuple[str, str], int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # by reason

    def summary(self) -> str:
        edges = sum(calls for calls, _ in self.edges.values())
        return (
            f"spans={self.spans} edge_calls={edges} instance_requests={sum(self.instances.values())} "
            f"routes={sum(self.routes.values())} dead_letters={sum(self.dead_letters.values())}"
        )


@dataclass
class SpanStream:
    messages: list[tuple[str, bytes]]  # (topic, payload), in the order they are produced
    expected: Figures


def build(traces: int, otlp_topic: str, zipkin_topic: str, unpaired_every: int = 0) -> SpanStream:
    """``traces`` traces (5 spans each) in messages of ``TRACES_PER_MESSAGE`` traces per topic, with the
    MALFORMED messages spread through the stream, and an unpaired call after every ``unpaired_every``-th
    trace (none with 0)."""
    otel = OtelTraces()
    good: list[tuple[str, bytes]] = []
    edges: Counter[tuple[str, str, bool]] = Counter()
    instances: Counter[tuple[str, str, str]] = Counter()
    routes: Counter[tuple[str, str]] = Counter()
    for first in range(0, traces, TRACES_PER_MESSAGE):
        payments = []
        for number in range(first, min(first + TRACES_PER_MESSAGE, traces)):
            payments.append(_trace(otel, number, edges, instances, routes))
            if unpaired_every and number % unpaired_every == 0:
                _unpaired_call(otel, number, edges, routes)
        otlp_message = (otlp_topic, otlp_protobuf(otel.finished()))
        zipkin_message = (zipkin_topic, zipkin_json(payments))
        # Half the time the callee's spans go first: pairing must not depend on the order.
        good.extend(
            [zipkin_message, otlp_message] if (first // TRACES_PER_MESSAGE) % 2 else [otlp_message, zipkin_message]
        )
    bad = [
        (otlp_topic if fmt == "otlp_proto" else zipkin_topic, payload, reason)
        for fmt, items in MALFORMED.items()
        for payload, reason in items
    ]
    messages = list(good)
    for index, (topic, payload, _) in enumerate(bad):
        messages.insert((index + 1) * len(messages) // (len(bad) + 1), (topic, payload))
    unpaired = len(range(0, traces, unpaired_every)) if unpaired_every else 0
    expected = Figures(
        spans=traces * SPANS_PER_TRACE + unpaired,
        edges={},
        instances=dict(instances),
        routes=dict(routes),
        dead_letters=dict(Counter(reason for _, _, reason in bad)),
    )
    for (source, target, error), calls in edges.items():
        total, errors = expected.edges.get((source, target), (0, 0))
        expected.edges[(source, target)] = (total + calls, errors + (calls if error else 0))
    return SpanStream(messages=messages, expected=expected)


def _trace(otel: OtelTraces, number: int, edges: Counter, instances: Counter, routes: Counter) -> dict:
    """Records trace ``number``'s four OTLP spans with the SDK; returns payments' Zipkin span."""
    gateway, orders = GATEWAYS[number % len(GATEWAYS)], ORDERS[number % len(ORDERS)]
    payments_port = PAYMENT_PORTS[(number // 2) % len(PAYMENT_PORTS)]
    route = ROUTES[number % len(ROUTES)]
    failed = number % 10 == 3  # payments fails one call in ten: the orders → payments edge shows it
    start = now_ns() - 2_000_000_000
    root = otel.span("gateway", gateway, route, "server", start, 40, attributes={"http.request.method": "GET"})
    to_orders = otel.span(
        "gateway", gateway, "POST /orders", "client", start + 1_000_000, 35, parent=root,
        attributes={"http.request.method": "POST", "peer.service": "orders"},
    )  # fmt: skip
    served = otel.span(
        "orders", orders, "POST /orders", "server", start + 2_000_000, 30, parent=to_orders,
        attributes={"http.request.method": "POST"},
    )  # fmt: skip
    to_payments = otel.span(
        "orders", orders, "POST /charge", "client", start + 3_000_000, 20, parent=served,
        attributes={"http.request.method": "POST", "peer.service": "payments"},
    )  # fmt: skip
    routes[("gateway", route)] += 1
    edges[("gateway", "orders", False)] += 1
    edges[("orders", "payments", failed)] += 1
    instances[("gateway", gateway, "")] += 1
    instances[("orders", orders, "gateway")] += 1
    instances[("payments", f"10.0.0.1:{payments_port}", "orders")] += 1
    return zipkin_span(
        "payments",
        "POST /charge",
        "server",
        trace_id=format(to_payments.context.trace_id, "032x"),
        span_id=uuid.uuid4().hex[:16],
        parent_id=format(to_payments.context.span_id, "016x"),
        start_s=(start + 4_000_000) / 1e9,
        duration_s=0.015,
        port=payments_port,
        tags={"http.method": "POST", **({"error": "card declined"} if failed else {})},
    )


def _unpaired_call(otel: OtelTraces, number: int, edges: Counter, routes: Counter) -> None:
    """Orders queries its database, in a trace of its own: the span's only record of the call."""
    start = now_ns() - UNPAIRED_AGE_SECONDS * 1_000_000_000
    attributes = {"db.system": "postgresql", "peer.service": UNPAIRED_PEER}
    otel.span("orders", ORDERS[number % len(ORDERS)], UNPAIRED_ROUTE, "client", start, 5, attributes=attributes)
    edges[("orders", UNPAIRED_PEER, False)] += 1
    routes[("orders", UNPAIRED_ROUTE)] += 1  # a root span is its trace's entry, whatever its kind


def observed() -> Figures:
    """The same figures, as the database holds them now (summed over every minute)."""
    edges = {
        (row["source__name"], row["target__name"]): (row["calls"], row["failed"])
        for row in EdgeRollup.objects.values("source__name", "target__name").annotate(
            calls=Sum("count"), failed=Sum("errors")
        )
    }
    instances = {
        (row["instance__service__name"], row["instance__identity"], row["caller__name"] or ""): row["requests"]
        for row in InstanceRollup.objects.values(
            "instance__service__name", "instance__identity", "caller__name"
        ).annotate(requests=Sum("count"))
    }
    routes = {
        (row["service__name"], row["operation"]): row["calls"]
        for row in RouteRollup.objects.values("service__name", "operation").annotate(calls=Sum("count"))
    }
    dead = {row["reason"]: row["n"] for row in DeadLetter.objects.values("reason").annotate(n=Count("id"))}
    return Figures(spans=Span.objects.count(), edges=edges, instances=instances, routes=routes, dead_letters=dead)


def more_spans_than(count: int) -> Callable[[], bool]:
    """A condition for ``wait_for``: more spans are stored than ``count``."""
    return lambda: Span.objects.count() > count
