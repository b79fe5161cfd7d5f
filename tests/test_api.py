"""The JSON API: login required everywhere, and the topology, traces and routes it derives."""

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from collectors.formats import decode
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf
from topology.ingestion import resolve_unpaired, store_spans
from topology.models import DeadLetter, IngestRollup
from topology.window import Window, WindowError

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    "/api/topology/",
    "/api/topology/export.dot",
    "/api/routes/",
    "/api/routes/tree/?service=a&operation=b",
    "/api/traces/",
    "/api/traces/0af7651916cd43dd8448eb211c80319c/",
    "/api/ingest/",
    "/api/services/",
    "/api/balancers/",
    "/api/balancers/orders/",
    "/api/lag/",
    "/api/flows/",
    "/api/schema/",
]


def ingest(spans):
    with transaction.atomic():
        return store_spans(decode(otlp_protobuf(spans), "otlp_proto", 10**7, 86400).spans)


def shop_traces(count=3, slow_every=None):
    traces = OtelTraces()
    for i in range(count):
        start = now_ns()
        root = traces.span(
            "gateway",
            "gateway-1",
            "GET /api/orders",
            "server",
            start,
            100 if slow_every and i % slow_every == 0 else 20,
        )
        call = traces.span(
            "gateway",
            "gateway-1",
            "GET",
            "client",
            start + 10**6,
            15,
            parent=root,
            attributes={"http.request.method": "GET"},
        )
        served = traces.span(
            "orders", "orders-1", "GET /orders", "server", start + 2 * 10**6, 10, parent=call, error=i == 0
        )
        send = traces.span(
            "orders",
            "orders-1",
            "order-events publish",
            "producer",
            start + 3 * 10**6,
            1,
            parent=served,
            attributes={"messaging.system": "kafka", "messaging.destination.name": "order-events"},
        )
        traces.span(
            "inventory",
            "inventory-1",
            "order-events process",
            "consumer",
            start + 53 * 10**6,
            2,
            parent=send,
            attributes={"messaging.system": "kafka", "messaging.destination.name": "order-events"},
        )
        traces.span(
            "gateway",
            "gateway-1",
            "GET",
            "client",
            start + 5 * 10**6,
            3,
            parent=root,
            attributes={"peer.service": "legacy-billing"},
        )
    return traces.finished()


@pytest.mark.parametrize("url", ENDPOINTS)
def test_every_endpoint_answers_401_without_login(client, url):
    response = client.get(url)
    assert response.status_code == 401
    # A 401 names the scheme that would open the door (RFC 9110), here DRF's token.
    assert response["WWW-Authenticate"] == "Token"
    assert b"nodes" not in response.content and b"trace_id" not in response.content


def test_the_openapi_schema_describes_the_endpoints(api):
    response = api.get("/api/schema/")

    assert response.status_code == 200
    assert b"/api/topology/" in response.content and b"/api/balancers/{service}/" in response.content


def test_a_token_opens_the_api(client):
    token = Token.objects.create(user=User.objects.create_user("robot"))
    assert client.get("/api/topology/", HTTP_AUTHORIZATION=f"Token {token.key}").status_code == 200
    assert client.get("/api/topology/", HTTP_AUTHORIZATION="Token wrong").status_code == 401


def test_topology_has_nodes_with_rates_and_sync_async_and_peer_edges(api):
    ingest(shop_traces(3))
    with transaction.atomic():
        resolve_unpaired(grace_seconds=-60)  # the uninstrumented legacy-billing never sends spans

    body = api.get("/api/topology/?window=300").json()

    edges = {(e["source"], e["target"]): e for e in body["edges"]}
    assert set(edges) == {("gateway", "orders"), ("orders", "inventory"), ("gateway", "legacy-billing")}
    call = edges[("gateway", "orders")]
    rps = pytest.approx(3 / Window.from_params(300).covered_seconds, abs=0.001)
    assert (call["sync"], call["protocol"], call["rps"], call["error_rate"]) == ("sync", "http", rps, 0.3333)
    assert 13.5 <= call["p50_ms"] <= 16.5
    flow = edges[("orders", "inventory")]
    assert (flow["sync"], flow["topic"]) == ("async", "order-events")
    assert 45 <= flow["p95_ms"] <= 55
    nodes = {n["name"]: n for n in body["nodes"]}
    assert set(nodes) == {"gateway", "orders", "inventory", "legacy-billing"}
    assert (nodes["orders"]["rps"], nodes["orders"]["error_rate"], nodes["orders"]["source"]) == (rps, 0.3333, "traces")


