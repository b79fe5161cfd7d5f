"""Sources that are gone leave the pages, and the health they gave is not shown as current.

A Consul datacenter that is no longer configured, or no longer listed by Consul, leaves the header and
the sources API; a service whose Consul health is out of date (its datacenter gone, or stale for longer
than HEALTH_STALE_AFTER_SECONDS) shows as unknown, never as its last health. Against the Consul API test
server through the real collector.
"""

from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from collectors import consul_client
from collectors.consul import sync_consul
from dashboard.pages.views import HEADER_SOURCE_CHIPS
from tests.consul_server import ConsulTestServer
from topology.models import Instance, InstanceRollup, SourceStatus
from topology.models.services import ConsulDatacenter
from topology.models.sources import HEALTH_STALE_AFTER_SECONDS, SILENT_AFTER_SECONDS

pytestmark = pytest.mark.django_db

WAIT = 0.1


@pytest.fixture
def consul(settings, monkeypatch):
    monkeypatch.setattr(consul_client, "REQUEST_TIMEOUT_SECONDS", 0.5)
    with ConsulTestServer(datacenters=("dc1", "dc2")) as server:
        settings.CONSUL_HTTP_ADDR = server.url
        settings.CONSUL_HTTP_TOKEN = ""
        settings.CONSUL_DATACENTERS = []
        settings.CONSUL_BLOCKING_WAIT_SECONDS = WAIT
        yield server


@pytest.fixture
def sre():
    client = Client()
    client.force_login(get_user_model().objects.create_user("sre", password="pw-123456"))
    return client


def register_web(consul):
    """web: a passing instance in dc1 and a critical one in dc2; cart: critical, in dc2 only."""
    consul.register("web", "web-1", address="10.1.0.1", port=80, checks=[("http", "passing", "200 OK")])
    consul.register(
        "web", "web-9", address="10.9.0.1", port=80, node="far", dc="dc2", checks=[("http", "critical", "")]
    )
    consul.register(
        "cart", "cart-1", address="10.9.0.2", port=80, node="far", dc="dc2", checks=[("http", "critical", "")]
    )


def source_names(client):
    return sorted(source["name"] for source in client.get("/api/sources/").json()["sources"])


def nodes(client):
    return {node["name"]: node for node in client.get("/api/topology/").json()["nodes"]}


def listed(client):
    return {row["name"]: row for row in client.get("/api/services/").json()["services"]}


def instances(client, name):
    detail = client.get("/api/services/detail/", {"name": name}).json()
    return {row["identity"]: (row["health"], row["health_stale"]) for row in detail["instances"]}


def forget_dc2(consul):
    with consul.changed:
        del consul.datacenters["dc2"]


def test_a_datacenter_consul_no_longer_lists_leaves_the_sources_and_its_health_shows_unknown(consul, sre):
    register_web(consul)
    sync_consul()
    assert source_names(sre) == ["consul:dc1", "consul:dc2"]
    assert nodes(sre)["cart"]["health"] == "critical"

    forget_dc2(consul)
    sync_consul()

    assert source_names(sre) == ["consul:dc1"]
    assert not ConsulDatacenter.objects.filter(name="dc2").exists()
    assert (nodes(sre)["cart"]["health"], nodes(sre)["cart"]["health_stale"]) == ("unknown", True)
    # web keeps what dc1, still read, says of it; its dc2 instance is unknown, not critical.
    assert (nodes(sre)["web"]["health"], nodes(sre)["web"]["health_stale"]) == ("passing", True)
    assert instances(sre, "web") == {"web-1": ("passing", False), "web-9": ("unknown", True)}
    assert (listed(sre)["cart"]["health"], listed(sre)["cart"]["health_stale"]) == ("unknown", True)
    assert listed(sre)["web"]["health_counts"] == {"passing": 1, "unknown": 1}


def test_a_datacenter_left_out_of_consul_datacenters_leaves_the_sources(settings, consul, sre):
    register_web(consul)
    settings.CONSUL_DATACENTERS = ["dc1", "dc2"]
    sync_consul()

    settings.CONSUL_DATACENTERS = ["dc1"]
    sync_consul()

    assert source_names(sre) == ["consul:dc1"]
    assert nodes(sre)["cart"]["health"] == "unknown"


