"""/metrics: a bearer token, Prometheus's text format, and the same figures the API gives for 5 minutes."""

import math
import re
from datetime import timedelta
from pathlib import Path

import prometheus_client
import pytest
import yaml
from django.conf import settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from dashboard.ops.metrics import exposition
from tests.seed import Trace, seed_mesh, store
from topology.consumer_lag import Observation, record_samples
from topology.models import DeadLetter, Instance, SourceStatus
from topology.window import Window

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN
    return settings


@pytest.fixture
def user_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("sre", password="x" * 12))
    return client


def samples(text):
    """{(name, frozenset of labels): value} of every sample in an exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(parsed, name, **labels):
    return parsed[(name, frozenset(labels.items()))]


def served_by(instance, count, start_us=None):
    """``count`` calls from gateway to orders, each served by ``instance``."""
    traces = []
    for _ in range(count):
        t = Trace(start_us)
        root = t.span("gateway", "gateway-1", "GET /api/orders", "server", 0, 20)
        call = t.span("gateway", "gateway-1", "GET", "client", 2, 10, parent=root, peer="orders")
        t.span("orders", instance, "GET /orders", "server", 3, 8, parent=call)
        traces.append(t)
    return traces


@pytest.fixture
def seeded():
    seed_mesh(traces=6, errors=2)
    store(*served_by("orders-1", 60), *served_by("orders-2", 12))
    # Instances that have run for an hour: each is owed its full part of the window.
    Instance.objects.update(first_seen=timezone.now() - timedelta(hours=1))
    start = timezone.now() - timedelta(seconds=30)
    for step in range(3):
        record_samples(
            [
                Observation(settings.KAFKA_CONSUMER_GROUP, "otlp_spans", 0, 100 + step, 140 + 5 * step, None, "Stable"),
                Observation("billing", "orders", 0, 10 * step, 40 + 10 * step, None, "Stable"),
                Observation("billing", "orders", 1, 7, 7, None, "Stable"),
            ],
            now=start + timedelta(seconds=5 * step),
        )
    SourceStatus.record_success("kafka")
    SourceStatus.record_failure("consul:dc1", "connection refused")
    for reason in ("not_decodable", "not_decodable", "bad_id"):
        DeadLetter.objects.create(reason=reason, topic="otlp_spans", partition=0, offset=len(reason))
    return timezone.now()


def test_it_is_not_found_when_no_token_is_configured(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Token {TOKEN}", "Bearer "])
def test_it_refuses_a_missing_or_wrong_token_with_a_bearer_challenge(client, metrics_on, header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"meshscope_" not in response.content


def test_it_serves_the_text_format_with_the_right_token_and_no_login(client, metrics_on, seeded):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    assert families["meshscope_edge_latency_seconds"].type == "histogram"
    assert families["meshscope_balancer_verdict"].type == "gauge"
    assert "5 minutes" in families["meshscope_edge_requests_per_second"].documentation


def test_it_leaves_the_global_registry_alone(client, metrics_on, seeded):
    client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert not [f for f in prometheus_client.REGISTRY.collect() if f.name.startswith("meshscope")]


def test_edge_figures_equal_the_topology_api_for_the_same_window(user_client, seeded):
    until = seeded
    window = Window.last(300, until)
    parsed = samples(exposition(window).decode())
    edges = user_client.get("/api/topology/", {"window": 300, "until": until.isoformat()}).json()["edges"]
    assert len(edges) == 3  # gateway→orders, orders→payments, orders→inventory through order-events
    for edge in edges:
        labels = {k: edge[k] for k in ("source", "target", "protocol", "topic")}
        requests = value(parsed, "meshscope_edge_requests_per_second", **labels)
        errors = value(parsed, "meshscope_edge_error_ratio", **labels)
        count = value(parsed, "meshscope_edge_latency_seconds_count", **labels)
        assert requests == edge["rps"]
        assert errors == edge["error_rate"]
        assert count == pytest.approx(requests * window.covered_seconds, abs=1)
        assert value(parsed, "meshscope_edge_latency_seconds_bucket", **labels, le="+Inf") == count
        # Every p95 the API shows lies between the exported buckets around it.
        below = [
            float(dict(k)["le"])
            for (name, k), v in parsed.items()
            if name == "meshscope_edge_latency_seconds_bucket"
            and {key: dict(k)[key] for key in labels} == labels
            and dict(k)["le"] != "+Inf"
            and v >= 0.95 * count
        ]
        assert min(below) >= edge["p95_ms"] / 1000 / 1.1


def test_balancer_figures_equal_the_balancer_api_for_the_same_window(user_client, seeded):
    until = seeded
    parsed = samples(exposition(Window.last(300, until)).decode())
    report = user_client.get("/api/balancers/orders/", {"window": 300, "until": until.isoformat()}).json()
    assert report["verdict"]["status"] == "skewed"
    assert value(parsed, "meshscope_balancer_verdict", service="orders", verdict="skewed") == 1
    assert value(parsed, "meshscope_balancer_verdict", service="orders", verdict="balanced") == 0
    assert value(parsed, "meshscope_balancer_jain_fairness_index", service="orders") == pytest.approx(
        report["jain_index"]
    )
    assert value(parsed, "meshscope_balancer_chi_square_p_value", service="orders") == pytest.approx(report["p_value"])
    assert {row["instance"] for row in report["instances"]} == {"orders-1", "orders-2"}
    for row in report["instances"]:
        labels = {"service": "orders", "instance": row["instance"]}
        assert value(parsed, "meshscope_balancer_instance_share_ratio", **labels) == pytest.approx(row["share"])
        assert value(parsed, "meshscope_balancer_instance_expected_share_ratio", **labels) == pytest.approx(
            row["expected_share"]
        )
        assert value(parsed, "meshscope_balancer_instance_deviation_ratio", **labels) == pytest.approx(row["deviation"])
    assert value(parsed, "meshscope_metrics_series_dropped") == 0


def test_lag_and_ingest_figures_equal_the_lag_and_ingest_apis(user_client, seeded):
    parsed = samples(exposition(Window.last(300, seeded)).decode())
    groups = {group["group"]: group for group in user_client.get("/api/lag/").json()["groups"]}
    ingest = user_client.get("/api/ingest/").json()
    assert set(groups) == {"billing", settings.KAFKA_CONSUMER_GROUP}
    for name, group in groups.items():
        assert value(parsed, "meshscope_consumer_group_lag_messages", group=name) == group["lag_messages"]
        assert value(parsed, "meshscope_consumer_group_lag_seconds", group=name) == pytest.approx(group["lag_seconds"])
        assert value(parsed, "meshscope_consumer_group_status", group=name, status=group["status"]) == 1
        assert (
            sum(v for (n, k), v in parsed.items() if n == "meshscope_consumer_group_status" and ("group", name) in k)
            == 1
        )
        for partition in group["partitions"]:
            labels = {"group": name, "topic": partition["topic"], "partition": str(partition["partition"])}
            assert value(parsed, "meshscope_consumer_partition_lag_messages", **labels) == partition["lag_messages"]
            assert value(parsed, "meshscope_consumer_partition_lag_seconds", **labels) == pytest.approx(
                partition["lag_seconds"]
            )
    assert value(parsed, "meshscope_ingest_lag_messages") == ingest["lag"]["lag_messages"] == 48
    assert value(parsed, "meshscope_ingest_lag_seconds") == pytest.approx(ingest["lag"]["lag_seconds"])
    for reason, count in ingest["dead_letters"].items():
        assert value(parsed, "meshscope_dead_letters", reason=reason) == count
    assert ingest["dead_letters"] == {"not_decodable": 2, "bad_id": 1}
    assert value(parsed, "meshscope_ingest_spans_stored_per_second") > 0


def test_sources_say_which_is_stale_and_for_how_long(seeded):
    parsed = samples(exposition(Window.last(300, seeded)).decode())
    assert value(parsed, "meshscope_source_up", source="kafka") == 1
    assert value(parsed, "meshscope_source_up", source="consul:dc1") == 0
    assert 0 <= value(parsed, "meshscope_source_staleness_seconds", source="kafka") < 60
    assert math.isinf(value(parsed, "meshscope_source_staleness_seconds", source="consul:dc1"))


def test_flow_figures_equal_the_flows_api_for_the_same_window(user_client, seeded):
    parsed = samples(exposition(Window.last(300, seeded)).decode())
    [flow] = user_client.get("/api/flows/", {"window": 300, "until": seeded.isoformat()}).json()["flows"]
    labels = {"producer": "orders", "topic": "order-events", "consumer": "inventory"}
    assert flow["count"] == 6
    assert value(parsed, "meshscope_flow_deliveries", **labels) == flow["count"]
    assert value(parsed, "meshscope_flow_negative_delays", **labels) == flow["negative_delays"]
    for quantile, key in (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms")):
        assert value(parsed, "meshscope_flow_propagation_delay_seconds", **labels, quantile=quantile) == pytest.approx(
            flow[key] / 1000
        )


def test_it_keeps_the_worst_instances_under_the_cap_and_counts_the_rest(settings, seeded):
    settings.METRICS_MAX_INSTANCE_SERIES = 4  # room for one instance's three series
    parsed = samples(exposition(Window.last(300, seeded)).decode())
    instances = {dict(k)["instance"] for n, k in parsed if n == "meshscope_balancer_instance_share_ratio"}
    # Four instances served requests in the window: gateway-1, orders-1, orders-2 and payments-1.
    assert len(instances) == 1
    shown = [v for (n, k), v in parsed.items() if n == "meshscope_balancer_instance_deviation_ratio"]
    deviations = [
        abs(r["deviation"] or 0)
        for service in ("orders", "payments", "gateway")
        for r in _report(service, seeded)["instances"]
    ]
    assert abs(shown[0]) == pytest.approx(max(deviations))
    assert value(parsed, "meshscope_metrics_series_dropped") == 3 * (len(deviations) - 1)


def _report(service, until):
    from topology.balancing import BalancerWindow
    from topology.models import Service

    return BalancerWindow(Window.last(300, until)).report(Service.objects.get(name=service), per_caller=False)


RULES = Path(__file__).resolve().parent.parent / "docs" / "prometheus-rules.yml"
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}


def metric_names(expr):
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords, label
    names in {…} or durations in […]."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        following = bare[match.end() :].lstrip()
        if match.group() not in PROMQL_WORDS and not following.startswith("("):
            names.add(match.group())
    return names


def test_every_alert_rule_reads_metrics_that_metrics_exports(seeded):
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    exported = {family.name for family in text_string_to_metric_families(exposition(Window.last(300)).decode())}
    alerts = {rule["alert"] for rule in rules}
    assert {
        "MeshscopeInstanceSkewed",
        "MeshscopeConsumerGroupNotOK",
        "MeshscopeConsumerLagHigh",
        "MeshscopeSourceStale",
        "MeshscopeIngestFallingBehind",
    } <= alerts
    for rule in rules:
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= exported, f"{rule['alert']} reads {sorted(names - exported)}, which /metrics does not export"
        assert re.fullmatch(r"\d+[smh]", rule["for"])


def test_the_rule_parser_finds_names_and_skips_functions_labels_and_ranges():
    assert metric_names('deriv(a_b[10m]) > 0 and c{x="y z"} == 1 or sum(rate(d_total[5m])) by (e)') == {
        "a_b",
        "c",
        "d_total",
    }


def test_spans_stored_by_wire_format_equal_what_the_ingest_api_counts(user_client):
    """Each format's new spans, counted as they are stored; a redelivered message adds nothing."""
    from collectors.formats import decode
    from tests.trace_payloads import OtelTraces, now_ns, otlp_json, otlp_protobuf, zipkin_json, zipkin_span
    from topology.ingestion import store_spans

    def spans(payload):
        return decode(payload, "auto", 10**7, 86400).spans

    zipkin = zipkin_json([zipkin_span("api", f"GET /{i}", "server", "ab" * 16, f"{i + 1:016x}") for i in range(3)])
    proto, as_json = OtelTraces(), OtelTraces()
    for traces in (proto, as_json):
        root = traces.span("orders", "orders-1", "GET /orders", "server", now_ns(), 10)
        traces.span("orders", "orders-1", "SELECT", "client", now_ns(), 2, parent=root)
    batch = spans(zipkin) + spans(otlp_protobuf(proto.finished())) + spans(otlp_json(as_json.finished()))
    store_spans(batch, messages=3)
    store_spans(spans(zipkin), messages=1)

    # Summed over the minutes listed: the two writes may fall on either side of a minute's end.
    minutes = user_client.get("/api/ingest/").json()["minutes"]
    counted = {
        name: sum(minute["spans_by_format"][name] for minute in minutes) for name in minutes[0]["spans_by_format"]
    }
    assert counted == {"zipkin_json": 3, "otlp_proto": 2, "otlp_json": 2}
    window = Window.last(300)
    parsed = samples(exposition(window).decode())
    for wire_format, count in counted.items():
        assert value(parsed, "meshscope_ingest_spans_stored_by_format_per_second", format=wire_format) == (
            window.per_second(count)
        )


def test_the_broadcasters_compute_time_is_what_its_latest_delta_said(seeded):
    from dashboard.live.broadcast import refresh_state

    delta = refresh_state("topology", 300)

    parsed = samples(exposition(Window.last(300, seeded)).decode())
    labels = {"view": "topology", "window": "300"}
    assert value(parsed, "meshscope_live_compute_seconds", **labels) == pytest.approx(
        delta["compute_ms"] / 1000, abs=1e-3
    )
    assert 0 <= value(parsed, "meshscope_live_computed_age_seconds", **labels) < 60
    never_computed = ("meshscope_live_compute_seconds", frozenset({"view": "routes", "window": "300"}.items()))
    assert never_computed not in parsed
