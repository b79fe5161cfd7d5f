"""The topology remembers the totals of a window's settled minutes and still shows every late span."""

import time

import pytest

from tests.seed import Trace, store
from topology import edge_totals
from topology.graph import topology_snapshot
from topology.models import Service
from topology.window import Window

pytestmark = pytest.mark.django_db

MINUTE_US = 60_000_000


def calls_at(start_us, count, callee="orders", duration_ms=10):
    traces = []
    for i in range(count):
        trace = Trace(start_us + i * 1000)
        root = trace.span("gateway", "gateway-1", "GET /api/orders", "server", 0, duration_ms + 5)
        call = trace.span("gateway", "gateway-1", "GET", "client", 1, duration_ms, parent=root, peer=callee)
        trace.span(callee, f"{callee}-1", "GET /orders", "server", 2, duration_ms - 1, parent=call)
        traces.append(trace)
    return traces


def edge(snapshot, target="orders"):
    return next(e for e in snapshot["edges"] if e["source"] == "gateway" and e["target"] == target)


def four_minutes_ago_us():
    return (int(time.time()) // 60 - 4) * MINUTE_US + 5_000_000


def test_a_late_span_for_a_settled_minute_reaches_the_topology():
    store(*calls_at(four_minutes_ago_us(), 3))
    before = edge(topology_snapshot(Window.from_params(300)))

    store(*calls_at(four_minutes_ago_us() + 10_000_000, 2, duration_ms=900))
    after = edge(topology_snapshot(Window.from_params(300)))

    window = Window.from_params(300)
    assert before["rps"] == window.per_second(3)
    assert after["rps"] == window.per_second(5)
    assert after["p99_ms"] > 800 > before["p99_ms"]


def test_remembered_totals_give_what_a_fresh_reading_gives():
    store(*calls_at(four_minutes_ago_us(), 4))
    store(*calls_at(four_minutes_ago_us() + MINUTE_US, 2, callee="payments"))
    for _ in range(3):  # every reading after the first reuses the settled minutes
        store(*calls_at(int(time.time() * 1_000_000) - 2_000_000, 1, duration_ms=300))
        remembered = topology_snapshot(Window.from_params(300))

    edge_totals.forget()
    fresh = topology_snapshot(Window.from_params(300))

    assert remembered["edges"] == fresh["edges"]
    assert remembered["nodes"] == fresh["nodes"]
    assert edge(fresh)["rps"] == Window.from_params(300).per_second(4 + 3)


def test_a_new_edge_in_a_settled_minute_appears():
    store(*calls_at(four_minutes_ago_us(), 2))
    assert {e["target"] for e in topology_snapshot(Window.from_params(300))["edges"]} == {"orders"}

    store(*calls_at(four_minutes_ago_us(), 1, callee="payments"))

    assert {e["target"] for e in topology_snapshot(Window.from_params(300))["edges"]} == {"orders", "payments"}


def test_a_service_deleted_in_the_admin_leaves_the_graph_with_its_edges():
    store(*calls_at(four_minutes_ago_us(), 2), *calls_at(four_minutes_ago_us(), 1, callee="payments"))
    topology_snapshot(Window.from_params(300))

    Service.objects.get(name="payments").delete()

    snapshot = topology_snapshot(Window.from_params(300))
    assert {e["target"] for e in snapshot["edges"]} == {"orders"}
    assert "payments" not in {n["name"] for n in snapshot["nodes"]}
