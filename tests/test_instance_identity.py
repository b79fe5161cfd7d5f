"""One process is one instance, whatever its spans and its registration call it (topology.instance_identity).

Instances are registered through the Consul test server and the real collector, spans are made by
py_zipkin and the OpenTelemetry SDK and go through the span decoders into ``store_spans``.
"""

import itertools
import secrets
import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from rest_framework.test import APIClient

from collectors import consul_client
from collectors.consul import sync_consul
from collectors.formats import decode
from tests.consul_server import ConsulTestServer
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf, zipkin_json, zipkin_span
from topology.balancing import SKEWED, BalancerWindow
from topology.ingestion import store_spans
from topology.instance_identity import canonical, record_instance
from topology.models import Instance, InstanceRollup, Service, Span
from topology.window import Window

pytestmark = pytest.mark.django_db

# Enough requests for a verdict other than "too few to tell" on a lone instance.
REQUESTS = 40
_span_ids = itertools.count(1)


@pytest.fixture
def consul(settings, monkeypatch):
    monkeypatch.setattr(consul_client, "REQUEST_TIMEOUT_SECONDS", 0.5)
    with ConsulTestServer() as server:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_HTTP_TOKEN = ""
        settings.CONSUL_DATACENTERS = ["dc1"]
        settings.CONSUL_BLOCKING_WAIT_SECONDS = 0.2
        yield server


def store(payload, wire_format):
    with transaction.atomic():
        return store_spans(decode(payload, wire_format, 10**7, 86400).spans)


def zipkin_requests(service, host, port, count=REQUESTS):
    """Entry requests served by one Zipkin-instrumented process: SERVER root spans whose localEndpoint
    carries only the address and port it serves on."""
    spans = [
        zipkin_span(
            service, "GET /stock", "server", secrets.token_hex(16), f"{next(_span_ids):016x}", host=host, port=port
        )
        for _ in range(count)
    ]
    store(zipkin_json(spans), "zipkin_json")


