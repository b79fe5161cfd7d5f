"""The dashboard in Debian's chromium against a live daphne with seeded data."""

import time
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from tests import seed
from tests.browser.chromium import screenshot
from topology.models import ConsumerPartitionLag

pytestmark = [pytest.mark.browser]

GRAPH_READY = "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes().length > 0"


def graph(page):
    return page.evaluate(
        """() => ({
            nodes: window.meshscope.cy.nodes().map(n => n.data('name') || n.id()).sort(),
            edges: window.meshscope.cy.edges().map(e => ({source: e.data('source'), target: e.data('target'),
                       async: e.hasClass('async'), label: e.data('label')})),
            labels: window.meshscope.cy.nodes().map(n => n.data('label')),
        })"""
    )


def test_topology_shows_the_seeded_nodes_and_edges_and_the_side_panels(page, live):
    seed.seed_mesh(traces=8, errors=2)
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    drawn = graph(page)
    assert drawn["nodes"] == ["gateway", "inventory", "orders", "payments"]
    edges = {(e["source"], e["target"]): e for e in drawn["edges"]}
    assert set(edges) == {("gateway", "orders"), ("orders", "payments"), ("orders", "inventory")}
    assert edges[("orders", "inventory")]["async"] and not edges[("gateway", "orders")]["async"]
    assert "p95" in edges[("orders", "payments")]["label"] and "%" in edges[("orders", "payments")]["label"]
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
    assert page.text_content("#graph-counts").startswith("4 of 4 services")
    screenshot(page, "topology", docs=True)

    # A node's side panel: instances with their share, top operations, callers and callees.
    page.evaluate("() => { window.meshscope.cy.getElementById('orders').emit('tap'); }")
    page.wait_for_selector(".node-panel")
    panel = page.inner_text("#panel")
    assert "orders-1" in panel and "100%" in panel and "GET /orders" in panel
    assert "gateway" in panel and "payments" in panel and "order-events" in panel
    screenshot(page, "topology-node-panel", docs=True)

    # An edge's panel: rate, errors and latency over time, and sample traces.
    page.evaluate("() => { window.meshscope.cy.edges().filter(e => e.data('target') === 'payments').emit('tap'); }")
    page.wait_for_selector(".edge-panel")
    assert page.locator(".edge-panel svg.chart").count() == 3
    assert page.locator(".edge-panel .trace-list a").count() >= 2
    screenshot(page, "topology-edge-panel", docs=True)

    # Filter and focus.
    page.fill("#filter-text", "pay")
    page.wait_for_function("() => window.meshscope.cy.nodes().length === 1")
    page.fill("#filter-text", "")
    page.goto("/?focus=payments")
    page.wait_for_function(GRAPH_READY)
    assert graph(page)["nodes"] == ["orders", "payments"]


