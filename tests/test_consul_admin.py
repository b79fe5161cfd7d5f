"""Django admin for services and instances, whose actions write to Consul (the Consul API test server)."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from collectors import consul_client
from collectors.consul import sync_consul
from collectors.consul_reconcile import POLICY_META_KEY
from tests.consul_server import AGENT_NODE, ConsulError, ConsulTestServer
from topology.models import DeadLetter, Instance, Service, SourceStatus

pytestmark = pytest.mark.django_db

CONSUL_PERMISSIONS = [
    "register_in_consul",
    "deregister_from_consul",
    "set_maintenance_in_consul",
    "set_weights_in_consul",
    "set_balancing_policy",
]
VIEW_PERMISSIONS = ["view_service", "view_instance", "view_deadletter", "view_sourcestatus"]
EDIT_SERVICES = ["change_service"]
INSTANCES = reverse("admin:topology_instance_changelist")
SERVICES = reverse("admin:topology_service_changelist")
REGISTER = reverse("admin:topology_service_register_instance")


@pytest.fixture
def consul(settings, monkeypatch):
    monkeypatch.setattr(consul_client, "REQUEST_TIMEOUT_SECONDS", 2)
    with ConsulTestServer(datacenters=("dc1", "dc2")) as server:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_HTTP_TOKEN = ""
        settings.CONSUL_DATACENTERS = ["dc1"]
        settings.CONSUL_BLOCKING_WAIT_SECONDS = 0.1
        server.register(
            "web",
            "web-1",
            address="10.1.0.1",
            port=8080,
            tags=["v1"],
            meta={"team": "edge"},
            weights={"Passing": 3, "Warning": 1},
            checks=[("http", "passing", "200 OK")],
        )
        server.register("web", "web-2", address="10.1.0.2", port=8080, checks=[("http", "critical", "503")])
        sync_consul()
        yield server


def staff(username, codenames):
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="topology", codename__in=codenames))
    return user


@pytest.fixture
def operator(client):
    client.force_login(staff("operator", CONSUL_PERMISSIONS + VIEW_PERMISSIONS + EDIT_SERVICES))
    return client


@pytest.fixture
def viewer(client):
    client.force_login(staff("viewer", VIEW_PERMISSIONS))
    return client


def run_action(client, action, instances, **form):
    data = {"action": action, "index": "0", "_selected_action": [i.pk for i in instances], **form}
    return client.post(INSTANCES, data, follow=True)


def consul_holds(consul):
    """Every instance Consul lists, with its checks, read back over its HTTP API as any client would:
    {(datacenter, node, service ID): the health endpoint's entry}."""
    client = consul.client()
    held = {}
    for datacenter in client.catalog.datacenters():
        _, services = client.catalog.services(dc=datacenter)
        for name in services:
            _, entries = client.health.service(name, dc=datacenter)
            held.update({(datacenter, e["Node"]["Node"], e["Service"]["ID"]): e for e in entries})
    return held


def agent_service(consul, service_id):
    """The agent's own instance, as Consul lists it (None when it lists none)."""
    entry = consul_holds(consul).get(("dc1", AGENT_NODE, service_id))
    return entry and entry["Service"]


def service_checks(consul, service_id):
    """The checks of the agent's own instance, as Consul's health endpoint shows them."""
    entry = consul_holds(consul)[("dc1", AGENT_NODE, service_id)]
    return [check for check in entry["Checks"] if check["ServiceID"] == service_id]


def page_messages(response):
    return [str(message) for message in response.context["messages"]]


def puts(consul):
    return [path for method, path in consul.requests if method == "PUT"]


# --- what the pages show -------------------------------------------------------------------------------


def test_service_list_shows_health_summary_instance_count_source_and_policy(operator, consul):
    response = operator.get(SERVICES)

    page = response.content.decode()
    assert "1 passing · 0 warning · 1 critical" in page
    row = response.context["cl"].result_list.get(name="web")
    assert row.live_instances == 2 and row.source == "consul"
    assert "not set (round robin assumed)" in page


def test_service_list_filters_by_source_and_searches_instances(operator, consul):
    Service.objects.create(name="traced-only", in_traces=True)

    by_source = operator.get(SERVICES, {"source": "traces"}).context["cl"].result_list
    by_instance = operator.get(SERVICES, {"q": "web-2"}).context["cl"].result_list

    assert [s.name for s in by_source] == ["traced-only"]
    assert [s.name for s in by_instance] == ["web"]


def test_fields_consul_owns_are_read_only(operator, consul):
    service = Service.objects.get(name="web")
    traced = Service.objects.create(name="traced-only", in_traces=True)

    consul_page = operator.get(reverse("admin:topology_service_change", args=[service.pk])).content.decode()
    traced_page = operator.get(reverse("admin:topology_service_change", args=[traced.pk])).content.decode()

    assert 'name="name"' not in consul_page and 'name="balancing_policy"' not in consul_page
    assert 'name="balancing_policy"' in traced_page  # no Consul registration to hold it
    assert "web-1" in consul_page and "web-2" in consul_page  # the instances inline


def test_html_from_consul_is_shown_as_text(operator, consul):
    consul.register(
        "<script>alert(1)</script>", "evil<b>", port=1, checks=[("<img src=x onerror=alert(1)>", "passing", "")]
    )
    sync_consul()
    evil = Service.objects.get(name="<script>alert(1)</script>")

    pages = [
        operator.get(SERVICES).content.decode(),
        operator.get(INSTANCES).content.decode(),
        operator.get(reverse("admin:topology_service_change", args=[evil.pk])).content.decode(),
    ]

    for page in pages:
        assert "<script>alert(1)</script>" not in page and "evil<b>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_dead_letters_and_source_statuses_are_listed_read_only(operator, consul):
    DeadLetter.objects.create(reason="bad_json", topic="zipkin", partition=0, offset=7, payload_head="{")
    operator.force_login(User.objects.create_superuser("root", password="x"))

    letters = operator.get(reverse("admin:topology_deadletter_changelist"), {"reason": "bad_json"})
    statuses = operator.get(reverse("admin:topology_sourcestatus_changelist"))

    assert letters.status_code == 200 and len(letters.context["cl"].result_list) == 1
    assert "consul:dc1" in statuses.content.decode()
    assert not letters.context["has_add_permission"] and not statuses.context["has_add_permission"]
    assert operator.get(reverse("admin:topology_sourcestatus_add")).status_code == 403


# --- register ------------------------------------------------------------------------------------------


REGISTRATION = {
    "service": "api",
    "service_id": "api-1",
    "address": "10.3.0.1",
    "port": "9000",
    "tags": "blue, canary",
    "meta": "version=2\nowner=payments",
    "passing": "5",
    "warning": "1",
    "check_type": "http",
    "check_target": "http://10.3.0.1:9000/health",
    "check_interval": "10s",
    "check_timeout": "2s",
}


def test_register_instance_asks_for_confirmation_then_registers_in_consul_and_logs(operator, consul):
    form = operator.post(REGISTER, REGISTRATION)
    assert form.context["confirming"] and puts(consul) == []  # nothing asked yet

    response = operator.post(REGISTER, {**REGISTRATION, "confirm": "yes"}, follow=True)

    registered = agent_service(consul, "api-1")
    assert registered["Tags"] == ["blue", "canary"] and registered["Meta"] == {"version": "2", "owner": "payments"}
    assert registered["Weights"] == {"Passing": 5, "Warning": 1} and registered["Port"] == 9000
    assert registered["Address"] == "10.3.0.1" and len(service_checks(consul, "api-1")) == 1
    # The row follows at once, as the next read of Consul gives it: critical until its check passes.
    instance = Instance.objects.get(identity="api-1")
    assert (instance.consul_id, instance.node, instance.health) == ("api-1", AGENT_NODE, "critical")
    assert any("Consul registered api-1" in m for m in page_messages(response))
    entry = LogEntry.objects.get(object_repr="api")
    assert "Registered the instance api-1 in Consul" in entry.get_change_message()


def test_register_instance_with_an_http_check_sends_its_url_interval_and_timeout(operator, consul):
    operator.post(REGISTER, {**REGISTRATION, "check_interval": "15s", "confirm": "yes"})

    [check] = service_checks(consul, "api-1")
    assert check["Definition"] == {"HTTP": "http://10.3.0.1:9000/health", "Interval": "15s", "Timeout": "2s"}


def test_register_instance_with_a_tcp_check_sends_its_target_interval_and_timeout(operator, consul):
    data = {
        **REGISTRATION,
        "check_type": "tcp",
        "check_target": "10.3.0.1:9000",
        "check_interval": "1m",
        "confirm": "yes",
    }

    operator.post(REGISTER, data)

    [check] = service_checks(consul, "api-1")
    assert check["Definition"] == {"TCP": "10.3.0.1:9000", "Interval": "1m0s", "Timeout": "2s"}


def test_register_instance_without_a_check_registers_none(operator, consul):
    operator.post(REGISTER, {**REGISTRATION, "check_type": "", "check_target": "", "confirm": "yes"})

    assert agent_service(consul, "api-1") is not None and service_checks(consul, "api-1") == []


def test_reregistering_keeps_the_check_definition(operator, consul):
    operator.post(REGISTER, {**REGISTRATION, "confirm": "yes"})
    sync_consul()

    run_action(
        operator, "change_weights", [Instance.objects.get(identity="api-1")], passing="2", warning="1", confirm="yes"
    )

    [check] = service_checks(consul, "api-1")
    assert check["Definition"]["HTTP"] == "http://10.3.0.1:9000/health"
    assert agent_service(consul, "api-1")["Weights"] == {"Passing": 2, "Warning": 1}


def test_register_instance_refuses_invalid_input_before_asking_consul(operator, consul):
    data = {**REGISTRATION, "meta": "not a pair", "passing": "0", "check_type": "tcp", "check_target": "nohost"}

    response = operator.post(REGISTER, {**data, "confirm": "yes"})

    assert set(response.context["form"].errors) == {"meta", "passing", "check_target"}
    assert puts(consul) == []


def test_register_instance_failure_shows_consuls_own_error_and_logs_nothing(settings, operator, consul):
    consul.token = "the-right-token"
    settings.CONSUL_HTTP_TOKEN = "a-wrong-token"

    response = operator.post(REGISTER, {**REGISTRATION, "confirm": "yes"}, follow=True)

    assert any("ACL not found" in m for m in page_messages(response))
    assert agent_service(consul, "api-1") is None and not LogEntry.objects.exists()


# --- actions on instances ----------------------------------------------------------------------------


def test_deregister_asks_for_confirmation_then_deregisters_and_logs(operator, consul):
    instance = Instance.objects.get(identity="web-2")

    confirmation = run_action(operator, "deregister", [instance])
    assert confirmation.templates[0].name == "admin/topology/consul_confirmation.html" and puts(consul) == []

    run_action(operator, "deregister", [instance], confirm="yes")

    assert agent_service(consul, "web-2") is None
    instance.refresh_from_db()
    assert instance.deregistered_at is not None  # the row stays
    assert LogEntry.objects.get(object_id=str(instance.pk)).get_change_message() == "Deregistered from Consul."


def test_deregister_of_an_id_the_agent_does_not_know_reports_404(operator, consul):
    consul.deregister("web-2")  # gone from Consul behind meshscope's back
    instance = Instance.objects.get(identity="web-2")

    response = run_action(operator, "deregister", [instance], confirm="yes")

    assert any("404" in m for m in page_messages(response))
    instance.refresh_from_db()
    assert instance.deregistered_at is None and not LogEntry.objects.exists()


def test_maintenance_mode_is_enabled_with_a_reason_and_disabled(operator, consul):
    instance = Instance.objects.get(identity="web-1")

    run_action(operator, "enable_maintenance", [instance], reason="kernel <upgrade>", confirm="yes")

    [check] = [c for c in service_checks(consul, "web-1") if c["CheckID"] == "_service_maintenance:web-1"]
    assert check["Notes"] == "kernel <upgrade>"
    instance.refresh_from_db()
    assert instance.in_maintenance and instance.health == "critical"
    assert "kernel <upgrade>" in LogEntry.objects.get().get_change_message()

    run_action(operator, "disable_maintenance", [instance], confirm="yes")

    assert "_service_maintenance:web-1" not in {c["CheckID"] for c in service_checks(consul, "web-1")}
    sync_consul()
    instance.refresh_from_db()
    assert not instance.in_maintenance and instance.health == "passing"


def test_change_weights_registers_again_keeping_tags_meta_and_checks(operator, consul):
    instance = Instance.objects.get(identity="web-1")

    run_action(operator, "change_weights", [instance], passing="8", warning="0", confirm="yes")

    registered = agent_service(consul, "web-1")
    assert registered["Weights"] == {"Passing": 8, "Warning": 0}
    assert registered["Tags"] == ["v1"] and registered["Meta"] == {"team": "edge"} and registered["Port"] == 8080
    sync_consul()
    instance.refresh_from_db()
    assert (instance.weight_passing, instance.weight_warning, instance.health) == (8, 0, "passing")


def test_action_failure_reports_consuls_error_and_changes_nothing(operator, consul):
    instance = Instance.objects.get(identity="web-1")
    consul.fail_with(500, "rpc error making call: No cluster leader")

    response = run_action(operator, "change_weights", [instance], passing="8", warning="0", confirm="yes")

    assert any("500 rpc error making call: No cluster leader" in m for m in page_messages(response))
    instance.refresh_from_db()
    assert instance.weight_passing == 3 and not LogEntry.objects.exists()


def test_unreachable_consul_is_reported(operator, consul):
    instance = Instance.objects.get(identity="web-1")
    consul.stop()

    response = run_action(operator, "enable_maintenance", [instance], reason="", confirm="yes")

    assert any("unreachable" in m for m in page_messages(response))
    instance.refresh_from_db()
    assert not instance.in_maintenance


def test_set_balancing_policy_writes_the_meta_key_on_every_instance_and_the_row(operator, consul):
    service = Service.objects.get(name="web")
    data = {"action": "set_balancing_policy", "index": "0", "_selected_action": [service.pk], "policy": "weighted"}

    operator.post(SERVICES, {**data, "confirm": "yes"})

    for service_id in ("web-1", "web-2"):
        assert agent_service(consul, service_id)["Meta"]["meshscope-balancing"] == "weighted"
    assert agent_service(consul, "web-1")["Meta"]["team"] == "edge"
    service.refresh_from_db()
    assert service.balancing_policy == "weighted"
    sync_consul()  # the collector reads the same policy back from Consul
    service.refresh_from_db()
    assert service.balancing_policy == "weighted"
    assert "weighted" in LogEntry.objects.get(object_id=str(service.pk)).get_change_message()


# --- instances the agent at CONSUL_HTTP_ADDR does not hold -------------------------------------------


@pytest.fixture
def web_1_on_node_b(consul):
    """Another node's instance with the same service ID as the agent's own web-1."""
    consul.register(
        "web",
        "web-1",
        address="10.9.0.1",
        port=9090,
        node="node-b",
        node_address="10.9.0.1",
        weights={"Passing": 1, "Warning": 1},
    )
    sync_consul()
    return Instance.objects.get(consul_id="web-1", node="node-b")


@pytest.mark.parametrize(
    "action, form",
    [
        ("deregister", {}),
        ("enable_maintenance", {"reason": "x"}),
        ("disable_maintenance", {}),
        ("change_weights", {"passing": "9", "warning": "0"}),
    ],
)
def test_instance_on_another_node_with_a_colliding_id_is_refused_and_nothing_changes(
    operator, consul, web_1_on_node_b, action, form
):
    assert web_1_on_node_b.identity == "web-1@node-b"
    before = consul_holds(consul)

    response = run_action(operator, action, [web_1_on_node_b], confirm="yes", **form)

    refusals = [m for m in page_messages(response) if m.startswith("Refused")]
    assert len(refusals) == 1 and "web-1@node-b is on node node-b in dc1" in refusals[0]
    assert f"the agent of node {AGENT_NODE} in dc1" in refusals[0]
    assert puts(consul) == [] and consul_holds(consul) == before
    assert not LogEntry.objects.exists()


def test_a_mixed_selection_changes_only_the_agents_own_instances(operator, consul, web_1_on_node_b):
    own = Instance.objects.get(identity="web-2")

    response = run_action(operator, "change_weights", [own, web_1_on_node_b], passing="9", warning="0", confirm="yes")

    assert any(m.startswith("Refused") and "web-1@node-b" in m for m in page_messages(response))
    assert agent_service(consul, "web-2")["Weights"] == {"Passing": 9, "Warning": 0}
    # the agent's own web-1, which a write by service ID alone would have hit, is as it was
    assert agent_service(consul, "web-1")["Weights"] == {"Passing": 3, "Warning": 1}
    assert consul_holds(consul)[("dc1", "node-b", "web-1")]["Service"]["Address"] == "10.9.0.1"
    assert puts(consul) == ["/v1/agent/service/register"]
    assert [entry.object_id for entry in LogEntry.objects.all()] == [str(own.pk)]


def test_instance_in_another_datacenter_on_a_node_of_the_same_name_is_refused(settings, operator, consul):
    consul.register("web", "web-1", address="10.8.0.1", port=8080, node=AGENT_NODE, dc="dc2")
    settings.CONSUL_DATACENTERS = ["dc1", "dc2"]
    sync_consul()
    far = Instance.objects.get(consul_id="web-1", datacenter="dc2")
    before = consul_holds(consul)

    response = run_action(operator, "deregister", [far], confirm="yes")

    assert any(m.startswith("Refused") and f"on node {AGENT_NODE} in dc2" in m for m in page_messages(response))
    assert puts(consul) == [] and consul_holds(consul) == before


def test_set_balancing_policy_refuses_a_service_with_instances_on_another_node(operator, consul, web_1_on_node_b):
    service = Service.objects.get(name="web")
    before = consul_holds(consul)

    response = operator.post(
        SERVICES,
        {
            "action": "set_balancing_policy",
            "index": "0",
            "_selected_action": [service.pk],
            "policy": "weighted",
            "confirm": "yes",
        },
        follow=True,
    )

    assert any("Refused" in m and "web-1@node-b" in m and "Nothing was changed" in m for m in page_messages(response))
    assert puts(consul) == [] and consul_holds(consul) == before
    service.refresh_from_db()
    assert service.balancing_policy == "" and not LogEntry.objects.exists()


def test_an_agent_that_cannot_say_where_it_is_changes_nothing(operator, consul, monkeypatch):
    monkeypatch.setattr(consul, "agent_self", lambda: {"Config": {}})
    instance = Instance.objects.get(identity="web-1")

    response = run_action(operator, "deregister", [instance], confirm="yes")

    assert any("named no node and datacenter" in m for m in page_messages(response))
    assert puts(consul) == [] and agent_service(consul, "web-1") is not None


def set_policy(client, service, policy):
    data = {
        "action": "set_balancing_policy",
        "index": "0",
        "_selected_action": [service.pk],
        "policy": policy,
        "confirm": "yes",
    }
    return client.post(SERVICES, data, follow=True)


def refuse_registrations(consul, monkeypatch, after=0):
    """Consul accepts ``after`` registrations, then answers 500 to every one."""
    accepted = []
    register = consul.agent_register

    def refusing(body):
        if len(accepted) >= after:
            raise ConsulError(500, "rpc error making call: No cluster leader")
        accepted.append(body)
        return register(body)

    monkeypatch.setattr(consul, "agent_register", refusing)


def test_set_balancing_policy_failure_shows_consuls_error_and_changes_nothing(operator, consul, monkeypatch):
    refuse_registrations(consul, monkeypatch)
    service = Service.objects.get(name="web")

    response = set_policy(operator, service, "weighted")

    assert page_messages(response) == ["web: Consul answered: 500 rpc error making call: No cluster leader"]
    assert all(POLICY_META_KEY not in agent_service(consul, i)["Meta"] for i in ("web-1", "web-2"))
    assert all(POLICY_META_KEY not in instance.meta for instance in Instance.objects.all())
    service.refresh_from_db()
    assert service.balancing_policy == "" and not LogEntry.objects.exists()


def test_set_balancing_policy_refused_halfway_says_which_instances_changed_and_logs_them(operator, consul, monkeypatch):
    refuse_registrations(consul, monkeypatch, after=1)
    service = Service.objects.get(name="web")

    response = set_policy(operator, service, "weighted")

    assert page_messages(response) == [
        "web: Consul refused web/web-2 (Consul answered: 500 rpc error making call: No cluster leader). "
        "Already changed to weighted: web/web-1. Not changed: web/web-2. Run the action again once Consul accepts."
    ]
    assert agent_service(consul, "web-1")["Meta"][POLICY_META_KEY] == "weighted"
    assert POLICY_META_KEY not in agent_service(consul, "web-2")["Meta"]
    assert Instance.objects.get(identity="web-1").meta[POLICY_META_KEY] == "weighted"
    assert POLICY_META_KEY not in Instance.objects.get(identity="web-2").meta
    service.refresh_from_db()
    # As a reconcile of what Consul now holds gives it: the only policy its instances name.
    assert service.balancing_policy == "weighted"
    entry = LogEntry.objects.get(object_id=str(service.pk))
    assert entry.get_change_message() == (
        f"Set the balancing policy to weighted (Consul meta {POLICY_META_KEY}) on web/web-1 only; Consul refused web/web-2."
    )


# --- permissions -------------------------------------------------------------------------------------


def test_viewer_sees_the_admin_but_cannot_run_actions(viewer, consul):
    instance = Instance.objects.get(identity="web-1")

    services = viewer.get(SERVICES)
    instances = viewer.get(INSTANCES)
    run_action(viewer, "deregister", [instance], confirm="yes")
    viewer.post(
        SERVICES,
        {
            "action": "set_balancing_policy",
            "index": "0",
            "_selected_action": [instance.service_id],
            "policy": "random",
            "confirm": "yes",
        },
    )

    assert services.status_code == instances.status_code == 200
    assert services.context["action_form"] is None and instances.context["action_form"] is None
    assert "Register an instance in Consul" not in services.content.decode()
    assert viewer.get(REGISTER).status_code == 403
    assert viewer.post(REGISTER, {**REGISTRATION, "confirm": "yes"}).status_code == 403
    assert puts(consul) == [] and agent_service(consul, "web-1") is not None


def test_each_action_needs_its_own_permission(client, consul):
    client.force_login(staff("maintainer", [*VIEW_PERMISSIONS, "set_maintenance_in_consul"]))
    instance = Instance.objects.get(identity="web-1")

    offered = [name for name, _ in client.get(INSTANCES).context["action_form"].fields["action"].choices if name]
    run_action(client, "deregister", [instance], confirm="yes")

    assert offered == ["enable_maintenance", "disable_maintenance"]
    assert agent_service(consul, "web-1") is not None and puts(consul) == []
    assert SourceStatus.objects.get(name="consul:dc1").last_success is not None