def otlp_requests(service, count=REQUESTS, instance_id=None, resource=None, attributes=None):
    """Entry requests from an OpenTelemetry SDK: with a service.instance.id, or with only the resource
    and span attributes that the decoder names an instance by."""
    if resource is None:
        traces = OtelTraces()
        tracer = traces.tracer(service, instance_id)
        finished = traces.finished
    else:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource({"service.name": service, **resource}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("meshscope-tests")
        finished = exporter.get_finished_spans
    for _ in range(count):
        start = now_ns()
        tracer.start_span("GET /stock", kind=SpanKind.SERVER, attributes=attributes or {}, start_time=start).end(
            end_time=start + 5_000_000
        )
    store(otlp_protobuf(list(finished())), "otlp_proto")


def served(instance):
    return InstanceRollup.objects.filter(instance=instance).aggregate(n=Sum("count"))["n"] or 0


def balancer(name):
    return BalancerWindow(Window.from_params(900)).report(Service.objects.get(name=name))


def instances_of(name):
    """The instances the balancer counts: rows not merged into another."""
    return list(Instance.objects.unmerged().filter(service__name=name))


def register(consul, service_id, address="10.1.0.1", port=8080, name="inventory"):
    consul.register(name, service_id, address=address, port=port, checks=[("http", "passing", "200 OK")])
    sync_consul()


# --- Zipkin's localEndpoint against an instance Consul registered by its service ID ----------------


def test_zipkin_spans_named_by_address_count_for_the_instance_consul_registered_by_id(consul):
    register(consul, "inventory-1")

    zipkin_requests("inventory", "10.1.0.1", 8080)

    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-1" and served(instance) == REQUESTS
    report = balancer("inventory")
    assert [row["instance"] for row in report["instances"]] == ["inventory-1"]
    assert report["verdict"]["status"] != SKEWED and report["flags"] == []


def test_zipkin_spans_that_came_before_the_registration_are_merged_into_the_registered_instance(consul):
    zipkin_requests("inventory", "10.1.0.1", 8080)
    traced = Instance.objects.get(identity="10.1.0.1:8080")
    assert served(traced) == REQUESTS

    register(consul, "inventory-1")
    zipkin_requests("inventory", "10.1.0.1", 8080)

    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-1" and instance.in_consul and instance.in_traces
    assert served(instance) == 2 * REQUESTS and served(traced) == 0
    traced.refresh_from_db()
    assert traced.merged_into == instance
    # Present since its first span, so not owed only the seconds since Consul listed it.
    assert instance.first_seen == traced.first_seen
    report = balancer("inventory")
    assert [(row["instance"], row["requests"]) for row in report["instances"]] == [("inventory-1", 2 * REQUESTS)]
    assert report["verdict"]["status"] != SKEWED


def test_a_span_waiting_for_its_caller_when_its_instance_is_merged_counts_for_the_registered_one(consul):
    trace_id = secrets.token_hex(16)
    server = zipkin_span(
        "inventory", "GET /stock", "server", trace_id, "00000000000000b2", parent_id="00000000000000a1", host="10.1.0.1"
    )
    store(zipkin_json([server]), "zipkin_json")
    assert Span.objects.get(span_id="00000000000000b2").paired is False

    register(consul, "inventory-1")
    client = zipkin_span("orders", "GET", "client", trace_id, "00000000000000a1", host="10.1.0.5")
    store(zipkin_json([client]), "zipkin_json")

    (instance,) = instances_of("inventory")
    assert served(instance) == 1
    assert InstanceRollup.objects.get(instance=instance).caller == Service.objects.get(name="orders")


def test_a_shared_zipkin_root_counted_before_the_merge_is_taken_back_from_the_registered_instance(consul):
    """A shared SERVER span stored alone is an entry request; when its CLIENT half comes after its
    instance was merged, that request is taken back where the merge moved it."""
    trace_id, span_id = secrets.token_hex(16), "00000000000000c1"
    server = zipkin_span("api", "POST /jobs", "server", trace_id, span_id, host="10.1.0.1", shared=True)
    store(zipkin_json([server]), "zipkin_json")

    register(consul, "api-1", name="api")
    store(zipkin_json([zipkin_span("cron", "POST /jobs", "client", trace_id, span_id, host="10.1.0.7")]), "zipkin_json")

    (instance,) = instances_of("api")
    rows = InstanceRollup.objects.filter(instance__service__name="api")
    assert {(row.instance_id, row.caller.name if row.caller else None, row.count) for row in rows if row.count} == {
        (instance.pk, "cron", 1)
    }
    assert all(row.count >= 0 for row in rows)


# --- OTLP --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spans_first", [False, True], ids=["registered-first", "spans-first"])
def test_otlp_service_instance_id_is_the_consul_service_id(consul, spans_first):
    if spans_first:
        otlp_requests("inventory", instance_id="inventory-1")
    register(consul, "inventory-1")
    otlp_requests("inventory", instance_id="inventory-1")

    (instance,) = instances_of("inventory")
    assert (instance.identity, instance.in_consul) == ("inventory-1", True)
    assert served(instance) == (2 if spans_first else 1) * REQUESTS


@pytest.mark.parametrize("spans_first", [False, True], ids=["registered-first", "spans-first"])
def test_otlp_spans_without_an_instance_id_match_by_host_name_and_server_port(consul, spans_first):
    def requests():
        otlp_requests("inventory", resource={"host.name": "10.1.0.1"}, attributes={"server.port": 8080})

    if spans_first:
        requests()
    register(consul, "inventory-1")
    requests()

    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-1"
    assert served(instance) == (2 if spans_first else 1) * REQUESTS


def test_otlp_spans_naming_the_server_address_as_localhost_match_an_instance_at_127_0_0_1(consul):
    register(consul, "inventory-1", address="127.0.0.1", port=18020)

    otlp_requests("inventory", attributes={"server.address": "localhost", "server.port": 18020})

    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-1" and served(instance) == REQUESTS


# --- an instance registered again under a new ID at the same address -------------------------------


def test_an_instance_registered_again_under_a_new_id_at_the_same_address_is_one_instance(consul):
    register(consul, "inventory-7f3a")
    zipkin_requests("inventory", "10.1.0.1", 8080)
    otlp_requests("inventory", instance_id="inventory-7f3a", count=5)

    # A restart: the old registration goes, the new one comes with a new ID and the same address.
    consul.deregister("inventory-7f3a")
    register(consul, "inventory-c41d")
    zipkin_requests("inventory", "10.1.0.1", 8080)
    # A late span of the old process, naming its old ID.
    otlp_requests("inventory", instance_id="inventory-7f3a", count=5)

    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-c41d"
    assert served(instance) == 2 * REQUESTS + 10
    old = Instance.objects.get(identity="inventory-7f3a")
    assert old.merged_into == instance and old.deregistered_at is not None
    report = balancer("inventory")
    assert [row["instance"] for row in report["instances"]] == ["inventory-c41d"]
    assert report["verdict"]["status"] != SKEWED and report["flags"] == []


def test_registered_again_in_the_same_round_the_old_and_new_ids_are_one_instance(consul):
    register(consul, "inventory-7f3a")
    zipkin_requests("inventory", "10.1.0.1", 8080)

    consul.deregister("inventory-7f3a")
    register(consul, "inventory-c41d")  # one sync sees both changes

    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-c41d" and served(instance) == REQUESTS


def test_an_address_reused_long_after_its_instance_left_is_another_instance(consul):
    register(consul, "inventory-7f3a")
    consul.deregister("inventory-7f3a")
    sync_consul()
    hour_ago = timezone.now() - timedelta(hours=1)
    Instance.objects.filter(identity="inventory-7f3a").update(first_seen=hour_ago, deregistered_at=hour_ago)

    register(consul, "inventory-c41d")  # a later pod, given the same IP

    old, new = Instance.objects.get(identity="inventory-7f3a"), Instance.objects.get(identity="inventory-c41d")
    assert old.merged_into is None and new.first_seen > hour_ago


def test_spans_of_an_earlier_process_at_the_address_move_their_counts_but_not_their_presence():
    hour_ago = timezone.now() - timedelta(hours=1)
    spans = [
        zipkin_span(
            "inventory",
            "GET /stock",
            "server",
            secrets.token_hex(16),
            f"{next(_span_ids):016x}",
            host="127.0.0.1",
            port=18020,
            start_s=hour_ago.timestamp(),
        )
        for _ in range(5)
    ]
    store(zipkin_json(spans), "zipkin_json")
    Instance.objects.filter(identity="127.0.0.1:18020").update(first_seen=hour_ago - timedelta(hours=1))

    instance = record_instance("inventory", "inventory-1", address="127.0.0.1", port=18020)

    assert served(instance) == 5 and instance.first_seen > hour_ago


def test_an_operator_puts_a_recorded_instance_into_maintenance_and_out_of_it():
    record_instance("users", "users-3", address="127.0.0.1", port=18013)

    instance = record_instance("users", "users-3", address="127.0.0.1", port=18013, in_maintenance=True)
    assert instance.in_maintenance
    assert not record_instance("users", "users-3", address="127.0.0.1", port=18013).in_maintenance


def test_an_old_registration_still_listed_at_the_address_leaves_the_requests_to_the_new_one(consul):
    register(consul, "inventory-7f3a")
    register(consul, "inventory-c41d")  # the old one not yet deregistered: Consul lists both

    zipkin_requests("inventory", "10.1.0.1", 8080)

    assert served(Instance.objects.get(identity="inventory-c41d")) == REQUESTS
    assert served(Instance.objects.get(identity="inventory-7f3a")) == 0


def test_the_same_address_in_another_datacenter_is_another_instance(settings, monkeypatch):
    monkeypatch.setattr(consul_client, "REQUEST_TIMEOUT_SECONDS", 0.5)
    with ConsulTestServer(datacenters=("dc1", "dc2")) as server:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_DATACENTERS = ["dc1", "dc2"]
        settings.CONSUL_BLOCKING_WAIT_SECONDS = 0.2
        server.register("inventory", "inventory-a", address="10.1.0.1", port=8080)
        sync_consul()
        server.deregister("inventory-a")
        server.register("inventory", "inventory-b", address="10.1.0.1", port=8080, node="far", dc="dc2")
        sync_consul()

    assert Instance.objects.get(identity="inventory-a").merged_into is None


# --- the demo's inventory ------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost"])
def test_the_demos_inventory_recorded_by_id_with_its_address_is_one_instance_and_not_skewed(address):
    """make demo without Consul: the operator's record names inventory-1 at its address; its Zipkin
    spans carry only localEndpoint 127.0.0.1:18020."""
    record_instance("inventory", "inventory-1", address=address, port=18020)

    zipkin_requests("inventory", "127.0.0.1", 18020)

    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-1" and served(instance) == REQUESTS
    report = balancer("inventory")
    assert [row["instance"] for row in report["instances"]] == ["inventory-1"]
    assert report["verdict"]["status"] != SKEWED and report["jain_index"] == pytest.approx(1.0)


def test_the_demo_restarted_on_its_old_database_merges_what_the_last_run_counted_by_address():
    zipkin_requests("inventory", "127.0.0.1", 18020)  # the last run, before the record had the address

    record_instance("inventory", "inventory-1", address="127.0.0.1", port=18020)
    zipkin_requests("inventory", "127.0.0.1", 18020)

    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-1" and served(instance) == 2 * REQUESTS
    assert balancer("inventory")["verdict"]["status"] != SKEWED


# --- traffic from an instance that no registration has ---------------------------------------------


def test_traffic_from_an_unregistered_address_is_flagged_and_left_out_of_the_statistics(consul):
    register(consul, "inventory-1", address="10.1.0.1")
    register(consul, "inventory-2", address="10.1.0.2")
    # Registered before the window, so that each is owed half of it whatever the seconds between them.
    Instance.objects.update(first_seen=timezone.now() - timedelta(hours=1))
    zipkin_requests("inventory", "10.1.0.1", 8080)
    zipkin_requests("inventory", "10.1.0.2", 8080)
    zipkin_requests("inventory", "10.1.0.9", 8080, count=30)

    report = balancer("inventory")

    assert report["flags"] == [{"instance": "10.1.0.9:8080", "reason": "unregistered", "requests": 30, "since": None}]
    phantom = next(row for row in report["instances"] if row["instance"] == "10.1.0.9:8080")
    assert (phantom["expected_share"], phantom["deviation"], phantom["ineligible_reason"]) == (0, None, "unregistered")
    # χ² and Jain over the two registered instances, which split their requests evenly.
    assert report["degrees_of_freedom"] == 1 and report["jain_index"] == pytest.approx(1.0)
    assert report["verdict"]["status"] != SKEWED


def test_only_unregistered_traffic_says_so_in_the_verdict(consul):
    register(consul, "inventory-1", address="10.1.0.1")
    zipkin_requests("inventory", "10.1.0.9", 8080)

    verdict = balancer("inventory")["verdict"]

    assert "neither Consul nor an operator recorded" in verdict["summary"] and verdict["status"] != SKEWED


def test_a_service_that_only_traces_know_has_no_unregistered_flags():
    zipkin_requests("inventory", "10.1.0.1", 8080)
    zipkin_requests("inventory", "10.1.0.2", 8080)

    report = balancer("inventory")

    assert report["flags"] == [] and all(row["ineligible_reason"] == "" for row in report["instances"])
    assert report["degrees_of_freedom"] == 1


def test_the_api_flags_traffic_from_an_unregistered_instance(consul):
    register(consul, "inventory-1", address="10.1.0.1")
    zipkin_requests("inventory", "10.1.0.1", 8080)
    zipkin_requests("inventory", "10.1.0.9", 8080, count=7)
    api = APIClient()
    api.force_authenticate(User.objects.create_user("sre"))

    overview = api.get("/api/balancers/").json()
    detail = api.get("/api/balancers/inventory/").json()

    (summary,) = overview["services"]
    expected = [{"instance": "10.1.0.9:8080", "reason": "unregistered", "requests": 7, "since": None}]
    assert summary["flags"] == expected and detail["flags"] == expected
    assert {row["instance"]: row["ineligible_reason"] for row in detail["instances"]} == {
        "inventory-1": "",
        "10.1.0.9:8080": "unregistered",
    }


# --- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,expected",
    [
        ("localhost:8080", "127.0.0.1:8080"),
        ("[::1]:8080", "::1:8080"),
        ("::ffff:10.0.0.1:80", "10.0.0.1:80"),
        ("10.0.0.1:080", "10.0.0.1:80"),
        ("inventory-1", "inventory-1"),
        ("host.example:8080", "host.example:8080"),
    ],
)
def test_addresses_are_compared_as_addresses(name, expected):
    assert canonical(name) == expected