def test_a_span_produced_to_kafka_appears_on_the_open_page_without_reload(page, live, kafka_bootstrap, topic_name):
    from tests.kafka_helpers import create_topic, produce, span_consumer
    from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf

    seed.seed_mesh(traces=2)
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    consumer = span_consumer(kafka_bootstrap, {topic_name: "otlp_proto"})
    # Join the group and get the partition before the clock starts: joining is not what we measure.
    deadline = time.monotonic() + 20
    while not consumer.consumer.assignment() and time.monotonic() < deadline:
        consumer.poll_once(200)
    assert consumer.consumer.assignment(), "the span consumer never got its partition"
    try:
        page.goto("/")
        page.wait_for_function(GRAPH_READY)
        page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
        assert "shipping" not in graph(page)["nodes"]
        draws = page.evaluate("() => window.meshscope.draws")

        traces = OtelTraces()
        start = now_ns()
        root = traces.span("orders", "orders-1", "GET /orders", "server", start, 30)
        call = traces.span(
            "orders",
            "orders-1",
            "GET",
            "client",
            start + 1_000_000,
            20,
            parent=root,
            attributes={"peer.service": "shipping"},
        )
        traces.span("shipping", "shipping-7", "GET /quote", "server", start + 2_000_000, 15, parent=call)
        produced = time.monotonic()
        produce(kafka_bootstrap, topic_name, [otlp_protobuf(traces.finished())])
        seen = stored = None
        while time.monotonic() - produced < 30:  # a generous bound: the figure is printed, not judged
            if consumer.poll_once(100) and stored is None:
                stored = time.monotonic() - produced
            if page.evaluate("() => window.meshscope.cy.getElementById('shipping').nonempty()"):
                seen = time.monotonic() - produced
                break
        assert seen is not None, "the new service never appeared"
        print(
            f"\nfreshness: produced to Kafka -> stored {stored * 1000:.0f} ms -> drawn on the open page {seen * 1000:.0f} ms"
        )
        assert page.evaluate("() => window.meshscope.draws") > draws
        assert page.evaluate("() => window.meshscope.socket.stats.snapshots") == 1, "updated by a delta, not a reload"
        edge = [e for e in graph(page)["edges"] if e["target"] == "shipping"]
        assert edge and edge[0]["source"] == "orders"
        screenshot(page, "topology-live-update")
    finally:
        consumer.close()


def test_pause_and_reconnecting_states(page, live):
    seed.seed_mesh(traces=1)
    page.goto("/")
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
    page.click("#live-toggle")
    assert page.get_attribute("#live-status", "data-state") == "paused"
    seed.store(seed.Trace())  # nothing drawn while paused
    page.click("#live-toggle")
    assert page.get_attribute("#live-status", "data-state") == "live"
    # A dropped connection shows "reconnecting…" and comes back by itself with a new snapshot.
    page.evaluate("() => { window.meshscope.socket.ws.close(); }")
    page.wait_for_function("() => window.meshscope.socket.stats.snapshots >= 2", timeout=10000)
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
    assert page.evaluate("() => window.meshscope.socket.stats.reconnects") >= 1


def test_a_route_shows_its_call_tree_and_a_trace_its_waterfall(page, live):
    traces = seed.seed_mesh(traces=5, errors=1)
    page.goto("/routes/")
    page.wait_for_selector("#routes-table tbody tr")
    row = page.locator("#routes-table tbody tr").first.inner_text()
    assert "gateway" in row and "GET /api/orders" in row
    screenshot(page, "routes", docs=True)
    # A new route arrives as a delta of the routes view, without a reload: storing it announces it.
    seed.store(seed.one_call("search", "GET /api/search", "catalog", "GET /items"))
    page.wait_for_selector("#routes-table a.route-link:text-is('GET /api/search')")
    assert page.locator("#routes-table tbody tr").count() == 2

    page.click("a.route-link")
    page.wait_for_selector("#call-tree tbody tr.hop")
    hops = page.eval_on_selector_all(
        "#call-tree tbody tr.hop",
        "rows => rows.map(r => [r.dataset.service, r.dataset.operation, +r.dataset.depth, r.children[1].textContent])",
    )
    assert hops == [
        ["gateway", "GET /api/orders", 0, "5"],
        ["orders", "GET /orders", 1, "5"],
        ["inventory", "order-events process", 2, "5"],
        ["payments", "POST /charge", 2, "5"],
    ] or hops == [
        ["gateway", "GET /api/orders", 0, "5"],
        ["orders", "GET /orders", 1, "5"],
        ["payments", "POST /charge", 2, "5"],
        ["inventory", "order-events process", 2, "5"],
    ]
    assert page.locator("#failed .trace-item").count() == 1
    assert page.locator("#recent .trace-item").count() == 5
    screenshot(page, "route", docs=True)
    # Another window: the tree is read again, and the page listens to that window's routes.
    with page.expect_response(lambda response: "/api/routes/tree/" in response.url and "window=900" in response.url):
        page.click("#window-select button[data-window='900']")
    page.wait_for_selector("#call-tree tbody tr.hop")

    failed = next(t for t in traces if any(r.error for r in t.records))
    page.goto(f"/traces/{failed.trace_id}/")
    page.wait_for_selector("body[data-loaded='1']")
    rows = page.eval_on_selector_all(
        ".span-row", "rows => rows.map(r => [r.dataset.service, r.dataset.error, r.dataset.critical])"
    )
    assert len(rows) == 7
    assert sorted({service for service, _, _ in rows}) == ["gateway", "inventory", "orders", "payments"]
    assert [service for service, error, _ in rows if error == "1"] == ["orders", "payments"]
    assert rows[0] == ["gateway", "0", "1"], "the root is on the critical path"
    page.locator(".span-row[data-service='payments']").click()
    detail = page.inner_text("#span-detail")
    assert "payment.provider" in detail and "acme" in detail and "POST /charge" in detail
    screenshot(page, "trace", docs=True)


