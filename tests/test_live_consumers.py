"""The websocket consumer end to end through the ASGI application: auth, origin, snapshot, deltas."""

import json
import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from dashboard.asgi import application
from dashboard.live import broadcast
from dashboard.live.builders import BUILDERS
from dashboard.live.protocol import Receiver, apply, plain
from tests import seed
from topology.live_topology import LiveTopology

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")


@pytest.fixture
def session_cookie():
    user = get_user_model().objects.create_user("sre", password="pw-123456")
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def communicator(path, cookie=None, origin=ORIGIN):
    headers = [HOST]
    if origin:
        headers.append(origin)
    if cookie:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, path, headers=headers)


def run(coroutine_function):
    async_to_sync(coroutine_function)()


def test_a_websocket_without_a_session_is_refused():
    async def scenario():
        ws = communicator("/ws/live/topology/")
        connected, _ = await ws.connect()
        assert not connected
        await ws.disconnect()

    run(scenario)


def test_a_websocket_from_another_origin_is_refused(session_cookie):
    async def scenario():
        ws = communicator("/ws/live/topology/", session_cookie, origin=(b"origin", b"http://evil.example"))
        connected, _ = await ws.connect()
        assert not connected
        await ws.disconnect()

    run(scenario)


def test_an_unknown_view_is_closed(session_cookie):
    async def scenario():
        ws = communicator("/ws/live/nothing/", session_cookie)
        connected, _ = await ws.connect()
        assert not connected
        await ws.disconnect()

    run(scenario)


def test_snapshot_then_seq_numbered_deltas_that_rebuild_the_view(session_cookie):
    seed.seed_mesh(traces=3)

    async def scenario():
        ws = communicator("/ws/live/topology/?window=300", session_cookie)
        connected, _ = await ws.connect()
        assert connected
        snapshot = await ws.receive_json_from(timeout=5)
        assert snapshot["type"] == "snapshot" and snapshot["window"] == 300
        names = {node["id"] for node in snapshot["data"]["nodes"]}
        assert {"gateway", "orders", "payments", "inventory"} <= names
        edges = {(e["source"], e["target"], e["sync"]) for e in snapshot["data"]["edges"]}
        assert ("orders", "inventory", "async") in edges and ("gateway", "orders", "sync") in edges

        # A new service starts calling: the next broadcast carries it, and only what changed.
        await database_sync_to_async(seed.store)(seed.one_call("orders", "GET /orders", "shipping", "GET /quote"))
        await database_sync_to_async(broadcast.broadcast)("topology")

        delta = await ws.receive_json_from(timeout=5)
        while delta["type"] != "delta" or delta["seq"] <= snapshot["seq"]:
            delta = await ws.receive_json_from(timeout=5)
        assert delta["prev"] == snapshot["seq"] and delta["seq"] == snapshot["seq"] + 1
        upserted = {node["id"] for node in delta["changes"]["nodes"]["upsert"]}
        assert "shipping" in upserted
        assert "gateway" not in upserted, "unchanged nodes are not resent"

        state = apply(snapshot["data"], delta["changes"])
        from topology.graph import topology_view
        from topology.window import Window

        fresh = plain(await database_sync_to_async(topology_view)(Window.from_params(300)))

        def by_id(items):
            return sorted(items, key=lambda item: item["id"])

        assert by_id(state["nodes"]) == by_id(fresh["nodes"])
        assert by_id(state["edges"]) == by_id(fresh["edges"])

        # A client that saw a gap asks for a resync and gets the current sequence.
        await ws.send_json_to({"type": "resync"})
        again = await ws.receive_json_from(timeout=5)
        assert again["type"] == "snapshot" and again["seq"] >= delta["seq"]
        await ws.send_json_to({"type": "ping"})
        assert (await ws.receive_json_from(timeout=5)) == {"type": "pong"}
        await ws.disconnect()

    run(scenario)


def test_the_view_is_computed_once_per_broadcast_however_many_clients(session_cookie, monkeypatch):
    seed.seed_mesh(traces=1)
    calls = []

    def counting(method):
        def counted(keeper, now, *args):
            calls.append(keeper)
            return method(keeper, now, *args)

        return counted

    # The topology is kept incrementally: each broadcast updates (or rebuilds) its keeper once.
    for name in ("rebuild", "update"):
        monkeypatch.setattr(LiveTopology, name, counting(getattr(LiveTopology, name)))

    async def scenario():
        clients = [communicator("/ws/live/topology/", session_cookie) for _ in range(5)]
        seqs = []
        for ws in clients:
            assert (await ws.connect())[0]
            seqs.append((await ws.receive_json_from(timeout=5))["seq"])
        await database_sync_to_async(seed.store)(seed.checkout())
        calls.clear()
        await database_sync_to_async(broadcast.broadcast)("topology")
        assert len(calls) == 1
        texts = []
        for ws, seq in zip(clients, seqs):
            message = await ws.receive_json_from(timeout=5)
            while message["seq"] <= seq:
                message = await ws.receive_json_from(timeout=5)
            texts.append(message)
        assert all(message == texts[0] for message in texts)
        for ws in clients:
            await ws.disconnect()

    run(scenario)


