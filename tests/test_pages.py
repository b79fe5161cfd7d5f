"""Pages and the side-panel API: login everywhere, CSP without inline script, untrusted names as text."""

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from collectors.consul import sync_consul
from tests import seed
from topology.models import SourceStatus

pytestmark = pytest.mark.django_db

PAGES = [
    "/",
    "/routes/",
    "/routes/detail/?service=gateway&operation=GET%20/api/orders",
    "/traces/",
    "/traces/abc/",
    "/balancers/",
    "/consistency/",
    "/services/",
]
APIS = [
    "/api/services/",
    "/api/sources/",
    "/api/services/detail/?name=orders",
    "/api/edges/detail/?source=gateway&target=orders",
    "/api/services/shares/?name=orders",
]


@pytest.fixture
def client_in():
    client = Client()
    client.force_login(get_user_model().objects.create_user("sre", password="pw-123456"))
    return client


@pytest.mark.parametrize("url", PAGES)
def test_every_page_redirects_to_the_login_form_without_login(url):
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("url", APIS)
def test_every_side_panel_api_call_answers_401_without_login(url):
    assert Client().get(url).status_code == 401


def test_the_login_form_logs_in_and_checks_csrf():
    get_user_model().objects.create_user("sre", password="pw-123456")
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/login/", {"username": "sre", "password": "pw-123456"}).status_code == 403
    page = strict.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    response = strict.post(
        "/login/", {"username": "sre", "password": "pw-123456", "csrfmiddlewaretoken": token, "next": "/"}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert strict.get("/").status_code == 200


class ScriptAudit(HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems = []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        for name, _ in attrs:
            if name.lower().startswith("on"):
                self.problems.append(f"inline handler {name} on <{tag}>")
        if tag == "script" and not dict(attrs).get("src"):
            self.problems.append("inline <script>")
        if tag == "a" and (dict(attrs).get("href") or "").lower().startswith("javascript:"):
            self.problems.append("javascript: link")


@pytest.mark.parametrize("url", PAGES)
def test_pages_have_a_csp_and_no_inline_script(client_in, url):
    seed.store(seed.hostile())
    response = client_in.get(url)
    assert response.status_code == 200
    directives = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";") if part.strip()
    )
    assert directives["script-src"] == "'self'"
    assert "unsafe" not in directives.get("default-src", "")
    audit = ScriptAudit()
    audit.feed(response.content.decode())
    assert audit.problems == []


def test_a_hostile_service_name_is_escaped_on_the_services_page(client_in):
    seed.store(seed.hostile())
    html = client_in.get("/services/").content.decode()
    assert seed.HOSTILE not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_hostile_name_in_the_page_query_is_escaped(client_in):
    html = client_in.get(
        "/routes/detail/", {"service": seed.HOSTILE, "operation": '"><script>alert(1)</script>'}
    ).content.decode()
    assert seed.HOSTILE not in html and "<script>alert(1)" not in html


def test_service_detail_has_instances_operations_callers_and_callees(client_in):
    seed.seed_mesh(traces=4, errors=1)
    detail = client_in.get("/api/services/detail/", {"name": "orders"}).json()
    assert [i["identity"] for i in detail["instances"]] == ["orders-1"]
    assert detail["instances"][0]["share"] == 1.0
    assert detail["operations"][0]["name"] == "GET /orders" and detail["operations"][0]["count"] == 4
    assert [(c["service"], c["count"]) for c in detail["callers"]] == [("gateway", 4)]
    callees = {(c["service"], c["sync"], c["topic"]): c for c in detail["callees"]}
    assert callees[("payments", "sync", "")]["errors"] == 1
    assert ("inventory", "async", "order-events") in callees
    assert client_in.get("/api/services/detail/", {"name": "nope"}).status_code == 404


def test_edge_detail_has_a_series_per_minute_and_sample_traces(client_in):
    traces = seed.seed_mesh(traces=3, errors=1)
    detail = client_in.get("/api/edges/detail/", {"source": "orders", "target": "payments", "protocol": "http"}).json()
    assert detail["totals"]["count"] == 3 and detail["totals"]["errors"] == 1
    assert len(detail["series"]) >= 5 and sum(row["count"] for row in detail["series"]) == 3
    assert {s["trace_id"] for s in detail["samples"]} == {t.trace_id for t in traces}
    assert any(s["error"] and s["why"] == "failed" for s in detail["samples"])
    async_edge = client_in.get(
        "/api/edges/detail/", {"source": "orders", "target": "inventory", "topic": "order-events"}
    ).json()
    assert async_edge["sync"] == "async" and async_edge["totals"]["count"] == 3
    assert len(async_edge["samples"]) == 3


def test_services_list_and_share_series(client_in):
    seed.seed_mesh(traces=2)
    names = [s["name"] for s in client_in.get("/api/services/").json()["services"]]
    assert names == ["gateway", "inventory", "orders", "payments"]
    assert [s["name"] for s in client_in.get("/api/services/", {"q": "pay"}).json()["services"]] == ["payments"]
    shares = client_in.get("/api/services/shares/", {"name": "orders", "window": 900}).json()
    assert shares["instances"] == ["orders-1"]
    assert sum(m["requests"] for m in shares["series"]) == 2


def test_a_source_no_collector_has_reached_for_minutes_is_shown_stale(client_in):
    SourceStatus.objects.create(name="kafka", last_success=timezone.now() - timedelta(minutes=10))
    SourceStatus.objects.create(name="consul:dc1", last_success=timezone.now() - timedelta(seconds=20))

    sources = {source["name"]: source for source in client_in.get("/api/sources/").json()["sources"]}

    assert sources["kafka"]["stale"] and "Celery" in sources["kafka"]["stale_reason"]
    assert not sources["consul:dc1"]["stale"]
    assert "kafka stale since" in client_in.get("/").content.decode()


def test_the_header_says_plainly_that_consul_is_not_configured(client_in, settings):
    settings.CONSUL_HTTP_ADDR = ""
    sync_consul()

    html = client_in.get("/").content.decode()

    assert "consul not configured" in html
    assert [source["configured"] for source in client_in.get("/api/sources/").json()["sources"]] == [False]
