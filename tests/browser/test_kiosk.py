"""Kiosk mode (?kiosk=1), for a wall screen: no navigation, login or toolbar, the topology's graph on
the whole viewport, and so it stays while live updates redraw it. A link leads to the ordinary page."""

import pytest

from tests import seed
from tests.browser.chromium import screenshot

pytestmark = [pytest.mark.browser]

GRAPH_READY = "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes().length > 0"
CHROME = [".mainnav", ".brand", ".logout", "#live-toggle", "#theme-toggle", "#topology-toolbar"]
VIEWPORT = {"width": 1440, "height": 900}  # the page fixture's


def shows_kiosk(page):
    assert page.get_attribute("html", "data-kiosk") is not None
    assert [selector for selector in CHROME if page.locator(selector).is_visible()] == []
    assert page.locator("#live-status").is_visible()  # whether the wall is live stays in sight
    box = page.locator("#graph").bounding_box()
    assert (box["x"], box["y"]) == (0, 0), box
    assert (round(box["width"]), round(box["height"])) == (VIEWPORT["width"], VIEWPORT["height"]), box
    assert page.evaluate("() => [window.meshscope.cy.width(), window.meshscope.cy.height()]") == [
        VIEWPORT["width"],
        VIEWPORT["height"],
    ]


def test_kiosk_mode_shows_the_graph_alone_on_the_whole_screen_through_live_updates(page, live):
    seed.seed_mesh(traces=2)
    page.goto("/?kiosk=1")
    page.wait_for_function(GRAPH_READY)
    page.wait_for_function("() => document.querySelector('#live-status').dataset.state === 'live'")
    shows_kiosk(page)
    screenshot(page, "topology-kiosk")

    # A new service arrives over the websocket: the graph is redrawn, and still alone on the screen.
    draws = page.evaluate("() => window.meshscope.draws")
    seed.store(seed.one_call("wall-caller", "GET /wall", "wall-callee", "GET /x"))
    page.wait_for_function(
        "() => window.meshscope.cy.getElementById('wall-callee').nonempty()", timeout=60000, polling=200
    )
    assert page.evaluate("() => window.meshscope.draws") > draws
    shows_kiosk(page)
    assert "kiosk=1" in page.url

    # Kiosk is the address's: a link from the wall (here a node's Traces link) opens the ordinary page.
    page.evaluate("() => { window.meshscope.cy.getElementById('orders').emit('tap'); }")
    page.click(".node-panel a[href^='/traces/']")
    page.wait_for_url("**/traces/**")
    assert page.get_attribute("html", "data-kiosk") is None
    assert page.locator(".mainnav").is_visible() and page.locator(".logout").is_visible()


def test_any_page_opens_in_kiosk_mode_without_navigation(page, live):
    page.goto("/balancers/?kiosk=1")
    assert [selector for selector in CHROME[:-1] if page.locator(selector).is_visible()] == []
    assert page.locator("#live-status").is_visible()
    page.goto("/balancers/")
    assert page.locator(".mainnav").is_visible()
