"""Trace search by attribute and duration, through the API: spans recorded by the OpenTelemetry SDK
(typed attributes: a status code is a number) and by py_zipkin (tags: every value is text), found as
Jaeger's search finds them, with every condition on one span."""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import transaction

from collectors.formats import decode
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf, zipkin_json, zipkin_span
from topology.ingestion import store_spans
from topology.models import Span

pytestmark = pytest.mark.django_db

MS = 1_000_000  # nanoseconds
HOSTILE_KEY = "<script>alert(1)</script>"  # a logfmt key holds no space and no =
HOSTILE_VALUE = "'; DROP TABLE topology_span; -- <script>alert(2)</script>"


def store(message, wire_format):
    with transaction.atomic():
        store_spans(decode(message, wire_format, 10**7, 86400).spans)


def otel_trace(route, status, duration_ms=20, served_status=200, start_ns=None, attributes=None):
    """gateway serves ``route`` with ``status`` and calls orders, which answers ``served_status``."""
    traces = OtelTraces()
    start = start_ns or now_ns() - 2000 * MS
    root = traces.span(
        "gateway",
        "gateway-1",
        f"GET {route}",
        "server",
        start,
        duration_ms,
        attributes={"http.route": route, "http.response.status_code": status, **(attributes or {})},
        error=status >= 500,
    )
    call = traces.span("gateway", "gateway-1", "GET", "client", start + MS, duration_ms / 2, parent=root)
    traces.span(
        "orders",
        "orders-1",
        "GET /orders/{id}",
        "server",
        start + 2 * MS,
        duration_ms / 4,
        parent=call,
        attributes={"http.route": "/orders/{id}", "http.response.status_code": served_status},
    )
    store(otlp_protobuf(traces.finished()), "otlp_proto")
    return f"{root.get_span_context().trace_id:032x}"


def zipkin_trace(route, status, tags=None):
    """billing serves ``route``, recorded by py_zipkin: its status code is the text Zipkin tags hold."""
    trace_id = uuid.uuid4().hex
    span = zipkin_span(
        "billing",
        f"get {route}",
        "server",
        trace_id,
        trace_id[-16:],
        duration_s=0.03,
        tags={"http.route": route, "http.response.status_code": status, **(tags or {})},
    )
    store(zipkin_json([span]), "zipkin_json")
    return trace_id


def found(api, **params):
    response = api.get("/api/traces/", params)
    assert response.status_code == 200, response.content
    return {trace["trace_id"] for trace in response.json()}


def test_a_search_by_http_route_finds_the_traces_with_a_span_on_that_route(api):
    orders = otel_trace("/api/orders", 200)
    carts = otel_trace("/api/carts", 200)

    assert found(api, tags="http.route=/api/orders") == {orders}
    assert found(api, tags="http.route=/api/carts") == {carts}
    # A span deep in the trace matches too; the trace is listed by its root.
    response = api.get("/api/traces/", {"tags": "http.route=/orders/{id}"})
    assert {trace["trace_id"] for trace in response.json()} == {orders, carts}
    assert {trace["root_operation"] for trace in response.json()} == {"GET /api/orders", "GET /api/carts"}
    assert found(api, tags="http.route=/api") == set(), "a value matches whole, not as a prefix"


def test_a_status_code_matches_an_otlp_number_and_a_zipkin_string(api):
    otlp = otel_trace("/api/orders", 500)
    zipkin = zipkin_trace("/invoices", "500")
    otel_trace("/api/orders", 200)
    zipkin_trace("/invoices", "200")
    stored = {span.trace_id: span.attributes["http.response.status_code"] for span in Span.objects.filter(parent_id="")}
    assert (stored[otlp], stored[zipkin]) == (500, "500"), "the two formats store the code as number and text"

    assert found(api, tags="http.response.status_code=500") == {otlp, zipkin}
    assert found(api, tags='http.response.status_code="500"') == {otlp, zipkin}
    assert found(api, tags="http.response.status_code=404") == set()
    assert found(api, tags="http.response.status_code=500.0") == {otlp}, "500.0 is the number 500, not the text"


def test_every_tag_must_hold_on_one_span_as_in_jaeger(api):
    # The root served /api/orders with 200; the 500 is its callee's, on another span.
    callee_failed = otel_trace("/api/orders", 200, served_status=500)
    root_failed = otel_trace("/api/orders", 500)

    assert found(api, tags="http.route=/api/orders http.response.status_code=500") == {root_failed}
    assert found(api, tags="http.response.status_code=500") == {callee_failed, root_failed}
    assert found(api, tags="http.route=/api/orders http.route=/api/carts") == set(), "one value a key"


def test_any_stored_attribute_is_a_tag_whatever_its_type(api):
    acme = otel_trace(
        "/api/pay",
        200,
        attributes={"payment.provider": "acme corp", "cache.hit": True, "retry.count": 2, "ratio": 0.5},
    )
    other = otel_trace("/api/pay", 200, attributes={"payment.provider": "globex", "cache.hit": False})
    zipkin = zipkin_trace("/invoices", "200", tags={"cache.hit": "true"})

    assert found(api, tags='payment.provider="acme corp"') == {acme}
    assert found(api, tags="cache.hit=true") == {acme, zipkin}
    assert found(api, tags="cache.hit=false") == {other}
    assert found(api, tags="retry.count=2 ratio=0.5") == {acme}
    assert found(api, tags="payment.provider=acme") == set()
    assert found(api, tags="no.such.key=x") == set()


