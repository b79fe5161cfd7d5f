"""The delta protocol and the coalescing behind announce_change, on the real Redis."""

import itertools
import threading
import time

import pytest

from dashboard import live


def test_diff_carries_only_changed_records_and_apply_rebuilds_the_new_state():
    old = {
        "window": 300,
        "generated_at": "t1",
        "nodes": [{"id": "a", "rps": 1}, {"id": "b", "rps": 2}, {"id": "c", "rps": 3}],
        "sources": [{"name": "kafka", "stale": False}],
    }
    new = {
        "window": 300,
        "generated_at": "t2",
        "nodes": [{"id": "a", "rps": 1}, {"id": "b", "rps": 5}, {"id": "d", "rps": 1}],
        "sources": [{"name": "kafka", "stale": True}],
    }
    changes = live.diff(old, new)
    assert changes == {
        "nodes": {"upsert": [{"id": "b", "rps": 5}, {"id": "d", "rps": 1}], "remove": ["c"]},
        "sources": {"upsert": [{"name": "kafka", "stale": True}], "remove": []},
    }
    rebuilt = live.apply(old, changes)
    assert sorted(rebuilt["nodes"], key=lambda n: n["id"]) == sorted(new["nodes"], key=lambda n: n["id"])
    assert rebuilt["sources"] == new["sources"]


def test_unchanged_state_gives_an_empty_delta_and_scalars_are_set():
    state = {"until": "x", "nodes": [{"id": "a"}]}
    assert live.diff(state, state) == {}
    assert live.diff(state, {"until": "y", "nodes": [{"id": "a"}]}) == {"until": {"set": "y"}}
    assert live.apply({"a": 1, "b": 2}, live.diff({"a": 1, "b": 2}, {"a": 1})) == {"a": 1}


def test_the_delta_size_depends_on_what_changed_not_on_how_much_traffic():
    nodes = [{"id": f"svc-{i}", "rps": 1.0} for i in range(1000)]
    busier = [dict(node) for node in nodes]
    busier[7]["rps"] = 99.0
    changes = live.diff({"nodes": nodes}, {"nodes": busier})
    assert changes["nodes"]["upsert"] == [{"id": "svc-7", "rps": 99.0}]
    assert len(live.encode(changes)) < 100


@pytest.fixture
def counted_broadcasts(monkeypatch):
    calls = []
    done = threading.Event()

    def fake_broadcast(view):
        calls.append((view, time.monotonic()))
        done.set()

    monkeypatch.setattr(live, "broadcast", fake_broadcast)
    return calls


def test_a_burst_of_announcements_gives_one_broadcast_now_and_one_trailing(counted_broadcasts):
    started = time.monotonic()
    for _ in range(200):
        live.announce_change("routes")
    assert time.monotonic() - started < 1.0, "announce_change must stay cheap"
    time.sleep(0.3)
    assert len(counted_broadcasts) == 1, "the leading edge broadcasts at once"
    time.sleep(1.2)
    assert len(counted_broadcasts) == 2, "the last change of the burst is broadcast when the slot frees"
    gap = counted_broadcasts[1][1] - counted_broadcasts[0][1]
    assert gap >= 0.9
    time.sleep(1.2)
    assert len(counted_broadcasts) == 2, "nothing changed since: no more broadcasts"


def test_steady_announcements_broadcast_at_most_about_once_a_second(counted_broadcasts):
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        live.announce_change("routes")
        time.sleep(0.02)
    time.sleep(1.2)
    assert 3 <= len(counted_broadcasts) <= 5
    times = [t for _, t in counted_broadcasts]
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.9


def test_balancers_broadcast_at_most_once_in_five_seconds_while_the_topology_keeps_its_second(counted_broadcasts):
    started = time.monotonic()
    while time.monotonic() - started < 2.5:
        live.announce_change("balancers")
        live.announce_change("topology")
        time.sleep(0.02)
    time.sleep(0.3)
    views = [view for view, _ in counted_broadcasts]
    assert views.count("balancers") == 1
    assert views.count("topology") >= 2


def test_views_coalesce_separately_and_unknown_views_never_raise(counted_broadcasts):
    live.announce_change("routes")
    live.announce_change("lag")
    live.announce_change("no-such-view")
    time.sleep(0.3)
    assert sorted(view for view, _ in counted_broadcasts) == ["lag", "routes"]


def test_announce_change_never_raises_when_redis_is_down(settings, monkeypatch):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"], "prefix": "down"},
        }
    }
    monkeypatch.setattr(live, "_redis_down_until", 0.0)
    started = time.monotonic()
    assert live.announce_change("topology") is None
    assert time.monotonic() - started < 3
    started = time.monotonic()
    for _ in range(100):
        assert live.announce_change("topology") is None
    assert time.monotonic() - started < 0.1, "no connect timeout per batch while Redis is down"
    monkeypatch.setattr(live, "_redis_down_until", 0.0)


def test_announcements_from_other_processes_share_the_slot(counted_broadcasts):
    """The slot lives in Redis: a slot taken elsewhere (here: by hand) makes this process wait for it."""
    client = live.redis_client()
    client.set(live._key("slot", "routes"), "1", px=600)
    live.announce_change("routes")
    time.sleep(0.3)
    assert counted_broadcasts == []
    time.sleep(0.6)
    assert [view for view, _ in counted_broadcasts] == ["routes"]


def test_large_messages_are_split_into_chunks_under_the_frame_limit_and_join_back():
    import json

    message = {
        "type": "snapshot",
        "seq": 3,
        "data": {"nodes": [{"id": f'svc-"{i}"-é', "rps": i} for i in range(40000)]},
    }
    text = live.encode(message)
    assert len(text) > 1024 * 1024
    frames = live.frames(text)
    assert len(frames) > 1
    assert all(len(frame.encode()) < 1024 * 1024 for frame in frames)
    parts = [json.loads(frame) for frame in frames]
    assert {part["type"] for part in parts} == {"chunk"} and [part["i"] for part in parts] == list(range(len(parts)))
    assert json.loads("".join(part["text"] for part in parts)) == message
    assert live.frames('{"type":"delta"}') == ['{"type":"delta"}']
