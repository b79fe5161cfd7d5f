"""SPAN_KEEP_RATIO thins the stored spans, whole traces at a time, and never the counts; every edge and
route keeps an example, an error example and its slowest call, reachable from the pages."""

import random
import time
from collections import defaultdict

import pytest
from django.db import transaction
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from tests.seed import Trace
from topology.ingestion import resolve_unpaired, store_spans
from topology.models import EdgeRollup, IngestRollup, InstanceRollup, RouteHopRollup, RouteRollup, Span
from topology.route_hops import settle_route_hops
from topology.span_keeping import keeps_trace
from topology.traces import route_tree
from topology.window import Window

pytestmark = pytest.mark.django_db

TRACES = 400
BATCH = 37  # spans: a trace's spans land in two or three batches, its pairs often split between them
EDGES = (
    ("gateway", "cart", "http", ""),
    ("cart", "pricing", "http", ""),
    ("cart", "audit", "messaging", "cart-events"),
)


def cart_traces(seed=7):
    """gateway GET /api/cart → cart GET /cart → pricing POST /quote, and cart publishes cart-events that
    audit consumes; durations random, one trace in eight failing in pricing, starts over three minutes."""
    rng = random.Random(seed)
    now_us = int(time.time() * 1_000_000)
    traces = []
    for _ in range(TRACES):
        failed = rng.random() < 0.125
        trace = Trace(start_us=now_us - rng.randrange(10_000_000, 170_000_000))
        # Random in all 128 bits, as W3C trace ids are: a UUID4's low 64 bits begin with its variant bits.
        trace.trace_id = f"{rng.getrandbits(128):032x}"
        quote_ms, delay_ms = rng.uniform(1, 80), rng.uniform(1, 50)
        total_ms = quote_ms + 20
        root = trace.span("gateway", "gateway-1", "GET /api/cart", "server", 0, total_ms + 4, error=failed)
        call = trace.span("gateway", "gateway-1", "GET", "client", 1, total_ms + 2, parent=root, error=failed)
        cart = trace.span(
            "cart", f"cart-{rng.randrange(3)}", "GET /cart", "server", 2, total_ms, parent=call, error=failed
        )
        trace.span("cart", "cart-0", "load basket", "internal", 3, 2, parent=cart)
        quote = trace.span("cart", "cart-0", "POST", "client", 6, quote_ms + 1, parent=cart, error=failed)
        trace.span("pricing", "pricing-1", "POST /quote", "server", 6.5, quote_ms, parent=quote, error=failed)
        messaging = {"messaging.system": "kafka", "messaging.destination.name": "cart-events"}
        send = trace.span(
            "cart", "cart-0", "cart-events publish", "producer", 10, 1, parent=cart, protocol="messaging",
            topic="cart-events", attributes=messaging,
        )  # fmt: skip
        trace.span(
            "audit", "audit-1", "cart-events process", "consumer", 10 + delay_ms, delay_ms, parent=send,
            protocol="messaging", topic="cart-events", attributes=messaging,
        )  # fmt: skip
        traces.append(trace)
    return traces


def other_traces(seed=13):
    """Two more routes and traces with no route: mobile-bff GET /m/cart → cart GET /cart → pricing POST
    /quote (one in six failing in pricing); audit's consumer of messages from an uninstrumented producer,
    a root, → ledger POST /entries; and cart requests whose caller's spans never came (no root)."""
    rng = random.Random(seed)
    now_us = int(time.time() * 1_000_000)
    traces = []
    for _ in range(60):
        trace = Trace(start_us=now_us - rng.randrange(10_000_000, 170_000_000))
        trace.trace_id = f"{rng.getrandbits(128):032x}"
        failed, quote_ms = rng.random() < 1 / 6, rng.uniform(1, 80)
        root = trace.span("mobile-bff", "bff-1", "GET /m/cart", "server", 0, quote_ms + 30)
        call = trace.span("mobile-bff", "bff-1", "GET", "client", 1, quote_ms + 25, parent=root)
        cart = trace.span("cart", f"cart-{rng.randrange(3)}", "GET /cart", "server", 2, quote_ms + 20, parent=call)
        quote = trace.span("cart", "cart-0", "POST", "client", 6, quote_ms + 1, parent=cart, error=failed)
        trace.span("pricing", "pricing-1", "POST /quote", "server", 6.5, quote_ms, parent=quote, error=failed)
        traces.append(trace)
    for _ in range(40):
        trace = Trace(start_us=now_us - rng.randrange(10_000_000, 170_000_000))
        trace.trace_id = f"{rng.getrandbits(128):032x}"
        messaging = {"messaging.system": "kafka", "messaging.destination.name": "legacy-events"}
        root = trace.span(
            "audit", "audit-1", "legacy-events process", "consumer", 0, 12, protocol="messaging",
            topic="legacy-events", attributes=messaging,
        )  # fmt: skip
        call = trace.span("audit", "audit-1", "POST", "client", 1, 10, parent=root)
        trace.span("ledger", "ledger-1", "POST /entries", "server", 2, rng.uniform(1, 8), parent=call)
        traces.append(trace)
    for _ in range(20):
        trace = Trace(start_us=now_us - rng.randrange(10_000_000, 170_000_000))
        trace.trace_id = f"{rng.getrandbits(128):032x}"
        lost = trace.span("shop-web", "web-1", "GET", "client", 0, 30)
        cart = trace.span("cart", "cart-1", "GET /cart", "server", 1, 25, parent=lost)
        quote = trace.span("cart", "cart-1", "POST", "client", 2, 10, parent=cart)
        trace.span("pricing", "pricing-1", "POST /quote", "server", 3, 8, parent=quote)
        trace.records.remove(lost)
        traces.append(trace)
    return traces


