"""Every change to the data has one write path, which announces the views it changed once its transaction
commits, and never when it rolls back (topology/changes.py)."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from collectors import consul_actions
from collectors.consul import sync_consul
from collectors.consul_reconcile import CONSUL_FIELDS, SERVICE_FIELDS, reconcile
from tests import seed
from tests.consul_server import ConsulTestServer
from topology import retention
from topology.changes import LAG, REGISTRY_VIEWS, TRAFFIC_VIEWS
from topology.consumer_lag import Observation, record_samples
from topology.ingestion import resolve_unpaired, store_spans
from topology.instance_identity import record_instance
from topology.models import Instance, Service, Span

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


def announces_only_once_committed(write, announcements, views):
    """Runs ``write`` in a transaction that rolls back, then on its own, and checks what each announced."""
    with pytest.raises(Rollback), transaction.atomic():
        write()
        assert announcements == [], "announced before the commit"
        raise Rollback
    assert announcements == [], "announced a change that rolled back"
    write()
    assert announcements == [frozenset(views)]


def test_storing_spans_announces_the_traffic_views_once_committed(announcements):
    trace = seed.checkout()
    announces_only_once_committed(lambda: store_spans(trace.records, messages=1), announcements, TRAFFIC_VIEWS)


def test_storing_only_duplicates_announces_nothing(announcements):
    trace = seed.checkout()
    store_spans(trace.records, messages=1)
    announcements.clear()
    store_spans(trace.records, messages=1)
    assert announcements == []


def test_settling_unpaired_calls_announces_the_traffic_views_once_committed(announcements):
    lonely = seed.Trace()
    root = lonely.span("orders", "orders-1", "GET /orders", "server", 0, 30)
    lonely.span("orders", "orders-1", "GET", "client", 2, 5, parent=root, peer="cache")
    seed.store(lonely)
    announcements.clear()
    announces_only_once_committed(lambda: resolve_unpaired(grace_seconds=0), announcements, TRAFFIC_VIEWS)


def test_reconciling_consul_announces_the_registry_views_once_committed(announcements):
    entry = {"Node": {"Node": "n1", "Address": "10.0.0.1"}, "Service": {"ID": "web-1", "Port": 80}, "Checks": []}
    announces_only_once_committed(
        lambda: reconcile("dc1", {"web": [entry]}, timezone.now()), announcements, REGISTRY_VIEWS
    )


def test_an_operators_record_of_an_instance_announces_the_registry_and_traffic_views_once_committed(announcements):
    announces_only_once_committed(
        lambda: record_instance("users", "users-3", "127.0.0.1", 18013, in_maintenance=True),
        announcements,
        {*REGISTRY_VIEWS, *TRAFFIC_VIEWS},
    )


def test_recording_lag_samples_announces_the_lag_view_once_committed(announcements):
    sample = Observation("billing", "orders", 0, 90, 100, None, "Stable")
    announces_only_once_committed(lambda: record_samples([sample]), announcements, [LAG])


def test_retention_announces_the_views_whose_rows_it_deleted(announcements, settings):
    settings.SPAN_RETENTION_HOURS = 1
    old = timezone.now() - timedelta(hours=2)
    service = Service.objects.create(name="api")
    Span.objects.create(
        trace_id="a" * 32,
        span_id="b" * 16,
        service=service,
        kind="server",
        name="GET /",
        started_at=old,
        duration_us=1000,
        paired=True,
    )
    announces_only_once_committed(lambda: retention.prune(), announcements, TRAFFIC_VIEWS)


@pytest.fixture
def consul(settings):
    with ConsulTestServer() as server:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_BLOCKING_WAIT_SECONDS = 0.1
        server.register("web", "web-1", address="10.1.0.1", port=8080, checks=[("http", "passing", "200 OK")])
        server.register("web", "web-2", address="10.1.0.2", port=8080, checks=[("http", "passing", "200 OK")])
        sync_consul()
        yield server


def instance(identity):
    return Instance.objects.select_related("service").get(identity=identity)


# Each takes the agent's location and the instance to act on (a new one's ID, for register): the
# rolled-back attempt acts on web-1 and the committed one on web-2, as Consul keeps both writes.
CONSUL_ACTIONS = {
    "maintenance": lambda where, name: consul_actions.set_maintenance(instance(name), True, where, "kernel"),
    "weights": lambda where, name: consul_actions.set_weights(instance(name), 5, 1, where),
    "deregister": lambda where, name: consul_actions.deregister(instance(name), where),
    "policy": lambda where, name: consul_actions.set_balancing_policy(
        instance(name).service, "weighted", lambda: where
    ),
    "register": lambda where, name: consul_actions.register(
        "web", f"{name}-new", "10.1.0.9", 8080, ["v2"], {"team": "edge"}, {"Passing": 2, "Warning": 1}, None, where
    ),
}


@pytest.mark.parametrize("action", CONSUL_ACTIONS.values(), ids=CONSUL_ACTIONS.keys())
def test_each_consul_action_announces_the_registry_views_once_committed(consul, announcements, action):
    location = consul_actions.agent_location()
    announcements.clear()
    with pytest.raises(Rollback), transaction.atomic():
        action(location, "web-1")
        raise Rollback
    assert announcements == []
    action(location, "web-2")
    assert announcements and set(announcements) == {frozenset(REGISTRY_VIEWS)}


@pytest.mark.parametrize("action", CONSUL_ACTIONS.values(), ids=CONSUL_ACTIONS.keys())
def test_each_consul_action_leaves_the_rows_as_the_next_reconcile_finds_them(consul, action):
    """The rows an action writes are what the collector's next read of Consul gives: it changes nothing."""
    action(consul_actions.agent_location(), "web-1")
    after_action = consul_rows()

    sync_consul()

    assert consul_rows() == after_action


def consul_rows():
    instances = Instance.objects.filter(service__name="web").order_by("identity").values(*CONSUL_FIELDS)
    service = Service.objects.filter(name="web").values(*(f for f in SERVICE_FIELDS if f != "last_seen")).get()
    return list(instances), service
