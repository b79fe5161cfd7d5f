"""Deep links and keyboard shortcuts: the URL restores the whole view (replayed window, selection with
its panel, filters), "Copy link" puts it on the clipboard, and the keys do what the help says."""

import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests import seed
from tests.browser.chromium import screenshot

pytestmark = [pytest.mark.browser]

GRAPH_READY = "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes().length > 0"
PAYMENTS_EDGE = "orders->payments/http/"


def query_of(page):
    return parse_qs(urlsplit(page.url).query)


def nodes(page):
    return page.evaluate("() => window.meshscope.cy.nodes().map(n => n.id()).sort()")


def seed_then_and_now():
    """Three failing checkouts forty minutes ago, six clean ones now: a replayed window and the live one
    differ in every figure of the orders → payments edge."""
    then = int((time.time() - 40 * 60) * 1_000_000)
    old = seed.store(*[seed.checkout(error=True, start_us=then + i * 1_000_000) for i in range(3)])
    seed.seed_mesh(traces=6, errors=0)
    return old


def test_a_deep_link_reopens_a_selected_edge_in_a_replayed_window_with_its_filters(page, live):
    old = seed_then_and_now()
    until = (datetime.now(UTC) - timedelta(minutes=30)).replace(microsecond=0)
    link = {
        "window": "900",
        "until": until.isoformat().replace("+00:00", "Z"),
        "edge": PAYMENTS_EDGE,
        "service": "s",
        "health": "unknown",
        "idle": "1",
    }
    page.goto(f"/?{urlencode(link)}")
    page.wait_for_selector(".edge-panel")

    # The replayed window, not the live one: the 15 minutes up to `until`, three calls, all failing.
    assert page.get_attribute("#live-status", "data-state") == "replay"
    assert page.inner_text("#replay-label") == "30 min ago"
    assert page.get_attribute("#window-select button.active", "data-window") == "900"
    assert page.inner_text(".edge-panel h1") == "orders → payments"
    figures = page.eval_on_selector_all(
        ".edge-panel .figure",
        "els => Object.fromEntries(els.map(e => [e.lastChild.textContent, e.firstChild.textContent]))",
    )
    # The figures of that window as the API gives them, formatted as the page formats them.
    expected = page.evaluate(
        """async (until) => {
            const u = await import('/static/js/util.js');
            const q = new URLSearchParams({source: 'orders', target: 'payments', protocol: 'http', window: '900', until});
            const d = await (await fetch(`/api/edges/detail/?${q}`)).json();
            return {rate: u.fmtRate(d.totals.rps), errors: u.fmtPct(d.totals.error_rate), p95: u.fmtMs(d.totals.p95_ms)};
        }""",
        link["until"],
    )
    assert {key: figures[key] for key in expected} == expected
    assert figures["errors"] == "100%" and figures["rate"] != "0/s", figures
    samples = page.eval_on_selector_all(".edge-panel .trace-list a", "links => links.map(a => a.textContent)")
    assert sorted(samples) == sorted(t.trace_id[:16] for t in old)
    assert page.evaluate(f"() => window.meshscope.cy.getElementById('edge:{PAYMENTS_EDGE}').selected()")

    # The filters: text, health and idle, on the controls and on the graph.
    assert page.input_value("#filter-text") == "s"
    assert page.input_value("#filter-health") == "unknown"
    assert page.is_checked("#hide-idle")
    assert nodes(page) == ["orders", "payments"]
    # Drawing kept the link as it was.
    assert query_of(page) == {key: [value] for key, value in link.items()}
    screenshot(page, "deep-link-replayed-edge")

    # Going live from the link: the live window's figures, and `until` leaves the URL.
    page.eval_on_selector(
        "#replay",
        "el => { el.value = '0'; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }",
    )
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.edge-panel .figure')].some(f => f.textContent === '0%errors')"
    )
    assert "until" not in query_of(page) and query_of(page)["edge"] == [PAYMENTS_EDGE]