def test_rates_divide_by_the_time_the_counted_minutes_span():
    window = Window.from_params(60, until="2026-11-25T10:00:50Z")

    # The rollup of 09:59 is counted whole, so 110 s of traffic are divided by 110 s, not by 60.
    assert window.covered_seconds == 110
    assert window.per_second(220) == 2.0


def test_the_time_rates_divide_by_grows_in_ten_second_steps():
    covered = [
        Window.from_params(300, until=f"2026-11-25T10:00:{second:02}Z").covered_seconds for second in (41, 45, 50, 51)
    ]

    assert covered == [350, 350, 350, 360]


def test_a_window_may_span_60_seconds_to_14_days(api):
    for seconds in (60, 14 * 86400):
        assert Window.from_params(seconds).seconds == seconds
        assert api.get(f"/api/topology/?window={seconds}").json()["window"] == seconds
    for seconds in (59, 14 * 86400 + 1):
        with pytest.raises(WindowError):
            Window.from_params(seconds)
        assert api.get(f"/api/topology/?window={seconds}").status_code == 400


def test_the_window_is_300_seconds_unless_given(api):
    assert Window.from_params().seconds == 300
    assert api.get("/api/topology/").json()["window"] == 300


def test_a_routes_call_tree_looks_back_15_minutes_unless_told(api):
    traces = OtelTraces()
    traces.span("gateway", "gateway-1", "GET /old", "server", now_ns() - 10 * 60 * 10**9, 10)
    ingest(traces.finished())
    route = {"service": "gateway", "operation": "GET /old"}

    assert api.get("/api/routes/tree/", route).json()["requests"] == 1
    assert api.get("/api/routes/tree/", {**route, "window": 300}).json()["requests"] == 0


@pytest.mark.parametrize("until", ["1795000000", "2026-11-18T11:06:40Z", "2026-11-18T11:06:40"])
def test_until_is_epoch_seconds_or_iso_8601_in_utc_unless_it_says(api, until):
    assert Window.from_params(300, until=until).until == datetime(2026, 11, 18, 11, 6, 40, tzinfo=UTC)
    assert api.get("/api/topology/", {"until": until}).json()["until"] == "2026-11-18T11:06:40Z"
    assert api.get("/api/edges/detail/", {"source": "a", "target": "b", "until": until}).status_code == 404


def test_until_takes_fractions_of_a_second():
    assert Window.from_params(300, until="1795000000.5").until == datetime(2026, 11, 18, 11, 6, 40, 500000, tzinfo=UTC)


@pytest.mark.parametrize("until", ["abc", "2026-13-01T00:00:00Z", "99999999999999999"])
@pytest.mark.parametrize(
    "url, params", [("/api/topology/", {}), ("/api/routes/", {}), ("/api/services/detail/", {"name": "a"})]
)
def test_an_impossible_until_is_a_clear_400(api, url, params, until):
    response = api.get(url, {**params, "until": until})

    assert response.status_code == 400
    assert "until must be an ISO 8601 time or epoch seconds" in response.content.decode()


WINDOWED_ENDPOINTS = [
    ("/api/topology/", {}),
    ("/api/topology/export.dot", {}),
    ("/api/routes/", {}),
    ("/api/routes/tree/", {"service": "a", "operation": "b"}),
    ("/api/services/detail/", {"name": "a"}),
    ("/api/edges/detail/", {"source": "a", "target": "b"}),
    ("/api/services/shares/", {"name": "a"}),
    ("/api/balancers/", {}),
    ("/api/balancers/a/", {}),
    ("/api/lag/", {}),
    ("/api/flows/", {}),
]


@pytest.mark.parametrize(("url", "params"), WINDOWED_ENDPOINTS)
def test_every_endpoint_takes_a_window_of_60_seconds_to_14_days(api, url, params):
    for seconds in (60, 14 * 86400):
        assert api.get(url, {**params, "window": seconds}).status_code in (200, 404)  # 404: no such service
    for seconds in (59, 14 * 86400 + 1):
        response = api.get(url, {**params, "window": seconds})
        assert (response.status_code, response.json()) == (
            400,
            {"window": f"window must be between 60 and {14 * 86400} seconds"},
        )