# --- merging and storing spans do not interleave ----------------------------------------------------


def _waiting_for_the_identity_lock():
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_record_made_while_a_span_batch_is_being_stored_waits_for_it_and_merges_what_it_stored():
    """Without the identity lock the record would not see the batch's trace-only row, not yet committed,
    and the two would stay two instances."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one writer at a time: there is no batch in progress to wait for")
    stored, release, recorded = threading.Event(), threading.Event(), threading.Event()
    payload = zipkin_json(
        [
            zipkin_span(
                "inventory",
                "GET /stock",
                "server",
                secrets.token_hex(16),
                f"{n + 1:016x}",
                host="127.0.0.1",
                port=18020,
            )
            for n in range(REQUESTS)
        ]
    )

    def span_batch():
        try:
            with transaction.atomic():
                store_spans(decode(payload, "zipkin_json", 10**7, 86400).spans)
                stored.set()
                release.wait(60)
        finally:
            connection.close()

    def operator():
        try:
            record_instance("inventory", "inventory-1", address="127.0.0.1", port=18020)
            recorded.set()
        finally:
            connection.close()

    threads = [threading.Thread(target=span_batch)]
    threads[0].start()
    try:
        assert stored.wait(60)
        threads.append(threading.Thread(target=operator))
        threads[1].start()
        deadline = time.monotonic() + 60
        while not _waiting_for_the_identity_lock() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _waiting_for_the_identity_lock() == 1 and not recorded.is_set()
    finally:
        release.set()
        for thread in threads:
            thread.join(60)

    assert recorded.is_set()
    (instance,) = instances_of("inventory")
    assert instance.identity == "inventory-1" and served(instance) == REQUESTS