def test_a_hostile_service_name_renders_as_text_everywhere(page, live):
    trace = seed.hostile()
    seed.store(trace, *seed.seed_mesh(traces=1))
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    assert seed.HOSTILE in graph(page)["nodes"]
    page.evaluate("name => { window.meshscope.cy.getElementById(name).emit('tap'); }", seed.HOSTILE)
    page.wait_for_selector(".node-panel")
    assert page.locator("#panel h1").inner_text() == seed.HOSTILE
    screenshot(page, "hostile-topology")
    page.evaluate(
        "name => { window.meshscope.cy.edges().filter(e => e.data('source') === name).emit('tap'); }", seed.HOSTILE
    )
    page.wait_for_selector(".edge-panel")
    assert seed.HOSTILE in page.inner_text("#panel")
    assert page.locator("#panel img").count() == 0
    ConsumerPartitionLag.objects.create(
        group=seed.HOSTILE,
        topic="order-events",
        partition=0,
        sampled_at=timezone.now(),
        committed_offset=1,
        end_offset=5,
        lag_messages=4,
        offset_moved_at=timezone.now(),
        lag_seconds_method="record_timestamp",
        status="WARN",
    )
    route = "/routes/detail/?" + urlencode({"service": seed.HOSTILE, "operation": "<script>alert(2)</script>"})
    for url in [
        "/services/",
        "/routes/",
        route,
        f"/traces/{trace.trace_id}/",
        f"/traces/?service={seed.HOSTILE}",
        "/consistency/",
        "/balancers/",
    ]:
        page.goto(url)
        page.wait_for_load_state("networkidle")
        assert seed.HOSTILE in page.inner_text("main"), url
        assert page.locator("main img").count() == 0, url
    page.goto(f"/traces/{trace.trace_id}/")
    page.wait_for_selector("body[data-loaded='1']")
    page.locator(".span-row").first.click()
    assert "<img src=y onerror=alert(3)>" in page.inner_text("#span-detail")
    assert "<script>alert(2)</script>" in page.inner_text("#waterfall")
    # Nothing was parsed as markup: no image with src x/y, no script from the data.
    assert page.locator("img").count() == 0
    assert page.evaluate("() => Array.from(document.scripts).every(s => s.src)")
    screenshot(page, "hostile-trace")
    # (The page fixture fails the test on any alert dialog or page error.)


def test_an_unauthenticated_visitor_and_websocket_are_refused(anonymous_page, live):
    page = anonymous_page
    page.goto("/")
    assert "/login/" in page.url
    screenshot(page, "login", docs=True)
    result = page.evaluate(
        """url => new Promise(resolve => {
            const ws = new WebSocket(url);
            ws.onopen = () => resolve('open');
            ws.onmessage = (event) => resolve('message: ' + event.data);
            ws.onclose = (event) => resolve('closed ' + event.code);
        })""",
        live.url.replace("http", "ws") + "/ws/live/topology/",
    )
    assert result.startswith("closed"), result
    response = page.request.get("/api/topology/")
    assert response.status in (401, 403)


