"""POST /v1/traces: the OpenTelemetry SDK's own OTLP/HTTP exporter against a live server, its spans in
Kafka and counted once a span consumer polls; and every refusal the OTLP/HTTP specification names."""

import gzip
import uuid

import pytest
import requests
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

from dashboard.ops.otlp import close_producers
from demo.embedded import free_port
from tests.kafka_helpers import consume_until, create_topic, span_consumer
from tests.trace_payloads import OtelTraces, now_ns, otlp_json, otlp_protobuf
from topology.models import DeadLetter, Span

TOKEN = "otlp-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def checkout_spans(traces=None):
    """A gateway calling orders, recorded by the real SDK: three spans of one trace."""
    traces = traces or OtelTraces()
    start = now_ns()
    root = traces.span("gateway", "gateway-1", "GET /checkout", "server", start, 30)
    call = traces.span("gateway", "gateway-1", "GET", "client", start + 10**6, 20, parent=root)
    traces.span("orders", "orders-1", "GET /orders", "server", start + 2 * 10**6, 15, parent=call)
    return traces.finished()


@pytest.fixture
def receiver(settings, live_server, kafka_bootstrap):
    """The receiver on, with a protobuf topic and a JSON topic of its own."""
    proto_topic, json_topic = f"otlp-{uuid.uuid4().hex[:8]}", f"otlp-json-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, proto_topic)
    create_topic(kafka_bootstrap, json_topic)
    settings.OTLP_TOKEN = TOKEN
    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_bootstrap]
    settings.TRACE_TOPICS = {"zipkin": "zipkin_json", proto_topic: "otlp_proto", json_topic: "otlp_json"}
    yield {"url": f"{live_server.url}/v1/traces", "proto": proto_topic, "json": json_topic}
    close_producers()


def count_after_polling(kafka_bootstrap, topics, expected):
    consumer = span_consumer(kafka_bootstrap, topics)
    try:
        consume_until(consumer, lambda: Span.objects.count() >= expected)
    finally:
        consumer.close()
    return Span.objects.count()


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_sdk_exporter_delivers_spans_that_a_span_consumer_then_counts(receiver, kafka_bootstrap, compression):
    exporter = OTLPSpanExporter(endpoint=receiver["url"], headers=AUTH, timeout=10, compression=compression)
    try:
        assert exporter.export(checkout_spans()) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert count_after_polling(kafka_bootstrap, {receiver["proto"]: "otlp_proto"}, 3) == 3
    assert set(Span.objects.values_list("service__name", flat=True)) == {"gateway", "orders"}


def test_otlp_json_goes_to_the_json_topic_and_is_answered_in_json(receiver, kafka_bootstrap):
    response = requests.post(
        receiver["url"], data=otlp_json(checkout_spans()), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {}
    assert count_after_polling(kafka_bootstrap, {receiver["json"]: "otlp_json"}, 3) == 3


def test_a_protobuf_answer_is_an_empty_export_response(receiver):
    response = requests.post(
        receiver["url"],
        data=gzip.compress(otlp_protobuf(checkout_spans())),
        headers={**AUTH, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()


def test_it_reports_partial_success_for_spans_the_decoder_rejects(receiver, kafka_bootstrap):
    spans = checkout_spans()
    document = json_format.MessageToDict(ExportTraceServiceResponse())  # {}
    body = otlp_json(spans).replace(b'"spanId": "', b'"spanId": "zz', 1)  # one span's id is not hex
    response = requests.post(receiver["url"], data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 200
    answer = response.json()
    assert answer != document
    assert int(answer["partialSuccess"]["rejectedSpans"]) == 1
    assert "bad_id" in answer["partialSuccess"]["errorMessage"]
    assert count_after_polling(kafka_bootstrap, {receiver["json"]: "otlp_json"}, 2) == 2
    assert DeadLetter.objects.filter(reason="bad_id").count() == 1


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"\xff\xfe not protobuf", {"Content-Type": "application/x-protobuf"}),
        (b'{"resourceSpans": ', {"Content-Type": "application/json"}),
        (b'{"no": "resourceSpans"}', {"Content-Type": "application/json"}),
        (b"not gzip at all", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}),
        (b"", {"Content-Type": "application/x-protobuf"}),
    ],
)
def test_it_refuses_an_undecodable_body_with_400_and_a_status(receiver, body, headers):
    response = requests.post(receiver["url"], data=body, headers={**AUTH, **headers})
    assert response.status_code == 400
    if headers["Content-Type"] == "application/x-protobuf":
        assert Status.FromString(response.content).message
    else:
        assert response.json()["message"]


def test_it_refuses_a_body_over_the_message_limit_with_413(receiver, settings):
    settings.SPAN_MAX_MESSAGE_BYTES = 1000
    body = otlp_protobuf(checkout_spans())
    big = body + b"\x00" * 1000
    response = requests.post(receiver["url"], data=big, headers={**AUTH, "Content-Type": "application/x-protobuf"})
    assert response.status_code == 413
    # gzip cannot smuggle it in: the limit holds for the decompressed body.
    response = requests.post(
        receiver["url"],
        data=gzip.compress(big),
        headers={**AUTH, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert len(gzip.compress(big)) < 1000
    assert response.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/grpc", "application/octet-stream", ""])
def test_it_refuses_other_content_types_with_415(receiver, content_type):
    response = requests.post(receiver["url"], data=b"x", headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 415


def test_it_refuses_a_content_encoding_it_cannot_read_with_415(receiver):
    headers = {**AUTH, "Content-Type": "application/x-protobuf", "Content-Encoding": "br"}
    assert requests.post(receiver["url"], data=b"x", headers=headers).status_code == 415


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Token {TOKEN}"}])
def test_it_refuses_a_missing_or_wrong_token_with_401(receiver, headers):
    response = requests.post(
        receiver["url"],
        data=otlp_protobuf(checkout_spans()),
        headers={**headers, "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_it_is_not_found_unless_a_token_is_configured(receiver, settings):
    settings.OTLP_TOKEN = ""
    response = requests.post(
        receiver["url"],
        data=otlp_protobuf(checkout_spans()),
        headers={**AUTH, "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 404


def test_it_answers_503_with_retry_after_when_the_broker_is_down(receiver, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    response = requests.post(
        receiver["url"],
        data=otlp_protobuf(checkout_spans()),
        headers={**AUTH, "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert Status.FromString(response.content).code == 14  # UNAVAILABLE


def test_it_needs_no_csrf_token_or_session(receiver):
    session = requests.Session()
    response = session.post(
        receiver["url"],
        data=otlp_protobuf(checkout_spans()),
        headers={**AUTH, "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 200
    assert not session.cookies
