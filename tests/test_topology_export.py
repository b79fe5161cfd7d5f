"""The topology as Graphviz DOT (/api/topology/export.dot): the graph of /api/topology/ for the same
window, which Graphviz's grammar (pydot's parser) reads back with every name as it was, however hostile."""

import re
from datetime import timedelta
from itertools import pairwise

import pydot
import pytest
from django.utils import timezone

from dashboard.api.topology import topology_dot
from tests.seed import HOSTILE, Trace, hostile, seed_mesh, store

DOT = "/api/topology/export.dot"
# Names as they come from outside: quotes, backslashes (a trailing one too), line breaks, markup, DOT's
# own keywords and punctuation, and a statement trying to close its own.
HOSTILE_NAMES = [
    'say "hi"',
    "C:\\services\\",
    "\\",
    "\\n is not a line break",
    "two\nlines\r\nand a carriage return",
    HOSTILE,
    "<b>bold</b> & <i>",
    "node",
    "digraph",
    "a -> b",
    'x"]; "evil" -> "evil"; "y',
    "{ } [ ] ; , = ",
    "zürich-服务",
    "-1.5",
]


def unquoted(quoted):
    """A DOT quoted string's text, undoing exactly the escapes the export writes."""
    assert quoted.startswith('"') and quoted.endswith('"'), quoted
    return re.sub(r'\\(["\\nr])', lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), quoted[1:-1])


def parsed(text):
    graphs = pydot.graph_from_dot_data(text)
    assert graphs is not None and len(graphs) == 1, text
    return graphs[0]


def graph_of(text):
    """(service names, the edges as (source, target, protocol, topic)) that the DOT text describes."""
    graph = parsed(text)
    # pydot lists the attribute statements `graph [...]` and `node [...]` among the nodes; services are quoted.
    nodes = {
        unquoted(node.get_name()): node.get_attributes()
        for node in graph.get_nodes()
        if node.get_name() not in ("graph", "node")
    }
    edges = [
        (
            unquoted(edge.get_source()),
            unquoted(edge.get_destination()),
            unquoted(edge.get_attributes()["protocol"]),
            unquoted(edge.get_attributes()["topic"]),
        )
        for edge in graph.get_edges()
    ]
    return nodes, edges


def test_a_hostile_name_reads_back_from_the_dot_as_it_was_in_id_label_and_edges():
    now = timezone.now()
    node = {"rps": 1.0, "error_rate": 0.0, "health": "passing", "instances": 1, "source": "traces"}
    edge = {"rps": 0.5, "error_rate": 0.01, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": None, "negative_delays": 0}
    snapshot = {
        "window": 300,
        "until": now,
        "nodes": [{"id": name, "name": name, **node} for name in HOSTILE_NAMES],
        "edges": [
            {"source": a, "target": b, "protocol": "http", "sync": "sync", "topic": "", **edge}
            for a, b in pairwise(HOSTILE_NAMES)
        ]
        + [{"source": HOSTILE, "target": "\\", "protocol": "messaging", "sync": "async", "topic": 'q"\\', **edge}],
    }

    text = topology_dot(snapshot)
    nodes, edges = graph_of(text)

    assert list(nodes) == HOSTILE_NAMES
    assert [unquoted(attributes["label"]) for attributes in nodes.values()] == HOSTILE_NAMES
    assert edges == [(a, b, "http", "") for a, b in pairwise(HOSTILE_NAMES)] + [(HOSTILE, "\\", "messaging", 'q"\\')]
    # One statement a line, whatever the names hold: nothing a name carries starts a line of its own.
    body = text.splitlines()[3:-1]
    assert len(body) == len(snapshot["nodes"]) + len(snapshot["edges"])
    assert all(re.fullmatch(r'  "(?:[^"\\]|\\.)*"(?: -> "(?:[^"\\]|\\.)*")? \[.*\];', line) for line in body), body


@pytest.mark.django_db
def test_the_dot_export_is_the_topology_of_the_same_window(api):
    seed_mesh(traces=3, errors=1)
    store(hostile())
    weird = Trace()
    root = weird.span('quote"back\\slash', "i-1", "GET /", "server", 0, 20)
    call = weird.span('quote"back\\slash', "i-1", "GET", "client", 2, 10, parent=root, peer="<b>x</b>\\")
    weird.span("<b>x</b>\\", "i-2", "GET /x", "server", 3, 8, parent=call)
    store(weird)
    topology = api.get("/api/topology/").json()

    response = api.get(DOT)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/vnd.graphviz")
    nodes, edges = graph_of(response.content.decode())
    assert set(nodes) == {node["name"] for node in topology["nodes"]}
    assert {"gateway", "orders", HOSTILE, 'quote"back\\slash', "<b>x</b>\\"} <= set(nodes)
    assert sorted(edges) == sorted((e["source"], e["target"], e["protocol"], e["topic"]) for e in topology["edges"])
    assert unquoted(nodes["payments"]["error_rate"]) == str(
        next(node for node in topology["nodes"] if node["name"] == "payments")["error_rate"]
    )


@pytest.mark.django_db
def test_the_dot_export_replays_a_past_window_like_the_topology(api):
    seed_mesh(traces=2)
    past = {"window": 300, "until": (timezone.now() - timedelta(hours=2)).isoformat()}

    nodes, edges = graph_of(api.get(DOT, past).content.decode())

    assert edges == [] == api.get("/api/topology/", past).json()["edges"]
    assert "gateway" not in nodes


@pytest.mark.django_db
def test_the_dot_export_answers_errors_in_json_whatever_the_client_accepts(api, client):
    refused = client.get(DOT, HTTP_ACCEPT="text/vnd.graphviz")
    bad = api.get(DOT, {"window": "59"}, HTTP_ACCEPT="text/vnd.graphviz")
    good = api.get(DOT, HTTP_ACCEPT="text/vnd.graphviz")

    assert (refused.status_code, refused["Content-Type"]) == (401, "application/json")
    assert (bad.status_code, bad.json()) == (400, {"window": "window must be between 60 and 1209600 seconds"})
    assert good.status_code == 200 and good.content.startswith(b"digraph meshscope {")
