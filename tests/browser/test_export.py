"""The topology page's exports: the graph as drawn, as a PNG and an SVG file, and the window's topology
from the API, as JSON and Graphviz DOT, each a download that opens as what it says it is."""

import json
import struct
from pathlib import Path
from xml.etree import ElementTree

import pydot
import pytest

from tests import seed

pytestmark = [pytest.mark.browser]

GRAPH_READY = "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes().length > 0"
SVG = "{http://www.w3.org/2000/svg}"
# A service name that is markup, and that XML must escape (quotes, an ampersand), short enough to be
# drawn whole.
SCRIPT = '<script>alert("x&y")</script>'
DRAWN = """() => {
    const cy = window.meshscope.cy;
    return {
        fills: cy.nodes().map(n => n.style('background-color')).sort(),
        lines: cy.edges().map(e => e.style('line-color')).sort(),
        dashed: cy.edges().filter(e => e.style('line-style') === 'dashed').length,
        labels: cy.nodes().map(n => n.style('color')),
        groups: cy.nodes('.group').length,
    };
}"""


def downloaded(page, selector):
    with page.expect_download() as info:
        page.click(selector)
    download = info.value
    assert download.failure() is None
    return download, Path(download.path()).read_bytes()


def classed(root, name):
    return [element for element in root.iter() if element.get("class") == name]


def svg_export(page):
    """The SVG download, parsed, with what it draws: a shape per node and a path per edge."""
    download, svg = downloaded(page, "#export-svg")
    assert download.suggested_filename.endswith(".svg")
    root = ElementTree.fromstring(svg)  # well-formed XML, the hostile names escaped in it
    assert root.tag == f"{SVG}svg"
    # Names are text, never markup: no element but the few the writer makes (no <script>, no <img>).
    assert {element.tag.removeprefix(SVG) for element in root.iter()} <= {
        "svg",
        "defs",
        "marker",
        "rect",
        "g",
        "path",
        "ellipse",
        "text",
        "tspan",
    }
    nodes, edges = classed(root, "node"), classed(root, "edge")
    markers = {marker.get("id") for marker in root.iter(f"{SVG}marker")}
    assert all(edge.tag == f"{SVG}path" and edge.get("marker-end")[5:-1] in markers for edge in edges)
    return root, nodes, edges


def dot_names(text):
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, text
    return {
        node.get_name()[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        for node in graphs[0].get_nodes()
        if node.get_name() not in ("graph", "node")
    }, len(graphs[0].get_edges())


def test_the_topology_page_downloads_the_graph_as_png_and_svg_and_the_topology_as_json_and_dot(page, live):
    seed.seed_mesh(traces=3, errors=1)
    seed.store(seed.hostile())
    lone = seed.Trace()
    lone.span(SCRIPT, "script-1", "GET /", "server", 0, 5)
    seed.store(lone)
    page.goto("/")
    page.wait_for_function(GRAPH_READY)
    topology = page.request.get("/api/topology/").json()
    names = {node["name"] for node in topology["nodes"]}
    assert {"gateway", "orders", "payments", "inventory", seed.HOSTILE, SCRIPT} <= names
    drawn = page.evaluate("() => window.meshscope.cy.nodes().map(n => n.data('label').split('\\n')[0])")

    download, png = downloaded(page, "#export-png")
    assert download.suggested_filename.startswith("meshscope-topology-")
    assert download.suggested_filename.endswith(".png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 100 and height > 100

    root, nodes, edges = svg_export(page)
    # A label may be drawn in several lines; its pieces come one after the other.
    text = " ".join(" ".join(element.itertext()) for element in root.iter(f"{SVG}text"))
    assert sorted(drawn) == sorted(names)
    assert all(label in text for label in drawn), (drawn, text)
    # Each node its shape in its colour, each edge its line with an arrowhead, the async one dashed.
    on_screen = page.evaluate(DRAWN)
    assert len(nodes) == len(drawn) and all(node.tag == f"{SVG}ellipse" for node in nodes)
    assert sorted(node.get("fill") for node in nodes) == on_screen["fills"]
    assert len(edges) == len(topology["edges"]) == 4
    assert sorted(edge.get("stroke") for edge in edges) == on_screen["lines"]
    assert len([edge for edge in edges if edge.get("stroke-dasharray")]) == on_screen["dashed"] == 1
    # The hostile names are each a label's line, as they are.
    lines = {tspan.text for tspan in root.iter(f"{SVG}tspan")}
    assert {seed.HOSTILE, SCRIPT} <= lines

    download, raw = downloaded(page, "#export-json")
    assert download.suggested_filename.endswith(".json")
    exported = json.loads(raw)
    assert {node["name"] for node in exported["nodes"]} == names
    assert len(exported["edges"]) == len(topology["edges"]) == 4

    download, raw = downloaded(page, "#export-dot")
    assert download.suggested_filename.endswith(".dot")
    assert dot_names(raw.decode()) == (names, 4)

    # A replayed window exports that window: two hours ago there were no calls.
    page.eval_on_selector(
        "#replay",
        "el => { el.value = '-120'; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }",
    )
    page.wait_for_function("() => window.meshscope.cy.edges().length === 0")
    until = page.evaluate("() => window.meshscope.model.meta.until")
    download, raw = downloaded(page, "#export-json")
    assert json.loads(raw)["until"] == until and json.loads(raw)["edges"] == []
    download, raw = downloaded(page, "#export-dot")
    assert "until=" in download.url and dot_names(raw.decode())[1] == 0


def test_the_svg_export_is_drawn_in_the_themes_colours_grouped_as_on_screen(page, live):
    seed.seed_mesh(traces=2)
    page.emulate_media(color_scheme="light")
    page.goto("/?group=prefix")
    page.wait_for_function(
        "() => window.meshscope && window.meshscope.cy && window.meshscope.cy.nodes('.group').length > 0"
    )
    light, _, _ = svg_export(page)
    label = page.evaluate(DRAWN)["labels"][0]

    page.click("#theme-toggle")
    page.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
    page.wait_for_function("label => window.meshscope.cy.nodes()[0].style('color') !== label", arg=label)
    dark, nodes, edges = svg_export(page)
    on_screen = page.evaluate(DRAWN)
    panel = page.evaluate("() => getComputedStyle(document.documentElement).getPropertyValue('--panel').trim()")
    background = dark.find(f"{SVG}rect")
    assert background.get("fill") == panel != light.find(f"{SVG}rect").get("fill")
    assert (background.get("width"), background.get("height")) == (dark.get("width"), dark.get("height"))
    # A group is a rounded rectangle with a double border: its body and an outer ring.
    assert len(nodes) == len(classed(dark, "node-ring")) == on_screen["groups"] == 4
    assert all(node.tag == f"{SVG}rect" and float(node.get("rx")) > 0 for node in nodes)
    assert sorted(node.get("fill") for node in nodes) == on_screen["fills"]
    assert sorted(edge.get("stroke") for edge in edges) == on_screen["lines"]
    labels = [text.get("fill") for text in dark.iter(f"{SVG}text")]
    assert labels and set(on_screen["labels"]) <= set(labels)