def test_selecting_and_filtering_write_the_url_and_a_reload_restores_them(page, live):
    seed_then_and_now()
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    page.click("#window-select button[data-window='900']")
    page.fill("#filter-text", "o")
    page.select_option("#filter-health", "unknown")
    page.wait_for_function("() => new URLSearchParams(location.search).get('health') === 'unknown'")
    page.wait_for_function("() => new URLSearchParams(location.search).get('service') === 'o'")
    page.evaluate("() => { window.meshscope.cy.getElementById('orders').emit('tap'); }")
    page.wait_for_selector(".node-panel")
    assert query_of(page)["node"] == ["orders"]
    # Replaying writes the fixed end of the replayed window (the 15 minutes that hold the older traces).
    page.eval_on_selector(
        "#replay",
        "el => { el.value = '-30'; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }",
    )
    page.wait_for_function("() => new URLSearchParams(location.search).has('until')")
    until = datetime.fromisoformat(query_of(page)["until"][0])
    assert timedelta(minutes=29) < datetime.now(UTC) - until < timedelta(minutes=31)
    assert query_of(page)["window"] == ["900"]

    page.reload()
    page.wait_for_selector(".node-panel[data-service='orders']")
    assert page.input_value("#filter-text") == "o"
    assert page.input_value("#filter-health") == "unknown"
    assert page.get_attribute("#live-status", "data-state") == "replay"
    assert nodes(page) == ["inventory", "orders"]
    assert datetime.fromisoformat(query_of(page)["until"][0]) == until

    # Closing the panel takes the selection out of the link.
    page.click("#panel-close")
    assert "node" not in query_of(page)


def test_copy_link_puts_the_url_on_the_clipboard_and_says_so(page, live):
    seed.seed_mesh(traces=1)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    page.goto("/?window=3600&health=unknown")
    page.wait_for_function(GRAPH_READY)
    page.evaluate("() => { window.meshscope.cy.getElementById('payments').emit('tap'); }")
    page.wait_for_selector(".node-panel")
    page.click("#copy-link")
    page.wait_for_selector("#copy-link-status:text-is('Link copied')")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == page.url
    assert parse_qs(urlsplit(copied).query) == {"window": ["3600"], "health": ["unknown"], "node": ["payments"]}
    # The confirmation goes away by itself.
    page.wait_for_selector("#copy-link-status", state="hidden")


def test_the_topology_shortcuts_focus_the_filter_fit_and_clear_the_selection(page, live):
    seed.seed_mesh(traces=2)
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    viewport = "() => ({zoom: window.meshscope.cy.zoom(), pan: window.meshscope.cy.pan()})"
    fitted = page.evaluate(viewport)

    # "/" focuses the filter without typing itself; then keys are text, not shortcuts, but Esc leaves
    # the field and keeps what was typed.
    page.keyboard.press("/")
    assert page.evaluate("() => document.activeElement.id") == "filter-text"
    page.keyboard.type("f")
    page.keyboard.press("Escape")
    assert page.evaluate("() => document.activeElement === document.body")
    assert page.input_value("#filter-text") == "f"
    page.fill("#filter-text", "")
    page.keyboard.press("Escape")
    page.wait_for_function("() => window.meshscope.cy.nodes().length === 4")

    # Esc in the field clears the selection like anywhere else.
    page.evaluate("() => { window.meshscope.cy.getElementById('orders').emit('tap'); }")
    page.wait_for_selector(".node-panel")
    page.keyboard.press("/")
    assert page.input_value("#filter-text") == ""
    page.keyboard.press("Escape")
    assert page.is_hidden("#panel")

    # "f" fits the graph again after the user zoomed away.
    page.evaluate("() => { window.meshscope.cy.viewport({zoom: 0.2, pan: {x: 3, y: 4}}); }")
    page.keyboard.press("f")
    page.wait_for_function(f"() => window.meshscope.cy.zoom() === {fitted['zoom']}")
    assert page.evaluate(viewport) == fitted

    # Esc clears a selected edge and closes its panel.
    page.evaluate(f"() => {{ window.meshscope.cy.getElementById('edge:{PAYMENTS_EDGE}').emit('tap'); }}")
    page.wait_for_selector(".edge-panel")
    assert "edge" in query_of(page)
    page.keyboard.press("Escape")
    assert page.is_hidden("#panel")
    assert page.evaluate("() => window.meshscope.cy.elements(':selected').length") == 0
    assert "edge" not in query_of(page)

    # "?" lists the shortcuts; the button says so in its tooltip.
    assert "(?)" in page.get_attribute("#shortcuts-help", "title")
    page.keyboard.press("?")
    page.wait_for_selector("dialog#shortcuts[open]")
    listed = page.eval_on_selector_all("dialog#shortcuts tr", "rows => rows.map(r => r.dataset.key)")
    assert listed == ["/", "?", "f", "Escape"]
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog#shortcuts", state="hidden")