def batches(traces, seed=11):
    records = [record for trace in traces for record in trace.records]
    random.Random(seed).shuffle(records)
    return [records[start : start + BATCH] for start in range(0, len(records), BATCH)]


def ingest(batch_list, settle=True):
    """Through the write paths the consumer and beat run: each batch, then the pairing of what waits, then
    the settling of the traces' hops (at a grace of 0, every trace is due)."""
    for batch in batch_list:
        with transaction.atomic():
            store_spans(batch, messages=1)
    while resolve_unpaired(grace_seconds=0):
        pass
    while settle and settle_route_hops(grace_seconds=0):
        pass


def counts():
    """Every rollup by names, with all its figures."""
    figures = ("count", "errors", "latency_sum_ms", "latency_buckets")

    def read(rows, key):
        return {key(row): tuple(round(v, 6) if isinstance(v, float) else v for v in row[1:]) for row in rows}

    edges = EdgeRollup.objects.values_list(
        "minute", "source__name", "target__name", "protocol", "topic", *figures, "negative_delays"
    )
    instances = InstanceRollup.objects.values_list("minute", "instance__identity", "caller__name", *figures)
    routes = RouteRollup.objects.values_list("minute", "service__name", "operation", *figures)
    return {
        "edges": {row[:5]: row[5:] for row in edges if row[5]},
        "instances": {row[:3]: row[3:] for row in instances if row[3]},
        "routes": {row[:3]: row[3:] for row in routes if row[3]},
    }


def forget_everything():
    for model in (Span, EdgeRollup, InstanceRollup, RouteRollup, RouteHopRollup, IngestRollup):
        model.objects.all().delete()


def route_trees():
    """The call tree of every route that the rollups count, by (service, operation)."""
    window = Window.last(900)
    routes = RouteRollup.objects.filter(count__gt=0).values_list("service__name", "operation").distinct()
    return {(service, operation): route_tree(service, operation, window)["tree"] for service, operation in routes}


def shape(node):
    """A tree's hops and their counts, without the latencies."""
    children = {(child["service"], child["operation"]): shape(child) for child in node["children"]}
    return (node["count"], node["errors"], children)


def test_the_counts_at_a_keep_ratio_of_a_tenth_are_those_at_one_from_far_fewer_stored_spans(settings):
    traces = cart_traces()
    settings.SPAN_KEEP_RATIO = 1.0
    ingest(batches(traces))
    everything, stored_at_one = counts(), Span.objects.count()
    forget_everything()

    settings.SPAN_KEEP_RATIO = 0.1
    ingest(batches(traces))

    assert counts() == everything
    assert sum(figures[0] for figures in everything["edges"].values()) == TRACES * len(EDGES)
    assert stored_at_one == TRACES * 8
    # A tenth of the traces, whole, and the exemplars: far below everything.
    assert Span.objects.count() < stored_at_one / 3
    # Nothing is left waiting for a partner: what waited was deleted once counted, unless an exemplar.
    assert not Span.objects.filter(paired=False).exists()