def test_the_login_form_logs_in(anonymous_page, live):
    from tests.browser.conftest import session_cookie

    session_cookie("operator")  # creates the user with its password
    page = anonymous_page
    page.goto("/services/")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", "pw-123456")
    page.click("button[type=submit]")
    page.wait_for_url("**/services/")
    assert "Services" in page.inner_text("h1")


def test_balancers_consistency_and_services_pages(page, live):
    from datetime import timedelta

    from django.utils import timezone

    from topology.models import ConsumerPartitionLag, Instance, SourceStatus

    seed.seed_mesh(traces=6)
    # A second orders instance that gets less than its share.
    extra = seed.Trace()
    root = extra.span("gateway", "gateway-1", "GET /api/orders", "server", 0, 50)
    call = extra.span("gateway", "gateway-1", "GET", "client", 2, 40, parent=root, peer="orders")
    extra.span("orders", "orders-2", "GET /orders", "server", 3, 30, parent=call)
    seed.store(extra)
    Instance.objects.filter(service__name="orders").update(in_consul=True, datacenter="dc1", health="passing")
    SourceStatus.record_success("consul:dc1")  # a datacenter read now: its health is current
    now = timezone.now()
    for i in range(6):
        ConsumerPartitionLag.objects.create(
            group="inventory",
            topic="order-events",
            partition=0,
            sampled_at=now - timedelta(minutes=5 - i),
            committed_offset=100 + i * 10,
            end_offset=120 + i * 14,
            lag_messages=20 + i * 4,
            lag_seconds=1.5 + i,
            lag_seconds_method="record_timestamp",
            offset_moved_at=now,
            status="WARN" if i == 5 else "OK",
        )

    page.goto("/balancers/?service=orders")
    page.wait_for_selector(".balancer[data-service='orders'] table.grid tbody tr")
    assert page.locator(".balancer[data-service='orders'] tr[data-instance]").count() == 2
    page.wait_for_selector(".balancer[data-service='orders'] svg.chart")
    screenshot(page, "balancers", docs=True)

    page.goto("/consistency/")
    page.wait_for_selector("tr.lag-group")
    assert "inventory" in page.inner_text("#lag") and "WARN" in page.inner_text("#lag")
    page.wait_for_selector(".flow[data-topic='order-events']")
    screenshot(page, "consistency", docs=True)

    page.goto("/services/")
    assert page.locator("#services-table tbody tr").count() == 4
    screenshot(page, "services", docs=True)


def test_stale_sources_gaps_and_replay(page, live):
    from topology.models import SourceStatus

    seed.seed_mesh(traces=2)
    SourceStatus.record_success("consul:dc1")
    SourceStatus.record_failure("kafka", "NoBrokersAvailable")
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
    sources = page.inner_text("#sources")
    assert "kafka stale since" in sources and "consul:dc1" in sources
    assert "NoBrokersAvailable" in page.get_attribute(".source-stale", "title")
    assert page.inner_text("#updated")

    # A delta that does not follow the held sequence number makes the client resync from a snapshot.
    page.evaluate("""() => { const s = window.meshscope.socket;
        s.receive(JSON.stringify({type: 'delta', view: 'topology', seq: s.seq + 5, prev: s.seq + 4, changes: {}})); }""")
    page.wait_for_function(
        "() => window.meshscope.socket.stats.resyncs === 1 && window.meshscope.socket.stats.snapshots === 2"
    )
    # A snapshot the server could not compute is said, and asked for again a few seconds later.
    page.evaluate(
        "() => window.meshscope.socket.receive(JSON.stringify({type: 'error', message: 'The snapshot could not be computed.'}))"
    )
    assert page.get_attribute("#live-status", "data-state") == "reconnecting"
    page.wait_for_function("() => window.meshscope.socket.stats.snapshots === 3", timeout=10000)
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")

    # Replay: drag the slider back; the page shows the rollups of then (nothing, ten minutes before the seed).
    page.eval_on_selector(
        "#replay",
        "el => { el.value = '-30'; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }",
    )
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'replay'")
    page.wait_for_function("() => window.meshscope.cy.edges().length === 0")
    assert page.inner_text("#replay-label") == "30 min ago"
    page.eval_on_selector(
        "#replay",
        "el => { el.value = '0'; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }",
    )
    page.wait_for_function("() => window.meshscope.cy.edges().length === 3")
    assert page.get_attribute("#live-status", "data-state") == "live"
    screenshot(page, "topology-stale-source")


