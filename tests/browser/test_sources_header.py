"""The header with twenty data sources at 1280 px: one chip that counts them, a popover that lists them,
and nothing past the window's edge; a service whose Consul health is out of date drawn as unknown."""

import pytest

from tests import seed
from tests.browser.chromium import screenshot
from topology.models import Instance, SourceStatus

pytestmark = [pytest.mark.browser]

GRAPH_READY = "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes().length > 0"
STALE = ["consul:dc03", "consul:dc07", "consul:dc11", "consul:dc15"]


def twenty_sources():
    """19 Consul datacenters and Kafka, five of them stale."""
    for number in range(19):
        SourceStatus.record_success(f"consul:dc{number:02d}")
    for name in STALE:
        SourceStatus.record_failure(name, "Consul unreachable: connection refused")
    SourceStatus.record_failure("kafka", "<img src=x onerror=alert(1)> NoBrokersAvailable")


def overflow(page):
    """Whatever sticks out of the window or out of the header, with its right edge."""
    return page.evaluate(
        """() => {
            const bad = [];
            const root = document.documentElement, header = document.querySelector('header.topbar');
            if (root.scrollWidth > window.innerWidth) bad.push(`page ${root.scrollWidth} > ${window.innerWidth}`);
            if (header.scrollWidth > header.clientWidth) bad.push(`header ${header.scrollWidth} > ${header.clientWidth}`);
            for (const node of header.querySelectorAll('*')) {
                const box = node.getBoundingClientRect();
                if (box.width && box.right > window.innerWidth) bad.push(`${node.tagName}.${node.className} ${box.right}`);
            }
            return bad;
        }"""
    )


def popover_state(page):
    return page.evaluate(
        """() => ({
            expanded: document.querySelector('#sources-toggle').getAttribute('aria-expanded'),
            hidden: document.querySelector('#sources-popover').hidden,
            focused: document.activeElement === document.querySelector('#sources-toggle'),
        })"""
    )


def test_twenty_sources_fit_the_header_at_1280_px_in_one_chip_whose_popover_lists_them(page, live):
    page.set_viewport_size({"width": 1280, "height": 800})
    seed.seed_mesh(traces=2)
    twenty_sources()

    for url in ("/services/", "/balancers/", "/traces/", "/"):
        page.goto(url)
        assert page.locator("#sources > .source").count() == 1, url
        assert overflow(page) == [], url
    # The topology page draws the header again from each live view (util.setSources).
    page.wait_for_function(GRAPH_READY)
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
    toggle = page.locator("#sources-toggle")
    assert toggle.inner_text().startswith("20 sources · 5 stale")
    assert popover_state(page) == {"expanded": "false", "hidden": True, "focused": False}

    toggle.click()
    assert popover_state(page)["expanded"] == "true" and page.locator("#sources-popover").is_visible()
    names = page.locator("#sources-popover .source-name").all_inner_texts()
    assert len(names) == 20
    assert names[:5] == ["consul:dc03", "consul:dc07", "consul:dc11", "consul:dc15", "kafka"]
    fresh = [f"consul:dc{number:02d}" for number in range(19) if f"consul:dc{number:02d}" not in STALE]
    assert names[5:] == fresh
    assert "<img src=x onerror=alert(1)> NoBrokersAvailable" in page.inner_text("#sources-popover")
    box = page.locator("#sources-popover").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1280 and box["y"] + box["height"] <= 800
    assert overflow(page) == []
    screenshot(page, "sources-popover")

    # The header drawn again from a live view while the list is open keeps it open.
    page.evaluate("() => { document.querySelector('#sources-toggle').dataset.drawn = 'before'; }")
    page.evaluate("() => window.meshscope.socket.resync()")
    page.wait_for_function("() => !document.querySelector('#sources-toggle').dataset.drawn")
    assert popover_state(page)["expanded"] == "true" and page.locator("#sources-popover").is_visible()

    page.keyboard.press("Escape")
    assert popover_state(page) == {"expanded": "false", "hidden": True, "focused": True}
    page.keyboard.press("Enter")
    assert popover_state(page)["expanded"] == "true"
    page.click("#updated")  # elsewhere
    assert popover_state(page)["expanded"] == "false" and page.locator("#sources-popover").is_hidden()


def test_a_service_whose_datacenter_is_no_longer_read_is_drawn_unknown_with_a_dashed_ring(page, live):
    seed.seed_mesh(traces=2, errors=0)
    SourceStatus.record_success("consul:dc1")
    Instance.objects.filter(service__name="orders").update(in_consul=True, datacenter="dc1", health="critical")
    Instance.objects.filter(service__name="payments").update(in_consul=True, datacenter="dc9", health="critical")

    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    style = "name => { const n = window.meshscope.cy.getElementById(name); return [n.data('color'), n.style('border-style')]; }"
    critical, unknown = "#d6394b", "#8b93a3"
    assert page.evaluate(style, "orders") == [critical, "solid"]
    assert page.evaluate(style, "payments") == [unknown, "dashed"]

    page.locator("#filter-health").select_option("unknown")
    assert page.evaluate("() => window.meshscope.cy.getElementById('payments').visible()")
