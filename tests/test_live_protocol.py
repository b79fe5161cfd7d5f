"""The delta protocol's pure half: diff, apply and the frames that carry a message. No services."""

import json

from dashboard.live.protocol import apply, diff, encode, frames


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
    changes = diff(old, new)
    assert changes == {
        "nodes": {"upsert": [{"id": "b", "rps": 5}, {"id": "d", "rps": 1}], "remove": ["c"]},
        "sources": {"upsert": [{"name": "kafka", "stale": True}], "remove": []},
    }
    rebuilt = apply(old, changes)
    assert sorted(rebuilt["nodes"], key=lambda n: n["id"]) == sorted(new["nodes"], key=lambda n: n["id"])
    assert rebuilt["sources"] == new["sources"]


def test_unchanged_state_gives_an_empty_delta_and_scalars_are_set():
    state = {"until": "x", "nodes": [{"id": "a"}]}
    assert diff(state, state) == {}
    assert diff(state, {"until": "y", "nodes": [{"id": "a"}]}) == {"until": {"set": "y"}}
    assert apply({"a": 1, "b": 2}, diff({"a": 1, "b": 2}, {"a": 1})) == {"a": 1}


def test_the_delta_size_depends_on_what_changed_not_on_how_much_traffic():
    nodes = [{"id": f"svc-{i}", "rps": 1.0} for i in range(1000)]
    busier = [dict(node) for node in nodes]
    busier[7]["rps"] = 99.0
    changes = diff({"nodes": nodes}, {"nodes": busier})
    assert changes["nodes"]["upsert"] == [{"id": "svc-7", "rps": 99.0}]
    assert len(encode(changes)) < 100


def test_large_messages_are_split_into_chunks_under_the_frame_limit_and_join_back():
    message = {
        "type": "snapshot",
        "seq": 3,
        "data": {"nodes": [{"id": f'svc-"{i}"-é', "rps": i} for i in range(40000)]},
    }
    text = encode(message)
    assert len(text) > 1024 * 1024
    split = frames(text)
    assert len(split) > 1
    assert all(len(frame.encode()) < 1024 * 1024 for frame in split)
    parts = [json.loads(frame) for frame in split]
    assert {part["type"] for part in parts} == {"chunk"} and [part["i"] for part in parts] == list(range(len(parts)))
    assert json.loads("".join(part["text"] for part in parts)) == message
    assert frames('{"type":"delta"}') == ['{"type":"delta"}']
