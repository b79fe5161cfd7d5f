"""Spans travel through a real Kafka-protocol broker (Tansu) into services, spans and rollups."""

import pytest
from django.db.models import Sum

from tests.kafka_helpers import consume_until, create_topic, produce, span_consumer
from tests.trace_payloads import OtelTraces, now_ns, otlp_json, otlp_protobuf, zipkin_json, zipkin_span
from topology.models import EdgeRollup, Instance, InstanceRollup, RouteRollup, Service, Span

pytestmark = pytest.mark.django_db(transaction=True)


def checkout_trace(traces, start_ns, error=False):
    """gateway GET /api/orders → orders GET /orders (gateway-1 → orders-2)."""
    root = traces.span(
        "gateway",
        "gateway-1",
        "GET /api/orders",
        "server",
        start_ns,
        50,
        attributes={"http.request.method": "GET", "http.route": "/api/orders"},
    )
    call = traces.span(
        "gateway",
        "gateway-1",
        "GET",
        "client",
        start_ns + 1_000_000,
        40,
        parent=root,
        attributes={"http.request.method": "GET", "peer.service": "orders"},
    )
    traces.span(
        "orders",
        "orders-2",
        "GET /orders",
        "server",
        start_ns + 2_000_000,
        30,
        parent=call,
        attributes={"http.request.method": "GET", "http.response.status_code": 500},
        error=error,
    )


def edge_count(source, target, **filters):
    rows = EdgeRollup.objects.filter(source__name=source, target__name=target, **filters)
    return rows.aggregate(total=Sum("count"))["total"] or 0


@pytest.mark.parametrize(
    "encode,fmt", [(otlp_protobuf, "otlp_proto"), (otlp_json, "otlp_json"), (otlp_protobuf, "auto")]
)
def test_otlp_spans_become_services_instances_an_edge_and_an_entry_route(kafka_bootstrap, topic_name, encode, fmt):
    traces = OtelTraces()
    checkout_trace(traces, now_ns())
    checkout_trace(traces, now_ns(), error=True)
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [encode(traces.finished())])

    consumer = span_consumer(kafka_bootstrap, {topic_name: fmt})
    assert consume_until(consumer, lambda: Span.objects.count() == 6)
    consumer.close()

    assert set(Service.objects.values_list("name", flat=True)) == {"gateway", "orders"}
    assert Instance.objects.get(service__name="orders").identity == "orders-2"
    edge = EdgeRollup.objects.get(source__name="gateway", target__name="orders")
    assert (edge.count, edge.errors, edge.protocol, edge.topic) == (2, 1, "http", "")
    assert 36 <= edge.histogram.percentile(0.5) <= 44  # the CLIENT span's 40 ms, within a bucket
    route = RouteRollup.objects.get()
    assert (route.service.name, route.operation, route.count) == ("gateway", "GET /api/orders", 2)
    served = InstanceRollup.objects.get(instance__identity="orders-2")
    assert (served.caller.name, served.count, served.errors) == ("gateway", 2, 1)
    assert Span.objects.filter(paired=False).count() == 0


def test_zipkin_json_v2_spans_make_the_same_edge_including_shared_server_spans(kafka_bootstrap, topic_name):
    start = now_ns() / 1e9
    trace_id = "5af7183fb1d4cf5f"
    message = zipkin_json(
        [
            zipkin_span(
                "frontend", "get /checkout", "server", trace_id, "6b221d5bc9e6496c", start_s=start, duration_s=0.05
            ),
            zipkin_span(
                "frontend",
                "get",
                "client",
                trace_id,
                "352bff9a74ca9ad2",
                parent_id="6b221d5bc9e6496c",
                start_s=start + 0.001,
                duration_s=0.03,
                remote_service="backend",
                tags={"http.method": "GET"},
            ),
            # B3 shared span: the server half reuses the client's id.
            zipkin_span(
                "backend",
                "get /api",
                "server",
                trace_id,
                "352bff9a74ca9ad2",
                parent_id="6b221d5bc9e6496c",
                start_s=start + 0.002,
                duration_s=0.02,
                port=9000,
                tags={"http.method": "GET", "error": "boom"},
                shared=True,
            ),
        ]
    )
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [message])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "zipkin_json"})
    assert consume_until(consumer, lambda: Span.objects.count() == 3)
    consumer.close()

    edge = EdgeRollup.objects.get(source__name="frontend", target__name="backend")
    assert (edge.count, edge.errors, edge.protocol) == (1, 1, "http")
    assert Instance.objects.get(service__name="backend").identity == "10.0.0.1:9000"
    assert Span.objects.get(service__name="frontend", kind="server").trace_id == trace_id.rjust(32, "0")