def test_arrow_keys_move_through_the_waterfall_and_a_link_reopens_a_span(page, live):
    (trace,) = seed.seed_mesh(traces=1, errors=0)
    page.goto(f"/traces/{trace.trace_id}/")
    page.wait_for_selector("body[data-loaded='1']")
    order = page.eval_on_selector_all(".span-row", "rows => rows.map(r => r.dataset.spanId)")
    selected = "() => document.querySelector('.span-row.selected')?.dataset.spanId"
    focused = "() => document.activeElement.matches('.span-row.selected:focus-visible')"

    page.keyboard.press("ArrowDown")
    assert page.evaluate(selected) == order[0]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.evaluate(selected) == order[2]
    assert page.evaluate(focused), "the selected row has the visible focus"
    page.keyboard.press("ArrowUp")
    assert page.evaluate(selected) == order[1]
    span = next(r for r in trace.records if r.span_id == order[1])
    assert span.name in page.inner_text("#span-detail") and span.service in page.inner_text("#span-detail")
    assert query_of(page)["span"] == [order[1]]
    screenshot(page, "trace-keyboard")

    # The link selects that span again, its details beside it.
    page.reload()
    page.wait_for_selector("body[data-loaded='1']")
    assert page.evaluate(selected) == order[1]
    assert span.name in page.inner_text("#span-detail")
    page.keyboard.press("ArrowDown")
    assert page.evaluate(selected) == order[2]

    # Esc closes the details and takes the span out of the link.
    page.keyboard.press("Escape")
    assert page.is_hidden("#span-detail")
    assert page.evaluate(selected) is None
    assert "span" not in query_of(page)


def test_the_routes_balancers_and_consistency_pages_keep_their_state_in_the_url(page, live):
    seed.seed_mesh(traces=2)
    page.goto("/routes/?q=gate&sort=p95_ms")
    page.wait_for_selector("#routes-table tbody tr")
    assert page.input_value("#filter-text") == "gate"
    page.click("#routes-table th[data-sort='operation']")
    assert query_of(page) == {"q": ["gate"], "sort": ["operation"]}

    page.goto("/balancers/?open=payments")
    page.wait_for_selector(".balancer[data-service='payments'] table")
    assert page.locator(".balancer[data-service='orders'] table").count() == 0
    page.click(".balancer[data-service='orders'] button.toggle")
    page.wait_for_function("() => new URLSearchParams(location.search).getAll('open').join() === 'orders,payments'")
    page.keyboard.press("/")
    assert page.evaluate("() => document.activeElement.id") == "filter-text"

    from django.utils import timezone

    from topology.models import ConsumerPartitionLag

    now = timezone.now()
    for i in range(3):
        ConsumerPartitionLag.objects.create(
            group="inventory",
            topic="order-events",
            partition=0,
            sampled_at=now - timedelta(minutes=2 - i),
            committed_offset=100 + i,
            end_offset=120 + i,
            lag_messages=20,
            lag_seconds=1.5,
            lag_seconds_method="record_timestamp",
            offset_moved_at=now,
            status="OK",
        )
    page.goto("/consistency/?group=inventory")
    page.wait_for_selector("tr.lag-group[data-group='inventory']")
    assert page.locator("#lag table table [title='order-events']").count() == 1, "the linked group is open"
    page.click("tr.lag-group[data-group='inventory'] button.toggle")
    assert "group" not in query_of(page)
