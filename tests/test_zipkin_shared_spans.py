"""Zipkin's shared spans (B3 "join"), as py_zipkin reports them: one span id for both halves of a call,
at the root of a trace and in its middle, in any order of arrival, and with hosts whose clocks disagree.

Every trace here is recorded by py_zipkin itself (tests/zipkin_processes.py), one tracer per service
process, each process sending its own message, as a Zipkin reporter does.
"""

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Sum

from collectors.formats import decode
from tests.test_consumer_restart import sessions_waiting_on_a_lock, wait_for
from tests.zipkin_processes import OUTSIDE_SPAN_ID, OUTSIDE_TRACE_ID, Process, checkout, messages_of, pause
from topology.ingestion import resolve_unpaired, store_spans
from topology.models import EdgeRollup, InstanceRollup, RouteRollup, Span
from topology.shared_spans import Placement, shared_server_id, tree_parents

pytestmark = pytest.mark.django_db

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def store(*messages):
    """Stores messages in one batch, as the span consumer does with what one poll returned."""
    records = [span for message in messages for span in decode(message, "zipkin_json", 10**7, 86400).spans]
    with transaction.atomic():
        return store_spans(records, messages=len(messages))


def calls(source, target):
    return EdgeRollup.objects.filter(source__name=source, target__name=target).aggregate(n=Sum("count"))["n"] or 0


def edges():
    return {
        (row["source__name"], row["target__name"]): row["n"]
        for row in EdgeRollup.objects.values("source__name", "target__name").annotate(n=Sum("count"))
    }


def routes():
    rows = RouteRollup.objects.values("service__name", "operation").annotate(n=Sum("count"))
    return {(row["service__name"], row["operation"]): row["n"] for row in rows if row["n"]}


def served(service):
    """Requests an instance of ``service`` served, by caller (None: from no known caller)."""
    rows = (
        InstanceRollup.objects.filter(instance__service__name=service).values("caller__name").annotate(n=Sum("count"))
    )
    return {row["caller__name"]: row["n"] for row in rows if row["n"]}


def trace(api, trace_id=OUTSIDE_TRACE_ID):
    response = api.get(f"/api/traces/{trace_id.rjust(32, '0')}/")
    assert response.status_code == 200
    return response.json()


def walk(nodes, parent=None):
    """(node, its parent in the tree) for every node, depth first."""
    for node in nodes:
        yield node, parent
        yield from walk(node["children"], node)


def shape(nodes):
    """The tree as nested (service, kind, name) tuples, children sorted: what a reader of the waterfall sees."""
    return sorted(((n["service"], n["kind"], n["name"], shape(n["children"])) for n in nodes), key=repr)


def hops(node):
    return (node["service"], node["operation"], node["count"], sorted(hops(child) for child in node["children"]))


# --- decoding ------------------------------------------------------------------------------------------


def test_py_zipkin_joins_a_call_into_one_span_id_that_both_halves_and_the_servers_children_name():
    processes = checkout()
    spans = [span for message in messages_of(processes.values()) for span in json.loads(message)]
    client = next(s for s in spans if s["name"] == "get /orders" and s["kind"] == "CLIENT")
    server = next(s for s in spans if s["name"] == "get /orders" and s["kind"] == "SERVER")
    assert server["id"] == client["id"] and server["parentId"] == client["parentId"] and server["shared"] is True
    assert {s["name"] for s in spans if s.get("parentId") == client["id"]} == {
        "load cart",
        "post /charge",
        "post /reserve",
    }
    root = next(s for s in spans if s["name"] == "get /api/checkout")
    assert (root["id"], root.get("parentId"), root["shared"]) == (OUTSIDE_SPAN_ID, None, True)


def test_a_shared_server_span_with_a_parent_gets_its_own_id_under_its_client_half_and_one_without_keeps_its_id():
    processes = checkout()
    records = [r for m in messages_of(processes.values()) for r in decode(m, "zipkin_json", 10**7, 86400).spans]
    trace_id = OUTSIDE_TRACE_ID.rjust(32, "0")
    client = next(r for r in records if r.name == "get /orders" and r.kind == "client")
    server = next(r for r in records if r.name == "get /orders" and r.kind == "server")
    assert (server.span_id, server.parent_id) == (shared_server_id(trace_id, client.span_id), client.span_id)
    assert not server.shares_client_id
    root = next(r for r in records if r.name == "get /api/checkout")
    assert (root.span_id, root.parent_id, root.shares_client_id) == (OUTSIDE_SPAN_ID, "", True)


# --- a shared root and shared calls below it ------------------------------------------------------------