def test_an_edge_is_counted_when_the_child_arrives_first_on_another_partition(kafka_bootstrap, topic_name):
    traces = OtelTraces()
    checkout_trace(traces, now_ns())
    spans = traces.finished()
    orders_spans = [span for span in spans if span.resource.attributes["service.name"] == "orders"]
    gateway_spans = [span for span in spans if span.resource.attributes["service.name"] == "gateway"]
    create_topic(kafka_bootstrap, topic_name, partitions=2)
    consumer = span_consumer(kafka_bootstrap, {topic_name: "otlp_proto"})

    produce(kafka_bootstrap, topic_name, [otlp_protobuf(orders_spans)], partition=1)
    assert consume_until(consumer, lambda: Span.objects.count() == 1)
    assert edge_count("gateway", "orders") == 0
    produce(kafka_bootstrap, topic_name, [otlp_protobuf(gateway_spans)], partition=0)
    assert consume_until(consumer, lambda: Span.objects.count() == 3)
    consumer.close()

    assert edge_count("gateway", "orders") == 1
    assert InstanceRollup.objects.get(instance__identity="orders-2").caller.name == "gateway"


def test_producer_and_consumer_spans_make_an_async_edge_with_its_propagation_delay(kafka_bootstrap, topic_name):
    traces = OtelTraces()
    start = now_ns()
    messaging = {"messaging.system": "kafka", "messaging.destination.name": "order-events"}
    for delay_ms in (100, 200, 300):
        send = traces.span("orders", "orders-1", "order-events publish", "producer", start, 2, attributes=messaging)
        traces.span(
            "inventory",
            "inventory-1",
            "order-events process",
            "consumer",
            start + delay_ms * 1_000_000,
            5,
            parent=send,
            attributes=messaging,
        )
    # A consumer whose clock runs behind its producer's: the delay comes out negative.
    send = traces.span("orders", "orders-1", "order-events publish", "producer", start, 2, attributes=messaging)
    traces.span(
        "inventory",
        "inventory-1",
        "order-events process",
        "consumer",
        start - 50_000_000,
        5,
        parent=send,
        attributes=messaging,
    )
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [otlp_protobuf(traces.finished())])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "otlp_proto"})
    assert consume_until(consumer, lambda: Span.objects.count() == 8)
    consumer.close()

    flow = EdgeRollup.objects.get(source__name="orders", target__name="inventory")
    assert (flow.topic, flow.protocol, flow.count, flow.negative_delays) == ("order-events", "messaging", 4, 1)
    assert 180 <= flow.histogram.percentile(0.5) <= 220
    assert flow.histogram.total == 3


def test_a_redelivered_message_counts_nothing_twice(kafka_bootstrap, topic_name):
    traces = OtelTraces()
    checkout_trace(traces, now_ns())
    message = otlp_protobuf(traces.finished())
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [message, message])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "otlp_proto"})
    assert consume_until(consumer, lambda: RouteRollup.objects.exists())
    consumer.run(2)
    consumer.close()

    assert Span.objects.count() == 3
    assert edge_count("gateway", "orders") == 1
    assert RouteRollup.objects.get().count == 1