@pytest.mark.parametrize(("url", "params"), WINDOWED_ENDPOINTS)
def test_every_endpoint_answers_a_bad_window_or_until_with_the_same_400(api, url, params):
    assert api.get(url, {**params, "window": "abc"}).json() == {"window": "window must be a whole number of seconds"}
    assert api.get(url, {**params, "until": "abc"}).json() == {
        "until": "until must be an ISO 8601 time or epoch seconds"
    }


def test_a_bad_window_is_a_clear_400(api):
    response = api.get("/api/topology/?window=abc")
    assert response.status_code == 400
    assert "window" in response.json()


def test_traces_filter_by_duration_and_error_and_a_trace_comes_back_as_a_tree(api):
    ingest(shop_traces(4, slow_every=2))

    slow = api.get("/api/traces/?service=gateway&min_duration_ms=50").json()
    assert len(slow) == 2 and all(t["duration_ms"] == 100 for t in slow)
    failed = api.get("/api/traces/?error=true").json()
    assert len(failed) == 1 and failed[0]["span_count"] == 6

    tree = api.get(f"/api/traces/{failed[0]['trace_id']}/").json()
    (root,) = tree["spans"]
    assert root["name"] == "GET /api/orders"
    served = root["children"][0]["children"][0]
    assert (served["service"], served["instance"], served["error"]) == ("orders", "orders-1", True)
    assert served["children"][0]["children"][0]["service"] == "inventory"
    assert api.get("/api/traces/ffffffffffffffffffffffffffffffff/").status_code == 404


def test_a_route_lists_its_rate_and_merges_its_call_tree_across_traces(api):
    ingest(shop_traces(5))

    (route,) = api.get("/api/routes/").json()
    assert (route["service"], route["operation"], route["count"]) == ("gateway", "GET /api/orders", 5)

    body = api.get("/api/routes/tree/", {"service": "gateway", "operation": "GET /api/orders"}).json()
    tree = body["tree"]
    assert (tree["service"], tree["count"]) == ("gateway", 5)
    (orders,) = tree["children"]
    assert (orders["service"], orders["operation"], orders["count"], orders["errors"]) == (
        "orders",
        "GET /orders",
        5,
        1,
    )
    assert orders["children"][0]["service"] == "inventory"
    assert len(body["recent"]) == 5 and len(body["failed"]) == 1
    assert body["requests"] == 5


def test_a_routes_call_tree_covers_every_request_of_the_window_not_the_latest_1000(api):
    traces = OtelTraces()
    start = now_ns() - 60 * 10**9
    for i in range(1001):
        traces.span("gateway", "gateway-1", "GET /busy", "server", start + i * 10**6, 1)
    ingest(traces.finished())

    body = api.get("/api/routes/tree/", {"service": "gateway", "operation": "GET /busy"}).json()

    assert body["requests"] == 1001 and body["tree"]["count"] == 1001


def test_a_routes_slow_traces_are_the_slowest_of_the_window_not_of_the_latest(api):
    ingest(shop_traces(30, slow_every=30))  # the first trace of 30 is slow, the others are not

    body = api.get("/api/routes/tree/", {"service": "gateway", "operation": "GET /api/orders"}).json()

    assert body["slow"][0]["duration_ms"] == 100
    assert body["requests"] == 30 and body["tree"]["count"] == 30


def test_ingest_status_gives_the_last_complete_minutes_throughput_and_dead_letters_by_reason(api):
    now = timezone.now().replace(second=0, microsecond=0)
    IngestRollup.objects.create(
        minute=now - timedelta(minutes=1), messages=120, spans=6000, duplicate_spans=50, rejected=2
    )
    IngestRollup.objects.create(minute=now, messages=7, spans=350)  # still filling up
    for reason in ("bad_id", "bad_id", "too_large"):
        DeadLetter.objects.create(reason=reason, topic="otlp_spans", partition=0, offset=1)

    body = api.get("/api/ingest/").json()

    assert body["throughput"]["spans_per_second"] == 100.0 and body["throughput"]["messages_per_second"] == 2.0
    assert [row["spans"] for row in body["minutes"]] == [6000, 350]
    assert body["dead_letters"] == {"bad_id": 2, "too_large": 1}