def test_each_routes_call_tree_at_a_keep_ratio_of_a_tenth_is_the_one_at_one_before_and_after_settling(settings):
    traces = cart_traces() + other_traces()
    settings.SPAN_KEEP_RATIO = 1.0
    ingest(batches(traces), settle=False)
    unsettled_at_one = route_trees()
    ingest([])
    at_one = route_trees()
    forget_everything()

    settings.SPAN_KEEP_RATIO = 0.1
    ingest(batches(traces), settle=False)
    unsettled = route_trees()
    stored_unsettled = Span.objects.count()
    ingest([])

    assert route_trees() == unsettled == at_one == unsettled_at_one
    # Every span was stored until settled, a dropped trace's too; settled, a dropped trace's spans went
    # but for its exemplars, the roots of the traces with no route as well.
    assert stored_unsettled == sum(len(trace.records) for trace in traces)
    assert not Span.objects.filter(hops_pending=True).exists()
    assert all(
        keeps_trace(trace_id, 0.1)
        for trace_id in Span.objects.filter(exemplar=False).values_list("trace_id", flat=True)
    )
    assert Span.objects.count() < stored_unsettled / 3
    failed_at_cart = sum(trace.records[0].error for trace in traces[:TRACES])
    failed_from_mobile = sum(trace.records[3].error for trace in traces[TRACES : TRACES + 60])
    assert {route: shape(tree) for route, tree in at_one.items()} == {
        ("gateway", "GET /api/cart"): (TRACES, failed_at_cart, {
            ("cart", "GET /cart"): (TRACES, failed_at_cart, {
                ("pricing", "POST /quote"): (TRACES, failed_at_cart, {}),
                ("audit", "cart-events process"): (TRACES, 0, {}),
            }),
        }),
        ("mobile-bff", "GET /m/cart"): (60, 0, {
            ("cart", "GET /cart"): (60, 0, {("pricing", "POST /quote"): (60, failed_from_mobile, {})}),
        }),
        ("audit", "legacy-events process"): (40, 0, {("ledger", "POST /entries"): (40, 0, {})}),
    }  # fmt: skip


def test_a_trace_is_kept_whole_or_dropped_alike_by_two_workers_as_the_opentelemetry_sampler_decides(settings):
    settings.SPAN_KEEP_RATIO = 0.1
    traces = cart_traces(seed=3)
    # Two workers: one takes the gateway's and cart's spans, the other the rest, each in its own batches.
    first = [r for t in traces for r in t.records if r.service in ("gateway", "cart")]
    second = [r for t in traces for r in t.records if r.service not in ("gateway", "cart")]
    ingest([first[i : i + BATCH] for i in range(0, len(first), BATCH)])
    ingest([second[i : i + BATCH] for i in range(0, len(second), BATCH)])

    stored = defaultdict(set)
    for trace_id, span_id in Span.objects.values_list("trace_id", "span_id"):
        stored[trace_id].add(span_id)
    sampler = TraceIdRatioBased(0.1)
    kept = [t for t in traces if keeps_trace(t.trace_id, 0.1)]
    assert 20 < len(kept) < 70
    for trace in traces:
        opentelemetry_samples = sampler.should_sample(None, int(trace.trace_id, 16), "span").decision.is_sampled()
        assert keeps_trace(trace.trace_id, 0.1) is opentelemetry_samples
    for trace in kept:
        assert stored[trace.trace_id] == {record.span_id for record in trace.records}
    dropped_spans_stored = sum(len(stored[t.trace_id]) for t in traces if t not in kept)
    # Of a dropped trace, only its exemplars stay: the roots and calls of few edges and routes a minute.
    assert dropped_spans_stored < (TRACES - len(kept)) * 8 / 5


def test_every_edge_and_route_has_an_example_an_error_example_and_its_slowest_call_on_its_page(settings, api):
    settings.SPAN_KEEP_RATIO = 0.1
    traces = cart_traces(seed=5)
    ingest(batches(traces, seed=5))

    for source, target, protocol, topic in EDGES:
        calls = []  # (latency ms, failed, trace id) of each call on the edge, as the edge measures it
        for trace in traces:
            by_id = {r.span_id: r for r in trace.records}
            for child in trace.records:
                parent = by_id.get(child.parent_id)
                if (
                    parent
                    and parent.kind in ("client", "producer")
                    and (parent.service, child.service)
                    == (
                        source,
                        target,
                    )
                ):
                    latency = (child.start_us - parent.start_us if topic else parent.duration_us) / 1000
                    calls.append((latency, parent.error or child.error, trace.trace_id))
        detail = api.get(
            "/api/edges/detail/", {"source": source, "target": target, "protocol": protocol, "topic": topic}
        ).json()
        samples = {sample["trace_id"]: sample for sample in detail["samples"]}
        slowest = max(calls)[2]
        assert slowest in samples, (source, target)
        assert any(sample["error"] for sample in samples.values()) is any(call[1] for call in calls)
        assert samples[slowest]["why"] == ("failed" if samples[slowest]["error"] else "slowest")
        assert api.get(f"/api/traces/{slowest}/").status_code == 200

    roots = [(t.records[0].duration_us, t.records[0].error, t.trace_id) for t in traces]
    tree = api.get("/api/routes/tree/", {"service": "gateway", "operation": "GET /api/cart"}).json()
    assert tree["slow"][0]["trace_id"] == max(roots)[2]
    assert tree["failed"] and {t["trace_id"] for t in tree["failed"]} <= {r[2] for r in roots if r[1]}
    assert tree["recent"]
    # The call tree covers every request, of the kept and of the dropped traces.
    assert tree["requests"] == tree["tree"]["count"] == TRACES