EXPECTED_EDGES = {
    ("gateway", "orders"): 1,
    ("gateway", "users"): 1,
    ("gateway", "recommendations"): 1,
    ("orders", "payments"): 1,
    ("orders", "inventory"): 1,
    ("payments", "bank"): 1,
}


def assert_checkout_is_one_tree_counted_once(api):
    assert Span.objects.count() == 16
    body = trace(api)
    (root,) = body["spans"]
    assert (root["service"], root["name"], root["span_id"], root["parent_id"]) == (
        "gateway",
        "get /api/checkout",
        OUTSIDE_SPAN_ID,
        "",
    )
    assert sum(1 for _ in walk(body["spans"])) == 16
    # Each server half is its client half's child, and what a server made is under the server half.
    for node, parent in walk(body["spans"]):
        if node["kind"] == "server" and parent is not None:
            assert parent["kind"] == "client" and node["shared"], node["name"]
        elif parent is not None:
            assert parent["service"] == node["service"], (node["name"], parent["name"])
    orders = next(n for n, _ in walk(body["spans"]) if n["service"] == "orders" and n["kind"] == "server")
    assert sorted(child["name"] for child in orders["children"]) == ["load cart", "post /charge", "post /reserve"]
    # Counted once: one entry route, each call once from its caller's service, each request once.
    assert routes() == {("gateway", "get /api/checkout"): 1}
    assert edges() == EXPECTED_EDGES
    assert served("gateway") == {None: 1}
    assert served("orders") == {"gateway": 1} and served("bank") == {"payments": 1}
    assert not Span.objects.filter(paired=False).exists()
    # The trace lists and the route's call tree have it too, with the same tree.
    (listed,) = api.get("/api/traces/", {"service": "gateway"}).json()
    assert (listed["root_operation"], listed["span_count"]) == ("get /api/checkout", 16)
    tree = api.get("/api/routes/tree/", {"service": "gateway", "operation": "get /api/checkout"}).json()["tree"]
    assert hops(tree) == (
        "gateway",
        "get /api/checkout",
        1,
        sorted(
            [
                (
                    "orders",
                    "get /orders",
                    1,
                    sorted(
                        [
                            ("payments", "post /charge", 1, [("bank", "post /authorize", 1, [])]),
                            ("inventory", "post /reserve", 1, []),
                        ]
                    ),
                ),
                ("users", "get /users/me", 1, []),
                ("recommendations", "get /recs", 1, []),
            ]
        ),
    )


@pytest.mark.parametrize("arrival", ["one batch", "callers first", "callees first"])
def test_a_shared_root_keeps_its_id_and_the_trace_is_one_tree_whatever_order_its_messages_come_in(api, arrival):
    processes = list(checkout().values())
    if arrival == "one batch":
        store(*messages_of(processes))
    else:
        for message in messages_of(processes if arrival == "callers first" else processes[::-1]):
            store(message)

    assert_checkout_is_one_tree_counted_once(api)


def test_a_redelivered_shared_trace_changes_nothing(api):
    processes = list(checkout().values())
    store(*messages_of(processes))
    for message in messages_of(processes[::-1]):
        assert store(message).new_spans == 0
    assert store(*messages_of(processes)).new_spans == 0

    assert_checkout_is_one_tree_counted_once(api)


# --- a root CLIENT span and its shared server, which names no parent either -----------------------------


def job():
    """A job whose trace starts with its CLIENT call: the server joins the id and, like the client,
    has no parent."""
    cron, api_, db = Process("cron", 7000), Process("api", 7001), Process("db-proxy", 7002)
    with cron.root("post /jobs", kind="client") as headers, api_.serve("post /jobs", headers):
        with api_.local("validate"):
            pause()
        with api_.calls(db, "insert"):
            pause()
    return cron, api_, db


@pytest.mark.parametrize("arrival", ["one batch", "client first", "server first", "server, then all again"])
def test_a_shared_server_without_a_parent_becomes_its_root_clients_child_when_that_client_comes(api, arrival):
    cron, api_, db = job()
    (client_message,) = cron.messages
    if arrival == "one batch":
        store(client_message, *api_.messages, *db.messages)
    elif arrival == "client first":
        store(client_message)
        store(*api_.messages, *db.messages)
    else:
        store(*api_.messages, *db.messages)
        # Until its client half comes, the server half is the root of the trace.
        assert routes() == {("api", "post /jobs"): 1} and served("api") == {None: 1}
        store(client_message)
        if arrival == "server, then all again":
            assert store(*api_.messages, *db.messages, client_message).new_spans == 0

    assert Span.objects.count() == 5
    (root,) = trace(api, Span.objects.get(service__name="cron").trace_id)["spans"]
    assert (root["service"], root["kind"]) == ("cron", "client")
    (server,) = root["children"]
    assert (server["service"], server["kind"], server["shared"], server["parent_id"]) == (
        "api",
        "server",
        True,
        root["span_id"],
    )
    assert sorted(child["name"] for child in server["children"]) == ["insert", "validate"]
    # The entry route is the job's call; the api's request was from cron, counted once.
    assert routes() == {("cron", "post /jobs"): 1}
    assert edges() == {("cron", "api"): 1, ("api", "db-proxy"): 1}
    assert served("api") == {"cron": 1}
    assert not Span.objects.filter(paired=False).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="SQLite runs one writer at a time: no race")