def test_without_consul_configured_its_datacenters_leave_the_header_and_its_services_show_unknown(
    settings, consul, sre
):
    register_web(consul)
    consul.register("db", "db-1", port=5432, checks=[("tcp", "critical", "refused")])
    sync_consul()
    assert nodes(sre)["db"]["health"] == "critical"

    settings.CONSUL_HTTP_ADDR = ""
    sync_consul()

    assert source_names(sre) == ["consul"]
    header = sources_header(sre.get("/").content.decode())
    assert header.chips == ["consul not configured"]
    for name in ("db", "cart"):
        assert (nodes(sre)[name]["health"], nodes(sre)[name]["health_stale"]) == ("unknown", True)
        assert (listed(sre)[name]["health"], listed(sre)[name]["health_stale"]) == ("unknown", True)
    assert instances(sre, "db") == {"db-1": ("unknown", True)}
    assert [row["name"] for row in sre.get("/api/services/", {"health": "critical"}).json()["services"]] == []
    page = sre.get("/services/").content.decode()
    assert 'badge-critical">critical' not in page and 'class="health-stale small"' in page


def test_a_stale_datacenter_keeps_its_health_for_a_while_then_shows_unknown_until_consul_answers(consul, sre):
    register_web(consul)
    sync_consul()
    consul.stop()
    ConsulDatacenter.objects.update(retry_after=None)
    sync_consul()
    assert SourceStatus.objects.get(name="consul:dc2").is_stale

    # A blip: the last health stands.
    assert (nodes(sre)["cart"]["health"], nodes(sre)["cart"]["health_stale"]) == ("critical", False)

    stale_since = timezone.now() - timedelta(seconds=HEALTH_STALE_AFTER_SECONDS + 1)
    SourceStatus.objects.filter(name="consul:dc2").update(stale_since=stale_since)
    assert (nodes(sre)["cart"]["health"], nodes(sre)["cart"]["health_stale"]) == ("unknown", True)
    assert instances(sre, "cart") == {"cart-1": ("unknown", True)}
    assert "consul:dc2" in source_names(sre)  # still configured and listed: shown stale, not gone

    consul.start()
    ConsulDatacenter.objects.update(retry_after=None)
    sync_consul()
    assert (nodes(sre)["cart"]["health"], nodes(sre)["cart"]["health_stale"]) == ("critical", False)


def test_a_datacenter_no_collector_reached_for_long_shows_its_health_as_unknown(settings, consul, sre):
    register_web(consul)
    sync_consul()
    silent_after = max(SILENT_AFTER_SECONDS, 3 * settings.CONSUL_BLOCKING_WAIT_SECONDS)
    long_ago = timezone.now() - timedelta(seconds=silent_after + HEALTH_STALE_AFTER_SECONDS + 1)
    SourceStatus.objects.filter(name="consul:dc2").update(last_success=long_ago)

    assert nodes(sre)["cart"]["health"] == "unknown"
    assert nodes(sre)["web"]["health"] == "passing"


def test_a_datacenter_a_run_holds_is_forgotten_once_the_run_let_it_go(settings, consul, sre):
    register_web(consul)
    sync_consul()
    ConsulDatacenter.objects.filter(name="dc2").update(leased_until=timezone.now() + timedelta(minutes=1))

    settings.CONSUL_DATACENTERS = ["dc1"]
    sync_consul()
    assert source_names(sre) == ["consul:dc1", "consul:dc2"]

    ConsulDatacenter.objects.filter(name="dc2").update(leased_until=None)
    sync_consul()
    assert source_names(sre) == ["consul:dc1"]


def test_forgetting_a_datacenter_announces_the_views_its_health_is_on_once(
    settings, consul, announcements, django_capture_on_commit_callbacks
):
    register_web(consul)
    sync_consul()
    settings.CONSUL_HTTP_ADDR = ""

    with django_capture_on_commit_callbacks(execute=True):
        sync_consul()
    assert announcements == [frozenset({"services", "topology", "balancers"})]
    announcements.clear()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        sync_consul()
    assert announcements == [] and callbacks == []