def test_a_refresh_that_changes_nothing_still_reaches_the_clients_so_they_see_no_gap(session_cookie):
    seed.seed_mesh(traces=1)

    async def scenario():
        ws = communicator("/ws/live/routes/?window=300", session_cookie)
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=5)
        latest = snapshot["seq"]

        # What a client's ping does when the view went 30 s without an announcement.
        await database_sync_to_async(broadcast.refresh_and_send)("routes", 300)
        delta = await ws.receive_json_from(timeout=5)
        while delta["seq"] <= latest:  # the snapshot's own computation, as the client skips it
            delta = await ws.receive_json_from(timeout=5)

        assert (delta["type"], delta["prev"]) == ("delta", latest)
        assert delta["changes"] == {}
        await ws.disconnect()

    run(scenario)


def test_a_view_without_a_snapshot_gets_invalidations_with_sequence_numbers(session_cookie):
    async def scenario():
        ws = communicator("/ws/live/services/", session_cookie)
        assert (await ws.connect())[0]
        first = await ws.receive_json_from(timeout=5)
        assert first["type"] == "invalidate"
        await database_sync_to_async(broadcast.broadcast)("services")
        second = await ws.receive_json_from(timeout=5)
        assert second == {**second, "type": "invalidate", "view": "services", "seq": first["seq"] + 1}
        await ws.disconnect()

    run(scenario)


def test_the_routes_view_sends_a_snapshot_then_only_the_route_that_changed(session_cookie):
    seed.seed_mesh(traces=2)

    async def scenario():
        ws = communicator("/ws/live/routes/?window=300", session_cookie)
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=5)
        assert snapshot["type"] == "snapshot"
        assert [(r["service"], r["operation"], r["count"]) for r in snapshot["data"]["routes"]] == [
            ("gateway", "GET /api/orders", 2)
        ]

        await database_sync_to_async(seed.store)(seed.one_call("search", "GET /api/search", "catalog", "GET /items"))
        await database_sync_to_async(broadcast.broadcast)("routes")
        delta = await ws.receive_json_from(timeout=5)
        while delta["seq"] <= snapshot["seq"]:  # the snapshot's own computation, as the client skips it
            delta = await ws.receive_json_from(timeout=5)

        assert (delta["type"], delta["prev"], delta["seq"]) == ("delta", snapshot["seq"], snapshot["seq"] + 1)
        assert [(r["service"], r["operation"]) for r in delta["changes"]["routes"]["upsert"]] == [
            ("search", "GET /api/search")
        ]
        await ws.disconnect()

    run(scenario)


@pytest.mark.parametrize("view, keys", [("balancers", {"services", "window"}), ("lag", {"groups", "flows", "kafka"})])
def test_the_balancer_and_lag_views_send_snapshots(session_cookie, view, keys):
    seed.seed_mesh(traces=2)

    async def scenario():
        ws = communicator(f"/ws/live/{view}/?window=900", session_cookie)
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=5)
        assert (snapshot["type"], snapshot["window"]) == ("snapshot", 900)
        assert keys <= set(snapshot["data"])
        await ws.disconnect()

    run(scenario)


def test_a_committed_write_reaches_an_open_socket_through_the_broadcaster(session_cookie, broadcaster):
    """No test code announces here: storing the spans does, once committed, and the broadcaster sends it."""
    seed.seed_mesh(traces=1)

    async def scenario():
        ws = communicator("/ws/live/topology/", session_cookie)
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=5)
        await database_sync_to_async(seed.store)(seed.one_call("gateway", "GET /api/cart", "cart", "GET /cart"))
        while True:
            message = await ws.receive_json_from(timeout=10)
            if message["type"] == "delta" and message["seq"] > snapshot["seq"]:
                ids = {node["id"] for node in message["changes"].get("nodes", {}).get("upsert", [])}
                if "cart" in ids:
                    break
        await ws.disconnect()

    run(scenario)


def test_nothing_is_computed_while_nobody_watches(monkeypatch):
    calls = []
    monkeypatch.setitem(BUILDERS, "topology", lambda window: calls.append(window) or {})
    assert broadcast.broadcast("topology") == []
    assert calls == []


