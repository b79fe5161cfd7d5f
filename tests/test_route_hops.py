"""Settling a trace counts its hops into the route hop rollups once, however many runs settle at once,
and then lets SPAN_KEEP_RATIO thin its spans: a dropped trace's go, but for its exemplars and those
still waiting for their partner."""

import threading

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from tests.test_span_keeping import TRACES, cart_traces
from topology import route_hops
from topology.ingestion import store_spans
from topology.models import EdgeRollup, RouteHopRollup, RouteRollup, Span
from topology.route_hops import settle_route_hops
from topology.span_keeping import keeps_trace
from topology.traces import route_tree
from topology.window import Window

pytestmark = pytest.mark.django_db


def store(records):
    for start in range(0, len(records), 37):
        with transaction.atomic():
            store_spans(records[start : start + 37], messages=1)


def requests_counted():
    """The requests the hop rollups count: their roots' rows."""
    return RouteHopRollup.objects.filter(path="[]").aggregate(n=Sum("count"))["n"] or 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="SQLite takes no row locks: writers fail instead")
def test_two_runs_settling_at_once_count_each_trace_once_and_the_second_never_waits(monkeypatch):
    traces = cart_traces()[:100]
    store([record for trace in traces for record in trace.records])
    holding, release = threading.Event(), threading.Event()
    count_hops = route_hops._count_hops
    settled = {}

    def count_while_holding(*args):
        holding.set()
        release.wait(30)
        count_hops(*args)

    def run(name, limit, hold):
        try:
            if hold:
                monkeypatch.setattr(route_hops, "_count_hops", count_while_holding)
            settled[name] = settle_route_hops(grace_seconds=0, limit=limit)
        finally:
            connection.close()

    # At a ratio of 1 the pending spans are the 100 roots. The first run claims the oldest 40 and holds
    # them; the second skips them and takes the rest.
    first = threading.Thread(target=run, args=("first", 40, True))
    first.start()
    assert holding.wait(30)
    monkeypatch.setattr(route_hops, "_count_hops", count_hops)
    second = threading.Thread(target=run, args=("second", 5000, False))
    second.start()
    second.join(30)
    assert not second.is_alive(), "the second run waited for the first"
    release.set()
    first.join(30)

    assert settled == {"first": 40, "second": 60}
    assert requests_counted() == 100
    assert settle_route_hops(grace_seconds=0) == 0
    assert requests_counted() == 100


def test_a_settled_dropped_trace_keeps_only_its_exemplars_and_the_spans_waiting_for_a_partner(settings, api):
    settings.SPAN_KEEP_RATIO = 0.1
    traces = cart_traces(seed=5)
    pricing = [record for trace in traces for record in trace.records if record.service == "pricing"]
    store([record for trace in traces for record in trace.records if record.service != "pricing"])
    dropped = {trace.trace_id for trace in traces if not keeps_trace(trace.trace_id, 0.1)}
    assert len(dropped) > TRACES / 2

    assert settle_route_hops(grace_seconds=0)

    left = Span.objects.filter(trace_id__in=dropped)
    # The calls to pricing wait for their server spans; of the rest, the exemplars stayed.
    assert set(left.filter(exemplar=False).values_list("kind", "name", "paired")) == {("client", "POST", False)}
    assert left.filter(exemplar=True).exists()
    for rollup in (*RouteRollup.objects.all(), *EdgeRollup.objects.all()):
        for trace_id in (rollup.example_trace_id, rollup.error_trace_id, rollup.slowest_trace_id):
            assert not trace_id or Span.objects.filter(trace_id=trace_id).exists()
    assert requests_counted() == TRACES

    # The servers come late: paired, the waiting clients go at once, the servers once settled.
    store(pricing)
    assert not Span.objects.filter(trace_id__in=dropped, exemplar=False, kind="client").exists()
    settle_route_hops(grace_seconds=0)

    assert not Span.objects.filter(trace_id__in=dropped, exemplar=False).exists()
    calls = EdgeRollup.objects.filter(source__name="cart", target__name="pricing").aggregate(n=Sum("count"))["n"]
    assert calls == TRACES
    assert not Span.objects.filter(hops_pending=True).exists()
    assert requests_counted() == TRACES
    slowest = RouteRollup.objects.order_by("-slowest_ms").first().slowest_trace_id
    assert api.get(f"/api/traces/{slowest}/").status_code == 200


def test_a_trace_is_counted_once_its_root_is_past_the_grace_and_its_route_tree_reads_the_same_after(settings):
    settings.SPAN_KEEP_RATIO = 0.1
    traces = cart_traces(seed=9)[:40]
    store([record for trace in traces for record in trace.records])
    window = Window.last(900)
    before = route_tree("gateway", "GET /api/cart", window)

    assert Span.objects.count() == 40 * 8  # every span, until settled
    assert settle_route_hops(grace_seconds=3600) == 0  # none started an hour ago
    assert requests_counted() == 0
    while settle_route_hops(grace_seconds=0):
        pass
    after = route_tree("gateway", "GET /api/cart", window)

    assert requests_counted() == 40
    assert before["tree"] == after["tree"] and after["requests"] == before["requests"] == 40
    assert Span.objects.count() < 40 * 8 / 2