# --- the header ----------------------------------------------------------------------------------


class SourcesHeader(HTMLParser):
    """What the header's #sources holds: its chips' texts, the summary button and the popover's items."""

    def __init__(self):
        super().__init__()
        self.chips, self.buttons, self.items = [], [], []
        self.popover = None
        # Inside #sources: one entry per open element, the list its text goes to (None: nowhere).
        self.open = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id") == "sources":
            self.open = [None]
            return
        if self.open is None:
            return
        collector = self.open[-1]
        if tag == "button":
            self.buttons.append(attrs)
            collector = attrs["text"] = []
        elif attrs.get("id") == "sources-popover":
            self.popover = attrs
        elif tag == "span" and "source" in (attrs.get("class") or "").split():
            collector = []
            self.chips.append(collector)
        elif tag == "li":
            collector = []
            self.items.append(collector)
        self.open.append(collector)

    def handle_endtag(self, tag):
        if self.open is not None:
            self.open.pop()
            if not self.open:
                self.open = None

    def handle_data(self, data):
        if self.open and self.open[-1] is not None and data.strip():
            self.open[-1].append(data.strip())


def sources_header(html):
    parser = SourcesHeader()
    parser.feed(html)
    parser.chips = [" ".join(parts) for parts in parser.chips]
    return parser


def test_up_to_two_sources_have_a_chip_each(sre):
    SourceStatus.record_success("consul:dc1")
    SourceStatus.record_failure("kafka", "NoBrokersAvailable")

    header = sources_header(sre.get("/").content.decode())

    assert HEADER_SOURCE_CHIPS == 2
    assert header.buttons == [] and header.popover is None
    assert header.chips[0].startswith("kafka stale since") and header.chips[1:] == ["consul:dc1"]


def test_twenty_sources_are_one_chip_whose_popover_lists_them_stale_first(sre):
    for number in range(19):
        SourceStatus.record_success(f"consul:dc{number:02d}")
    for number in (3, 7, 11):
        SourceStatus.record_failure(f"consul:dc{number:02d}", "connection refused")
    SourceStatus.record_failure("kafka", "<b>NoBrokersAvailable</b>")

    html = sre.get("/services/").content.decode()
    header = sources_header(html)

    assert header.chips == []
    [button] = header.buttons
    assert " ".join(button["text"]) == "20 sources · 4 stale"
    assert (button["aria-expanded"], button["aria-controls"]) == ("false", "sources-popover")
    assert "hidden" in header.popover
    names = [item[0] for item in header.items]
    assert names[:4] == ["consul:dc03", "consul:dc07", "consul:dc11", "kafka"]
    assert sorted(names[4:]) == names[4:] and len(names) == 20
    assert "<b>NoBrokersAvailable</b>" in [part for item in header.items for part in item]  # text, not markup
    assert "&lt;b&gt;NoBrokersAvailable" in html


def test_the_balancer_owes_an_instance_of_a_forgotten_datacenter_its_share_and_does_not_flag_it_critical(consul, sre):
    register_web(consul)
    sync_consul()
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    for identity in ("web-1", "web-9"):
        InstanceRollup.objects.create(instance=Instance.objects.get(identity=identity), minute=minute, count=300)
    report = sre.get("/api/balancers/web/").json()
    assert {row["instance"]: row["ineligible_reason"] for row in report["instances"]} == {
        "web-1": "",
        "web-9": "critical",
    }

    forget_dc2(consul)
    sync_consul()

    report = sre.get("/api/balancers/web/").json()
    rows = {row["instance"]: (row["health"], row["ineligible_reason"]) for row in report["instances"]}
    assert rows == {"web-1": ("passing", ""), "web-9": ("unknown", "")}
    assert not [flag for flag in report["flags"] if flag["reason"] == "critical"]
    assert report["verdict"]["status"] == "balanced"