def test_a_ping_recomputes_a_view_that_nobody_announced_for_a_while(session_cookie, broadcaster):
    import json

    seed.seed_mesh(traces=1)

    async def scenario():
        ws = communicator("/ws/live/topology/", session_cookie)
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from(timeout=5)
        # The window slid and traffic changed, but no collector announced it.
        await database_sync_to_async(seed.store)(seed.one_call("gateway", "GET /api/search", "search", "GET /q"))
        client = broadcast.redis_client()
        client.delete(broadcast.key("dirty", "topology"))  # as if no collector had announced it
        stored = json.loads(client.get(broadcast.key("state", "topology", 300)))
        stored["stored_at"] -= 60
        client.set(broadcast.key("state", "topology", 300), json.dumps(stored))
        await ws.send_json_to({"type": "ping"})
        seen = set()
        while "search" not in seen:
            message = await ws.receive_json_from(timeout=5)
            if message["type"] == "delta" and message["seq"] > snapshot["seq"]:
                seen |= {node["id"] for node in message["changes"].get("nodes", {}).get("upsert", [])}
        await ws.disconnect()

    run(scenario)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("abc", "window must be a whole number of seconds"),
        ("59", f"window must be between 60 and {14 * 86400} seconds"),
        ("600", "live views cover one of 300, 900, 3600 seconds"),
    ],
)
def test_a_window_the_live_views_do_not_push_is_refused_with_the_apis_message(session_cookie, window, message):
    async def scenario():
        ws = communicator(f"/ws/live/topology/?window={window}", session_cookie)
        assert (await ws.connect())[0]
        assert await ws.receive_json_from(timeout=5) == {"type": "error", "window": message, "message": message}
        assert (await ws.receive_output(timeout=5))["code"] == 4400
        await ws.disconnect()

    run(scenario)


def test_a_socket_idle_longer_than_redis_reads_wait_stays_open_and_gets_the_next_delta(session_cookie, broadcaster):
    """channels_redis waits for a message in blocking reads of 5 s; redis-py 8 gives up on a read after
    5 s by default, which closed every idle socket (redis-py#4091). The settings lift that limit."""
    seed.seed_mesh(traces=1)

    async def scenario():
        ws = communicator("/ws/live/topology/", session_cookie)
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=5)
        # Longer than two blocking reads with nothing announced: the scenario itself, not a
        # synchronisation. The consumer may refresh the view meanwhile; it must not close.
        idle_until = time.monotonic() + 12
        while time.monotonic() < idle_until:
            if not await ws.receive_nothing(timeout=0.5, interval=0.05):
                output = await ws.receive_output(timeout=1)
                assert output["type"] == "websocket.send", output
            assert not ws.future.done(), "the consumer stopped"
        await database_sync_to_async(seed.store)(seed.one_call("gateway", "GET /api/cart", "cart", "GET /cart"))
        while True:
            message = await ws.receive_json_from(timeout=10)
            upserted = {node["id"] for node in message.get("changes", {}).get("nodes", {}).get("upsert", [])}
            if message["type"] == "delta" and "cart" in upserted:
                break
        await ws.disconnect()

    run(scenario)


def test_a_client_that_asks_for_deflate_gets_a_binary_snapshot_and_deltas_it_reads_back(session_cookie):
    """The seeded mesh's snapshot is above 1 KiB: it comes deflated. The delta too, as the broadcaster
    deflated it once, and a text-only client on the same view gets the same messages as text."""
    seed.seed_mesh(traces=3)

    async def scenario():
        deflating = communicator("/ws/live/topology/?window=300&compression=deflate", session_cookie)
        text_only = communicator("/ws/live/topology/?window=300", session_cookie)
        assert (await deflating.connect())[0] and (await text_only.connect())[0]
        receiver = Receiver()

        async def next_message():
            while True:
                output = await deflating.receive_output(timeout=5)
                frame = output.get("bytes") if output.get("bytes") is not None else output["text"]
                text = receiver.feed(frame)
                if text is not None:
                    return json.loads(text), type(frame)

        snapshot, kind = await next_message()
        assert (snapshot["type"], kind) == ("snapshot", bytes)
        assert {"gateway", "orders", "payments", "inventory"} <= {node["id"] for node in snapshot["data"]["nodes"]}
        plain_snapshot = await text_only.receive_json_from(timeout=5)
        assert plain_snapshot == snapshot

        await database_sync_to_async(seed.store)(seed.one_call("orders", "GET /orders", "shipping", "GET /quote"))
        [sent] = await database_sync_to_async(broadcast.broadcast)("topology")
        delta, _kind = await next_message()
        while delta["seq"] < sent["seq"]:
            delta, _kind = await next_message()
        assert delta == plain(sent)
        assert "shipping" in {node["id"] for node in delta["changes"]["nodes"]["upsert"]}
        plain_delta = await text_only.receive_json_from(timeout=5)
        while plain_delta["seq"] < sent["seq"]:
            plain_delta = await text_only.receive_json_from(timeout=5)
        assert plain_delta == delta
        state = apply(snapshot["data"], delta["changes"])
        assert "shipping" in {node["id"] for node in state["nodes"]}
        await deflating.disconnect()
        await text_only.disconnect()

    run(scenario)