def test_a_shared_server_and_its_client_stored_at_the_same_moment_are_joined_when_pairing_settles(api):
    """Two consumers store the halves at once, neither seeing the other's uncommitted half: both count
    as roots for a moment, and the pairing of overdue spans joins them into one call counted once."""
    cron, api_, db = job()
    (client_message,) = cron.messages
    servers_stored, release = threading.Event(), threading.Event()

    def store_the_servers_and_hold():
        try:
            with transaction.atomic():
                store(*api_.messages, *db.messages)
                servers_stored.set()
                release.wait(30)
        finally:
            connection.close()

    def store_the_client():
        try:
            store(client_message)
        finally:
            connection.close()

    servers = threading.Thread(target=store_the_servers_and_hold)
    servers.start()
    assert servers_stored.wait(30)
    client = threading.Thread(target=store_the_client)
    client.start()
    # The client's batch has paired what it could see, and waits on the servers' batch to count its messages.
    assert wait_for(lambda: sessions_waiting_on_a_lock() == 1, 30), "the client's batch did not wait for the servers'"
    release.set()
    servers.join(30)
    client.join(30)
    assert routes() == {("api", "post /jobs"): 1, ("cron", "post /jobs"): 1}

    resolve_unpaired(grace_seconds=0)

    (root,) = trace(api, Span.objects.get(service__name="cron").trace_id)["spans"]
    assert [(child["service"], child["kind"], child["shared"]) for child in root["children"]] == [
        ("api", "server", True)
    ]
    assert routes() == {("cron", "post /jobs"): 1}
    assert edges() == {("cron", "api"): 1, ("api", "db-proxy"): 1}
    assert served("api") == {"cron": 1}
    assert not Span.objects.filter(paired=False).exists()


# --- placing the children of a shared id ----------------------------------------------------------------


def test_a_child_of_a_shared_id_goes_to_the_half_of_its_own_service_or_instance():
    trace_id = "0" * 31 + "1"
    server_id = shared_server_id(trace_id, "c1")
    spans = {
        "r": Placement("", "server", "web", "web-1"),
        "c1": Placement("r", "client", "web", "web-1"),
        server_id: Placement("c1", "server", "web", "web-2"),  # web calls another instance of itself
        "x": Placement("c1", "internal", "web", "web-2"),
        "y": Placement("c1", "internal", "web", "web-1"),
        "z": Placement("c1", "client", "api", "api-1"),  # another service naming the id: left as it says
    }

    parents = tree_parents(trace_id, spans)

    assert parents == {"r": "", "c1": "r", server_id: "c1", "x": server_id, "y": "c1", "z": "c1"}


# --- clock skew -----------------------------------------------------------------------------------------


def microseconds(iso):
    return (datetime.fromisoformat(iso.replace("Z", "+00:00")) - EPOCH) // timedelta(microseconds=1)


def assert_servers_inside_their_clients(body):
    for node, parent in walk(body["spans"]):
        if node["kind"] == "server" and parent is not None and parent["kind"] == "client":
            start, end = node["start_offset_ms"], node["start_offset_ms"] + node["duration_ms"]
            # Within a nanosecond: offsets are floats of milliseconds.
            assert parent["start_offset_ms"] - 1e-6 <= start, node
            assert end <= parent["start_offset_ms"] + parent["duration_ms"] + 1e-6, node
    assert min(node["start_offset_ms"] for node, _ in walk(body["spans"])) == 0


