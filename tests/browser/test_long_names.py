"""A 300-character service name (stored cut to 254 characters and "…") on every page: cut to fit with an
ellipsis, whole in the tooltip and in the panel, and never wider than its node, column or page."""

from urllib.parse import urlencode

import pytest
from django.db import transaction

from collectors.formats import decode
from tests import seed
from tests.browser.chromium import screenshot
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf
from topology.ingestion import store_spans
from topology.models import Service

pytestmark = [pytest.mark.browser]

LONG = "payments-" + "reconciliation" * 21  # 303 characters, no place to break
STORED = LONG[:254] + "…"
LABEL_CHARS = 30  # static/js/util.js
TOPIC = "settlements-" + "t" * 288
ENTRY = "GET /" + "status/" * 42  # 299 characters
GRAPH_READY = "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes().length > 0"


def store_long_named_trace():
    """orders calls the long-named service, which serves a long route and publishes to a long topic."""
    traces = OtelTraces()
    start = now_ns()
    root = traces.span("orders", "orders-1", "GET /orders", "server", start, 40)
    call = traces.span("orders", "orders-1", "POST", "client", start + 10**6, 30, parent=root)
    served = traces.span(
        LONG, "i-" + "9" * 298, "POST /" + "settle/" * 42, "server", start + 2 * 10**6, 25, parent=call
    )
    messaging = {"messaging.system": "kafka", "messaging.destination.name": TOPIC}
    sent = traces.span(
        LONG, "i-" + "9" * 298, "publish", "producer", start + 3 * 10**6, 1, parent=served, attributes=messaging
    )
    traces.span("ledger", "ledger-1", "consume", "consumer", start + 9 * 10**6, 2, parent=sent, attributes=messaging)
    traces.span(LONG, "i-" + "9" * 298, ENTRY, "server", start, 5)
    with transaction.atomic():
        store_spans(decode(otlp_protobuf(traces.finished()), "otlp_proto", 10**7, 86400).spans)
    return root.context.trace_id


def no_horizontal_overflow(page):
    """Whether the page's main area, and every cell and header holding a cut name, fit their boxes."""
    return page.evaluate(
        """() => {
            const main = document.querySelector('main');
            const bad = [];
            if (main.scrollWidth > main.clientWidth + 1) bad.push(`main ${main.scrollWidth} > ${main.clientWidth}`);
            for (const clip of document.querySelectorAll('.clip')) {
                const box = clip.closest('td, th, h1, h3, li, .toolbar, .wf-label') || clip.parentElement;
                const outer = box.getBoundingClientRect(), inner = clip.getBoundingClientRect();
                if (inner.right > outer.right + 1) bad.push(`${clip.className}: ${inner.right} > ${outer.right}`);
                if (box.scrollWidth > box.clientWidth + 1 && box.tagName === 'TD') bad.push(`td ${box.scrollWidth} > ${box.clientWidth}`);
            }
            return bad;
        }"""
    )


def test_a_300_character_service_name_is_cut_to_fit_everywhere_and_shown_whole_on_demand(page, live):
    warnings = []
    page.on("console", lambda msg: warnings.append(msg.text) if msg.type in ("warning", "error") else None)
    seed.seed_mesh(traces=2)
    trace_id = store_long_named_trace()
    assert Service.objects.filter(name=STORED).exists()

    # The graph: the node's label is the name cut to LABEL_CHARS and "…", within the label's width.
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    label = page.evaluate("name => window.meshscope.cy.getElementById(name).data('label')", STORED)
    first_line = label.split("\n")[0]
    assert first_line == STORED[:LABEL_CHARS] + "…"
    box = page.evaluate(
        "name => window.meshscope.cy.getElementById(name).boundingBox({includeLabels: true, includeOverlays: false})",
        STORED,
    )
    assert box["w"] <= 200 and box["h"] <= 90, box  # text-max-width is 180; two lines of label under the node
    edge_label = page.evaluate(
        "() => window.meshscope.cy.edges().filter(e => e.data('target') === 'ledger').data('label')"
    )
    assert edge_label.startswith("⇢ " + TOPIC[:LABEL_CHARS] + "…")
    # Hovering names the node in full, in the graph's tooltip (a property, never markup).
    page.evaluate("name => { window.meshscope.cy.getElementById(name).emit('mouseover'); }", STORED)
    assert page.get_attribute("#graph", "title") == STORED
    page.evaluate("name => { window.meshscope.cy.getElementById(name).emit('mouseout'); }", STORED)

    # The node's panel: the header cut to one line with the name in its tooltip, the whole name under it.
    page.evaluate("name => { window.meshscope.cy.getElementById(name).emit('tap'); }", STORED)
    page.wait_for_selector(".node-panel")
    assert page.get_attribute("#panel h1", "title") == STORED
    assert page.inner_text("#panel .full-name") == STORED
    header = page.evaluate(
        "() => { const h = document.querySelector('#panel h1'); return [h.scrollHeight, h.clientHeight]; }"
    )
    assert header[0] <= header[1] + 1, "one line"
    panel = page.evaluate(
        "() => { const p = document.querySelector('#panel'); return [p.scrollWidth, p.clientWidth]; }"
    )
    assert panel[0] <= panel[1] + 1, "the panel does not scroll sideways"
    assert no_horizontal_overflow(page) == []
    screenshot(page, "long-name-topology")

    # Every page: nothing wider than its column or than the page, and the whole name in the tooltip.
    route = "/routes/detail/?" + urlencode({"service": STORED, "operation": ENTRY[:254] + "…"})
    for url in [
        "/routes/",
        route,
        f"/traces/{trace_id:032x}/",
        "/traces/",
        "/services/",
        "/consistency/",
        "/balancers/",
    ]:
        page.goto(url)
        page.wait_for_load_state("networkidle")
        assert no_horizontal_overflow(page) == [], url
        if url != "/balancers/" and url != "/consistency/":
            assert page.locator(f".clip[title='{STORED}'], [title^='{STORED}']").count() >= 1, url
    page.goto("/routes/")
    page.wait_for_selector("#routes-table a.route-link")
    cell = page.locator(f"#routes-table a.svc-name[title='{STORED}']")
    assert cell.inner_text() == STORED  # the text is whole; the stylesheet cuts what is shown
    assert cell.evaluate("a => a.scrollWidth > a.clientWidth"), "cut with an ellipsis"
    screenshot(page, "long-name-routes")

    page.goto(f"/traces/{trace_id:032x}/")
    page.wait_for_selector("body[data-loaded='1']")
    page.locator(f".span-row[data-service='{STORED}']").first.click()
    assert page.get_attribute("#span-detail h1", "title").startswith(STORED)
    assert STORED in page.inner_text("#span-detail dl")
    assert no_horizontal_overflow(page) == []
    screenshot(page, "long-name-trace")

    # No console warning on any of these pages, cytoscape's about a custom wheel sensitivity among them.
    assert [w for w in warnings if "wheel sensitivity" in w] == []
    assert [w for w in warnings if "Failed to load resource" not in w and "WebSocket" not in w] == []