def test_a_duration_range_takes_jaegers_units_and_holds_on_the_matching_span(api):
    fast = otel_trace("/api/orders", 200, duration_ms=20)
    slow = otel_trace("/api/orders", 200, duration_ms=100)
    slowest = otel_trace("/api/orders", 200, duration_ms=1500)

    assert found(api, min_duration="100ms") == {slow, slowest}
    assert found(api, min_duration="100001us") == {slowest}
    assert found(api, max_duration="1s") == {fast, slow, slowest}, "each has a span under a second"
    assert found(api, min_duration="50ms", max_duration="0.2s") == {slow}
    assert found(api, min_duration="1.5s", max_duration="1.5s") == {slowest}
    assert found(api, min_duration="2m") == set()
    assert found(api, min_duration="1h", max_duration="1ms") == set(), "an empty range matches nothing"
    # The duration belongs to the span that meets the other conditions: orders' span is a quarter of its root.
    assert found(api, tags="http.route=/orders/{id}", min_duration="100ms") == {slowest}
    assert found(api, service="gateway", max_duration="10ms") == {fast}
    # The older parameter is the same bound in milliseconds; with both, both hold.
    assert found(api, min_duration_ms=100) == {slow, slowest}
    assert found(api, min_duration_ms=100, min_duration="1s") == {slowest}


def test_a_search_combines_service_operation_tags_and_the_traces_window(api):
    now = now_ns()
    recent = otel_trace("/api/orders", 500, start_ns=now - 2000 * MS)
    old = otel_trace("/api/orders", 500, start_ns=now - 600_000 * MS)
    carts = otel_trace("/api/carts", 500, start_ns=now - 2000 * MS)

    assert found(api, service="gateway", tags="http.response.status_code=500") == {recent, old, carts}
    assert found(api, service="orders", tags="http.response.status_code=500") == set(), "orders answered 200"
    assert found(api, service="orders", operation="GET /orders/{id}", tags="http.response.status_code=200") == {
        recent,
        old,
        carts,
    }
    assert found(api, service="gateway", operation="GET /api/carts", tags="http.route=/api/orders") == set()
    assert found(api, operation="GET /api/orders", window=300) == {recent}
    until = datetime.fromtimestamp((now - 540_000 * MS) / 1e9, UTC).isoformat()
    assert found(api, operation="GET /api/orders", window=120, until=until) == {old}
    assert found(api, operation="GET /api/orders", error="true", limit=1) == {recent}, "newest first"


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"tags": "http.route"}, "tags", "'http.route' at character 1 is not key=value"),
        ({"tags": "a=1 =2"}, "tags", "a value without a key at character 5: write key=value"),
        ({"tags": 'a="unclosed'}, "tags", "the quoted value of 'a' must end with a quote, then a space or the end"),
        ({"tags": 'a=x"y'}, "tags", "the value of 'a' has a quote: put the value in double quotes"),
        ({"tags": " ".join(f"k{i}=v" for i in range(17))}, "tags", "at most 16 tags"),
        ({"tags": "a=\x00"}, "tags", "must not contain NUL"),
        ({"min_duration": "120"}, "min_duration", "must be a number and a unit"),
        ({"max_duration": "1.5 s"}, "max_duration", "must be a number and a unit"),
        ({"min_duration": "-1s"}, "min_duration", "must be a number and a unit"),
        ({"min_duration_ms": "fast"}, "min_duration_ms", "must be a float"),
        ({"window": "an hour"}, "window", "window must be a whole number of seconds"),
        ({"until": "yesterday"}, "until", "until must be an ISO 8601 time or epoch seconds"),
        ({"limit": "0"}, "limit", "must be between 1 and 500"),
        ({"error": "maybe"}, "error", "must be true or false"),
    ],
)
def test_a_bad_search_is_refused_with_a_400_naming_the_parameter(api, params, parameter, message):
    response = api.get("/api/traces/", params)

    assert response.status_code == 400
    body = response.json()
    assert list(body) == [parameter]
    assert message in str(body[parameter]), body


def test_hostile_tags_are_plain_text_and_never_break_the_query(api):
    hostile = otel_trace("/api/orders", 200, attributes={HOSTILE_KEY: HOSTILE_VALUE, "it's": "o'clock"})
    otel_trace("/api/orders", 200)
    quoted = HOSTILE_VALUE.replace("\\", "\\\\").replace('"', '\\"')

    assert found(api, tags=f'{HOSTILE_KEY}="{quoted}"') == {hostile}
    assert found(api, tags="it's=o'clock") == {hostile}
    # Keys and values that look like SQL, JSON paths or JSON are only ever a key and a value.
    for tags in ["$[0]=1", "0=x", 'a.b="]"', "x={}", "x=null", "%=%", "\\=\\", "it's=o'clock'"]:
        assert found(api, tags=tags) == set(), tags
    response = api.get("/api/traces/", {"tags": f'{HOSTILE_KEY}="{quoted}"'})
    assert response["Content-Type"] == "application/json"
    assert response.json()[0]["trace_id"] == hostile
    assert Span.objects.count() == 6, "and the table is still there"