def test_a_server_whose_clock_is_behind_is_shown_inside_its_client_with_its_own_spans_and_nothing_stored_moves(api):
    processes = checkout(skewed={"orders": -300})
    store(*messages_of(processes.values()))
    stored_before = list(Span.objects.order_by("pk").values_list("span_id", "parent_id", "started_at", "duration_us"))
    rollups_before = {
        model: list(model.objects.order_by("pk").values()) for model in (EdgeRollup, InstanceRollup, RouteRollup)
    }

    body = trace(api)

    nodes = {(n["service"], n["kind"], n["name"]): n for n, _ in walk(body["spans"])}
    client = nodes[("gateway", "client", "get /orders")]
    server = nodes[("orders", "server", "get /orders")]
    client_us = (microseconds(client["started_at"]), round(client["duration_ms"] * 1000))
    server_us = (microseconds(server["started_at"]), round(server["duration_ms"] * 1000))
    assert server_us[0] < client_us[0], "the orders host's clock is 300 ms behind: its span starts before its call"
    # Zipkin's correction: the server starts after the client by half of what the client waited beyond it.
    shift_us = client_us[0] + (client_us[1] - server_us[1]) // 2 - server_us[0]
    assert server["clock_skew_ms"] == shift_us / 1000
    assert 290 <= server["clock_skew_ms"] <= 310
    # The spans of the orders host move with it; the gateway keeps its clock. The hosts orders calls are
    # placed against orders' corrected times, which the even split of the network time may leave a
    # little off: they move by a few ms at most.
    for (service, _, name), node in nodes.items():
        if service == "orders":
            assert node["clock_skew_ms"] == shift_us / 1000, name
        elif service == "gateway":
            assert node["clock_skew_ms"] == 0, name
        else:
            assert abs(node["clock_skew_ms"]) < 5, name
    assert_servers_inside_their_clients(body)
    # Shown corrected, never stored corrected.
    assert (
        list(Span.objects.order_by("pk").values_list("span_id", "parent_id", "started_at", "duration_us"))
        == stored_before
    )
    assert server["started_at"] == Span.objects.get(
        service__name="orders", kind="server"
    ).started_at.isoformat().replace("+00:00", "Z")
    for model, rows in rollups_before.items():
        assert list(model.objects.order_by("pk").values()) == rows
    assert edges() == EXPECTED_EDGES


def test_the_critical_path_goes_through_a_server_whose_clock_is_ahead_of_its_client(api):
    # 500 ms ahead, the payments span would start after its call ended: on no critical path, uncorrected.
    processes = checkout(skewed={"payments": 500, "bank": -200})
    store(*messages_of(processes.values()))

    body = trace(api)

    nodes = {(n["service"], n["kind"], n["name"]): n for n, _ in walk(body["spans"])}
    payments = nodes[("payments", "server", "post /charge")]
    call = nodes[("orders", "client", "post /charge")]
    assert microseconds(payments["started_at"]) > microseconds(call["started_at"]) + call["duration_ms"] * 1000
    assert 490 <= -payments["clock_skew_ms"] <= 510
    assert_servers_inside_their_clients(body)
    # Its calls run one after another, so every span is on the critical path: the payments and bank
    # spans too, which their uncorrected start (after their call ended) would have left off it.
    assert [key for key, node in nodes.items() if not node["critical"]] == []
    assert edges() == EXPECTED_EDGES and routes() == {("gateway", "get /api/checkout"): 1}


def test_a_server_longer_than_its_client_is_left_where_its_clock_puts_it(api):
    # Whole microseconds from the start: float seconds would put the spans a microsecond off each other.
    start_us = int(time.time() * 1_000_000)

    def span(service, name, kind, span_id, at_ms, duration_ms, parent=None, shared=False, port=80):
        return {
            "traceId": OUTSIDE_TRACE_ID,
            "id": span_id,
            **({"parentId": parent} if parent else {}),
            "name": name,
            "kind": kind,
            "timestamp": start_us + int(at_ms * 1000),
            "duration": int(duration_ms * 1000),
            "localEndpoint": {"serviceName": service, "ipv4": "10.0.0.1", "port": port},
            **({"shared": True} if shared else {}),
        }

    message = json.dumps(
        [
            span("web", "get /", "SERVER", "000000000000000a", 0, 100),
            span("web", "get /slow", "CLIENT", "000000000000000b", 10, 20, parent="000000000000000a"),
            # 50 ms of work for a 20 ms call: timings no shift can reconcile.
            span(
                "api",
                "get /slow",
                "SERVER",
                "000000000000000b",
                -40,
                50,
                parent="000000000000000a",
                shared=True,
                port=81,
            ),
        ]
    ).encode()
    store(message)

    nodes = {(n["service"], n["kind"]): n for n, _ in walk(trace(api)["spans"])}

    assert nodes[("api", "server")]["clock_skew_ms"] == 0
    assert nodes[("api", "server")]["start_offset_ms"] == 0 and nodes[("web", "server")]["start_offset_ms"] == 40