def test_five_hundred_services_start_grouped_and_open_a_group(page, live):
    from topology.models import Service

    Service.objects.bulk_create(
        [
            Service(name=f"team{i % 12}-svc-{i:03d}", in_traces=True, in_consul=True, tags=[f"team{i % 12}"])
            for i in range(500)
        ]
    )
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    assert page.evaluate("() => window.meshscope.cy.nodes().length") == 12
    assert "grouped automatically" in page.inner_text("#graph-counts")
    screenshot(page, "topology-grouped")
    page.evaluate("() => { window.meshscope.cy.getElementById('group:team3').emit('tap'); }")
    page.wait_for_function("() => window.meshscope.cy.nodes().length === 42")
    page.fill("#filter-text", "svc-003")
    page.wait_for_function("() => window.meshscope.cy.nodes().length === 1")


def test_a_settled_unpaired_call_reaches_the_open_page_without_reload(page, live):
    """A call to an uninstrumented callee (a cache, a database) is counted when the pairing grace ends:
    the settling announces the topology like any other write, and the open page draws the new edge."""
    from topology.ingestion import resolve_unpaired

    seed.seed_mesh(traces=1)
    lonely = seed.Trace()
    root = lonely.span("orders", "orders-1", "GET /orders", "server", 0, 30)
    lonely.span("orders", "orders-1", "GET", "client", 2, 5, parent=root, peer="cache")
    seed.store(lonely)
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
    assert "cache" not in graph(page)["nodes"]

    assert resolve_unpaired(grace_seconds=0) == 1

    page.wait_for_function("() => window.meshscope.cy.getElementById('cache').nonempty()", timeout=10000)
    assert ("orders", "cache") in {(e["source"], e["target"]) for e in graph(page)["edges"]}
    assert page.evaluate("() => window.meshscope.socket.stats.snapshots") == 1, "updated by a delta, not a reload"


def test_an_admin_action_reaches_the_open_page_without_reload(page, live, settings):
    """Maintenance mode set in the admin makes the instance critical, as Consul then lists it; the
    topology page's ring for the service follows without a reload."""
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    from collectors.consul import sync_consul
    from tests.consul_server import ConsulTestServer
    from topology.models import Instance

    with ConsulTestServer() as consul:
        settings.CONSUL_HTTP_ADDR = consul.url
        settings.CONSUL_BLOCKING_WAIT_SECONDS = 0.1
        consul.register("web", "web-1", address="10.1.0.1", port=8080, checks=[("http", "passing", "200 OK")])
        sync_consul()
        page.goto("/")
        page.wait_for_function("() => window.meshscope.cy && window.meshscope.cy.getElementById('web').nonempty()")
        page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
        ring = "() => window.meshscope.cy.getElementById('web').data('border')"
        passing = page.evaluate(ring)

        operator = Client()
        operator.force_login(User.objects.create_superuser("operator", password="x"))
        instance = Instance.objects.get(identity="web-1")
        response = operator.post(
            reverse("admin:topology_instance_changelist"),
            {"action": "enable_maintenance", "index": "0", "_selected_action": [instance.pk], "confirm": "yes"},
            follow=True,
        )
        assert response.status_code == 200
        instance.refresh_from_db()
        assert instance.in_maintenance and instance.health == "critical"

        page.wait_for_function(f"() => ({ring})() !== {passing!r}", timeout=10000)
        assert page.evaluate("() => window.meshscope.socket.stats.snapshots") == 1, "updated by a delta, not a reload"
