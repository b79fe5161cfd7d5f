"""Decoding of each wire format into normalised spans, field by field."""

import json
import time
from dataclasses import replace

import pytest

from collectors.formats import SpanRejected, decode, detect_format
from tests.trace_payloads import OtelTraces, now_ns, otlp_json, otlp_protobuf

# The example span of Zipkin's API documentation (zipkin.io/zipkin-api, POST /spans), with its
# timestamp moved to now: meshscope refuses spans older than the span retention.
ZIPKIN_DOCUMENTED_SPAN = {
    "id": "352bff9a74ca9ad2",
    "traceId": "5af7183fb1d4cf5f",
    "parentId": "6b221d5bc9e6496c",
    "name": "get /api",
    "timestamp": 1556604172355737,
    "duration": 1431,
    "kind": "SERVER",
    "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
    "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
    "tags": {"http.method": "GET", "http.path": "/api"},
}


def test_zipkin_documented_example_decodes_field_by_field():
    span = dict(ZIPKIN_DOCUMENTED_SPAN, timestamp=int(time.time() * 1e6))
    (record,) = decode(json.dumps([span]).encode(), "zipkin_json", 10**6, 86400).spans

    assert record.trace_id == "00000000000000005af7183fb1d4cf5f"
    assert (record.span_id, record.parent_id) == ("352bff9a74ca9ad2", "6b221d5bc9e6496c")
    assert (record.service, record.instance, record.kind) == ("backend", "192.168.99.1:3306", "server")
    assert (record.name, record.protocol, record.duration_us) == ("get /api", "http", 1431)
    assert record.start_us == span["timestamp"]
    assert (record.error, record.peer) == (False, "")
    assert record.attributes == {"http.method": "GET", "http.path": "/api"}


def test_otlp_protobuf_and_json_decode_to_the_same_spans():
    traces = OtelTraces()
    root = traces.span(
        "checkout",
        "checkout-1",
        "POST /pay",
        "server",
        now_ns(),
        12,
        attributes={"http.request.method": "POST", "http.response.status_code": 201},
    )
    traces.span(
        "checkout",
        "checkout-1",
        "Charge",
        "client",
        now_ns(),
        8,
        parent=root,
        attributes={"rpc.system": "grpc", "server.address": "payments.svc", "server.port": 50051},
    )
    spans = traces.finished()

    from_proto = decode(otlp_protobuf(spans), "otlp_proto", 10**6, 86400).spans
    from_json = decode(otlp_json(spans), "otlp_json", 10**6, 86400).spans

    assert {r.wire_format for r in from_proto} == {"otlp_proto"} and {r.wire_format for r in from_json} == {"otlp_json"}
    assert [replace(r, wire_format="") for r in from_proto] == [replace(r, wire_format="") for r in from_json]
    server, client = sorted(from_proto, key=lambda r: r.kind, reverse=True)
    assert (server.kind, server.status_code, server.protocol, server.parent_id) == ("server", "201", "http", "")
    assert (client.kind, client.protocol, client.peer, client.parent_id) == (
        "client",
        "grpc",
        "payments.svc:50051",
        server.span_id,
    )
    assert client.instance == "checkout-1" and len(client.trace_id) == 32


def test_an_otlp_server_span_without_an_instance_id_is_told_apart_by_the_address_it_serves():
    traces = OtelTraces()
    traces.span(
        "orders",
        None,
        "GET /orders",
        "server",
        now_ns(),
        5,
        attributes={"server.address": "10.1.2.3", "server.port": 8081},
    )
    traces.span(
        "orders",
        None,
        "GET /legacy",
        "server",
        now_ns(),
        5,
        attributes={"net.host.name": "10.1.2.4", "net.host.port": 8082},
    )
    traces.span(
        "orders", None, "SELECT", "client", now_ns(), 5, attributes={"server.address": "db", "server.port": 5432}
    )

    records = decode(otlp_protobuf(traces.finished()), "otlp_proto", 10**6, 86400).spans

    assert [(r.name, r.instance) for r in records] == [
        ("GET /orders", "10.1.2.3:8081"),
        ("GET /legacy", "10.1.2.4:8082"),
        ("SELECT", ""),
    ]


def test_zipkin_fields_of_the_wrong_type_reject_their_span_only():
    now = int(time.time() * 1e6)
    good = dict(ZIPKIN_DOCUMENTED_SPAN, timestamp=now)
    payload = json.dumps([dict(good, traceId=123), dict(good, id="aaaaaaaaaaaaaaaa", kind=["SERVER"]), good]).encode()

    decoded = decode(payload, "zipkin_json", 10**6, 86400)

    assert [record.span_id for record in decoded.spans] == ["352bff9a74ca9ad2"]
    assert [rejected.reason for rejected in decoded.rejected] == ["wrong_shape", "wrong_shape"]


def test_otlp_json_span_that_is_not_an_object_is_the_wrong_shape():
    payload = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [5]}]}]}).encode()
    with pytest.raises(SpanRejected) as rejected:
        decode(payload, "otlp_json", 10**6, 86400)
    assert rejected.value.reason == "wrong_shape"


