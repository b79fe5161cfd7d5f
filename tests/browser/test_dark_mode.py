"""Dark mode: every page follows the system's colour scheme (Playwright emulates it), the topology's
graph with it, and the header's toggle overrides it, remembered across reloads."""

import pytest

from tests import seed
from tests.browser.chromium import screenshot

pytestmark = [pytest.mark.browser]

GRAPH_READY = "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes().length > 0"
PAGES = ["/routes/", "/traces/", "/balancers/", "/consistency/", "/services/"]


def theme(page, expected):
    page.wait_for_function("theme => document.documentElement.dataset.theme === theme", arg=expected)


def colours(page):
    """What the page and its graph are drawn in: computed CSS colours, and cytoscape's rendered style."""
    return page.evaluate(
        """() => {
            const body = getComputedStyle(document.body), cy = window.meshscope.cy;
            const node = cy.getElementById('payments'), edge = cy.edges().filter(e => e.data('target') === 'orders');
            return {
                background: body.backgroundColor, text: body.color,
                panel: getComputedStyle(document.querySelector('.topology-body')).backgroundColor,
                label: node.style('color'), labelBackground: node.style('text-background-color'),
                node: node.style('background-color'), edge: edge.style('line-color'),
            };
        }"""
    )


def luminance(rgb):
    red, green, blue = (int(part) for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def test_dark_mode_follows_the_system_restyles_the_graph_and_remembers_the_toggle(page, live):
    seed.seed_mesh(traces=2)
    page.emulate_media(color_scheme="light")
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    theme(page, "light")
    light = colours(page)

    # The system turns dark: the open page follows, its graph restyled without a reload.
    page.emulate_media(color_scheme="dark")
    theme(page, "dark")
    page.wait_for_function(
        "label => window.meshscope.cy.getElementById('payments').style('color') !== label", arg=light["label"]
    )
    dark = colours(page)
    assert {key: light[key] != dark[key] for key in light} == dict.fromkeys(light, True), (light, dark)
    assert luminance(dark["background"]) < luminance(light["background"])
    assert luminance(dark["text"]) > luminance(light["text"]) and luminance(dark["label"]) > luminance(light["label"])
    assert page.get_attribute("#theme-toggle", "aria-pressed") == "true"
    screenshot(page, "topology-dark", docs=True)

    # Opened dark, the graph is drawn dark from the start.
    page.reload()
    page.wait_for_function(GRAPH_READY)
    assert colours(page) == dark

    # The toggle overrides the system, and a reload remembers it.
    page.click("#theme-toggle")
    theme(page, "light")
    assert page.evaluate("() => localStorage.getItem('meshscope.theme')") == "light"
    page.reload()
    page.wait_for_function(GRAPH_READY)
    theme(page, "light")
    assert colours(page) == light
    assert page.get_attribute("#theme-toggle", "aria-pressed") == "false"

    # Every page takes the chosen theme; toggling back to the system's own goes back to following it.
    for path in PAGES:
        page.goto(path)
        theme(page, "light")
        assert page.evaluate("() => getComputedStyle(document.body).backgroundColor") == light["background"], path
    page.click("#theme-toggle")
    theme(page, "dark")
    assert page.evaluate("() => localStorage.getItem('meshscope.theme')") is None
    page.emulate_media(color_scheme="light")
    theme(page, "light")


def test_the_login_page_follows_the_system_dark_too(browser, live):
    context = browser.new_context(base_url=live.url, color_scheme="dark")
    try:
        page = context.new_page()
        page.goto("/login/")
        theme(page, "dark")
        card = page.evaluate("() => getComputedStyle(document.querySelector('.login-card')).backgroundColor")
        assert luminance(card) < 100
    finally:
        context.close()
