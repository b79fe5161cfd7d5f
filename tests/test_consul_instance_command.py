"""``manage.py consul_instance``: the admin's instance actions from a shell, through the same domain actions."""

import pytest
from django.core.management import CommandError, call_command

from collectors.consul import sync_consul
from tests.consul_server import AGENT_NODE, ConsulTestServer
from topology.models import Instance

pytestmark = pytest.mark.django_db


@pytest.fixture
def consul(settings):
    with ConsulTestServer() as server:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_BLOCKING_WAIT_SECONDS = 0.1
        server.register("web", "web-1", address="10.1.0.1", port=8080, checks=[("http", "passing", "200 OK")])
        server.register("web", "web-2", address="10.1.0.2", port=8080)
        server.register("web", "web-9", address="10.1.0.9", port=8080, node="node-b")
        sync_consul()
        yield server


def agent_instance(consul, service_id):
    """The agent's own instance of web as Consul's health endpoint lists it, read over HTTP (None if none)."""
    _, entries = consul.client().health.service("web")
    return next((e for e in entries if (e["Node"]["Node"], e["Service"]["ID"]) == (AGENT_NODE, service_id)), None)


def maintenance_notes(consul, service_id):
    """The notes of the instance's maintenance check in Consul, None when it has none."""
    checks = agent_instance(consul, service_id)["Checks"]
    return next((c["Notes"] for c in checks if c["CheckID"] == f"_service_maintenance:{service_id}"), None)


def test_it_sets_maintenance_in_consul_and_the_rows_follow(consul):
    call_command("consul_instance", "maintenance", "web", "web-1", "--on", "--reason", "kernel")

    assert maintenance_notes(consul, "web-1") == "kernel"
    instance = Instance.objects.get(identity="web-1")
    assert instance.in_maintenance and instance.health == "critical"

    call_command("consul_instance", "maintenance", "web", "web-1", "--off")

    assert maintenance_notes(consul, "web-1") is None
    instance.refresh_from_db()
    assert not instance.in_maintenance and instance.health == "passing"


def test_it_changes_weights_and_deregisters(consul):
    call_command("consul_instance", "weights", "web", "web-1", "web-2", "--passing", "8", "--warning", "0")
    assert {i.identity: (i.weight_passing, i.weight_warning) for i in Instance.objects.filter(node=AGENT_NODE)} == {
        "web-1": (8, 0),
        "web-2": (8, 0),
    }
    assert agent_instance(consul, "web-1")["Service"]["Weights"] == {"Passing": 8, "Warning": 0}

    call_command("consul_instance", "deregister", "web", "web-2")

    assert Instance.objects.get(identity="web-2").deregistered_at is not None
    assert agent_instance(consul, "web-2") is None and agent_instance(consul, "web-1") is not None


def test_it_refuses_an_instance_on_another_agents_node_and_says_so(consul, capsys):
    with pytest.raises(CommandError, match="Consul refused 1 of 1"):
        call_command("consul_instance", "deregister", "web", "web-9")

    assert "is on node node-b in dc1" in capsys.readouterr().err
    assert Instance.objects.get(identity="web-9").deregistered_at is None


def test_it_refuses_an_unknown_instance_before_asking_consul(consul):
    consul.requests.clear()
    with pytest.raises(CommandError, match="No instance web-7 of web"):
        call_command("consul_instance", "deregister", "web", "web-7")
    assert consul.requests == []


def test_it_refuses_maintenance_without_on_or_off(consul):
    with pytest.raises(CommandError, match="--on or --off"):
        call_command("consul_instance", "maintenance", "web", "web-1")