def test_attributes_are_bounded_in_count_and_size():
    traces = OtelTraces()
    attributes = {f"key.{i:03}": "x" * 5000 for i in range(100)}
    traces.span("api", "api-1", "GET /", "server", now_ns(), 1, attributes=attributes)

    (record,) = decode(otlp_protobuf(traces.finished()), "otlp_proto", 10**6, 86400).spans

    assert len(record.attributes) == 65 and record.attributes["meshscope.dropped_attributes"] == 36
    assert max(len(value) for value in record.attributes.values() if isinstance(value, str)) == 1025


@pytest.mark.parametrize(
    "payload,expected", [(b"[{}]", "zipkin_json"), (b' {"resourceSpans": []}', "otlp_json"), (b"\n\x12", "otlp_proto")]
)
def test_the_format_is_detected_from_the_first_byte(payload, expected):
    assert detect_format(payload) == expected


def test_protobuf_garbage_is_not_decodable():
    with pytest.raises(SpanRejected) as rejected:
        decode(b"\xff\xff\xff\xff not protobuf", "otlp_proto", 10**6, 86400)
    # The README: a message that is not JSON or protobuf is `not_decodable`; `wrong_shape` is for
    # one that parses but is not a trace export.
    assert rejected.value.reason == "not_decodable"


# --- The limits the README states, each just inside and just outside -------------------------------


def zipkin_at(seconds_from_now, **fields):
    span = dict(ZIPKIN_DOCUMENTED_SPAN, timestamp=int((time.time() + seconds_from_now) * 1e6), **fields)
    return json.dumps([span]).encode()


def reasons(payload, max_age_seconds=86400):
    return [rejected.reason for rejected in decode(payload, "zipkin_json", 10**7, max_age_seconds).rejected]


def test_a_span_up_to_ten_minutes_ahead_is_taken_as_clock_skew():
    assert reasons(zipkin_at(10 * 60 - 10)) == []


def test_a_span_more_than_ten_minutes_ahead_is_a_bad_timestamp():
    assert reasons(zipkin_at(10 * 60 + 10)) == ["bad_timestamp"]


def test_a_span_older_than_the_span_retention_is_a_bad_timestamp():
    assert reasons(zipkin_at(-3590), max_age_seconds=3600) == []
    assert reasons(zipkin_at(-3610), max_age_seconds=3600) == ["bad_timestamp"]


def test_a_span_with_a_thousand_attributes_is_kept_and_one_with_more_is_dead_lettered():
    def tags(n):
        return {f"k{i}": "v" for i in range(n)}

    assert reasons(zipkin_at(0, tags=tags(1000))) == []
    assert reasons(zipkin_at(0, tags=tags(1001))) == ["too_many_attributes"]


def test_sixty_four_attributes_are_kept_whole_and_the_rest_counted():
    def kept(n):
        (record,) = decode(zipkin_at(0, tags={f"k{i:03}": "v" for i in range(n)}), "zipkin_json", 10**7, 86400).spans
        return record.attributes

    assert len(kept(64)) == 64 and "meshscope.dropped_attributes" not in kept(64)
    assert len(kept(65)) == 65 and kept(65)["meshscope.dropped_attributes"] == 1


def test_an_attribute_value_is_cut_after_one_kib():
    def kept(value):
        (record,) = decode(zipkin_at(0, tags={"note": value}), "zipkin_json", 10**7, 86400).spans
        return record.attributes["note"]

    assert kept("x" * 1024) == "x" * 1024
    assert kept("x" * 1025) == "x" * 1024 + "…"


def test_a_message_of_the_maximum_size_is_read_and_one_byte_more_is_too_large():
    payload = zipkin_at(0)

    assert len(decode(payload, "zipkin_json", len(payload), 86400).spans) == 1
    with pytest.raises(SpanRejected) as rejected:
        decode(payload, "zipkin_json", len(payload) - 1, 86400)
    assert rejected.value.reason == "too_large"


# --- Whom an uninstrumented callee is counted as (README, "An uninstrumented callee") ------------------


def test_a_client_names_its_callee_by_peer_service_before_its_server_address():
    traces = OtelTraces()
    attributes = {"peer.service": "billing", "server.address": "10.0.0.7", "server.port": 8080}
    traces.span("web", "web-1", "GET", "client", now_ns(), 5, attributes=attributes)

    (record,) = decode(otlp_protobuf(traces.finished()), "otlp_proto", 10**6, 86400).spans

    assert record.peer == "billing"


def test_a_zipkin_client_without_peer_attributes_names_its_callee_by_its_remote_endpoint():
    span = dict(ZIPKIN_DOCUMENTED_SPAN, timestamp=int(time.time() * 1e6), kind="CLIENT", tags={})

    (record,) = decode(json.dumps([span]).encode(), "zipkin_json", 10**6, 86400).spans

    assert record.peer == "172.19.0.2:58648"
