"""The delta protocol's pure half: diff, apply and the frames that carry a message. No services."""

import base64
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from dashboard.live import protocol
from dashboard.live.protocol import IncompleteMessage, Receiver, apply, as_text, diff, encode, frames


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


def test_for_a_text_only_client_large_messages_are_split_into_chunks_under_the_frame_limit_and_join_back():
    message = {
        "type": "snapshot",
        "seq": 3,
        "data": {"nodes": [{"id": f'svc-"{i}"-é', "rps": i} for i in range(40000)]},
    }
    text = encode(message)
    assert len(text) > 1024 * 1024
    split = frames(text, compressed=False)
    assert len(split) > 1
    assert all(len(frame.encode()) < 1024 * 1024 for frame in split)
    parts = [json.loads(frame) for frame in split]
    assert {part["type"] for part in parts} == {"chunk"} and [part["i"] for part in parts] == list(range(len(parts)))
    assert json.loads("".join(part["text"] for part in parts)) == message
    assert frames('{"type":"delta"}') == ['{"type":"delta"}']


def _mesh(services, edges):
    """A topology view as the builder gives it, its names and figures varied as a real mesh's are."""
    rng = random.Random(services)
    nodes = [
        {"id": f"team-{i % 9}-svc-{i:04d}", "rps": round(rng.random() * 50, 3), "health": "passing"}
        for i in range(services)
    ]
    links = []
    for n in range(edges):
        source, target = rng.sample(nodes, 2)
        links.append(
            {
                "source": source["id"],
                "target": target["id"],
                "rps": round(rng.random() * 20, 3),
                "p95_ms": round(rng.lognormvariate(3, 0.8), 3),
                "id": f"{source['id']}->{target['id']}/http/{n}",
            }
        )
    return {"window": 300, "until": "2026-12-01T05:00:00Z", "nodes": nodes, "edges": links}


def _read(frames_, receiver=None):
    receiver = receiver or Receiver()
    texts = (receiver.feed(frame) for frame in frames_)
    return [json.loads(text) for text in texts if text is not None]


def test_a_large_message_is_deflated_once_into_binary_parts_under_the_frame_limit_that_read_back():
    view = _mesh(20000, 40000)
    message = {"type": "snapshot", "view": "topology", "window": 300, "seq": 4, "data": view}
    text = encode(message)
    split = frames(text)
    assert all(isinstance(frame, bytes) for frame in split) and len(split) > 1
    assert all(len(frame) <= protocol.CHUNK_BYTES + protocol.BINARY_HEADER.size < 1024 * 1024 for frame in split)
    assert sum(len(frame) for frame in split) < len(text.encode()) / 4
    assert _read(split) == [message]


def test_small_messages_stay_text_and_one_just_above_a_kibibyte_is_deflated():
    small = encode({"type": "delta", "seq": 2, "prev": 1, "changes": {}})
    assert frames(small) == [small]
    upsert = [{"id": f"svc-{i}", "rps": i} for i in range(60)]
    text = encode({"type": "delta", "seq": 2, "prev": 1, "changes": {"nodes": {"upsert": upsert, "remove": []}}})
    assert len(text) > protocol.COMPRESS_ABOVE
    [frame] = frames(text)
    assert isinstance(frame, bytes) and len(frame) < len(text) / 2
    assert Receiver().feed(frame) == text


def test_deflated_and_text_messages_read_back_in_order_and_rebuild_the_state():
    before, after = _mesh(3000, 6000), _mesh(3000, 6000)
    for edge in after["edges"][::100]:
        edge["rps"] += 1.0
    after["nodes"] = after["nodes"][1:]
    changes = diff(before, after)
    messages = [
        {"type": "snapshot", "seq": 1, "data": before},
        {"type": "delta", "seq": 2, "prev": 1, "changes": {}},
        {"type": "delta", "seq": 3, "prev": 2, "changes": changes},
    ]
    wire = [frame for message in messages for frame in frames(encode(message))]
    assert [type(frame) for frame in wire] == [bytes, str, bytes]
    read = _read(wire)
    assert read == messages
    state = read[0]["data"]
    for delta in read[1:]:
        state = apply(state, delta["changes"])
    assert sorted(state["edges"], key=lambda e: e["id"]) == sorted(after["edges"], key=lambda e: e["id"])
    assert state["nodes"] == after["nodes"]


def test_a_part_that_comes_out_of_order_is_refused_so_the_client_resyncs(monkeypatch):
    monkeypatch.setattr(protocol, "CHUNK_BYTES", 4096)
    parts = frames(encode({"type": "snapshot", "seq": 1, "data": _mesh(1000, 2000)}))
    assert len(parts) > 2
    receiver = Receiver()
    assert receiver.feed(parts[0]) is None
    with pytest.raises(IncompleteMessage):
        receiver.feed(parts[2])
    assert _read(parts, receiver)[0]["seq"] == 1, "the next whole message reads again"


def test_a_client_that_reads_text_only_gets_the_same_messages_as_text_chunks():
    message = {"type": "snapshot", "seq": 7, "data": _mesh(5000, 5000)}
    text = encode(message)
    legacy = as_text([*frames(text), *frames('{"type":"pong"}')])
    assert all(isinstance(frame, str) and len(frame.encode()) < 1024 * 1024 for frame in legacy)
    assert [json.loads(frame)["type"] for frame in legacy[:2]] == ["chunk", "chunk"]
    assert _read(legacy) == [message, {"type": "pong"}]


LIVE_JS = Path(__file__).resolve().parents[1] / "static" / "js" / "live.js"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_live_js_reads_the_frames_in_order_and_applies_them_as_the_python_half_does(monkeypatch, tmp_path):
    """live.js's Inbox gets every frame at once, as a socket's events come back to back: the small text
    delta must wait for the deflated snapshot before it, and the state equals protocol.apply's."""
    monkeypatch.setattr(protocol, "CHUNK_BYTES", 16 * 1024)
    before, after = _mesh(2000, 4000), _mesh(2000, 4000)
    for edge in after["edges"][::50]:
        edge["p95_ms"] *= 2
    after["edges"] = after["edges"][:-3]
    messages = [
        {"type": "snapshot", "seq": 1, "data": before},
        {"type": "delta", "seq": 2, "prev": 1, "changes": {"until": {"set": "later"}}},
        {"type": "delta", "seq": 3, "prev": 2, "changes": diff(before, after)},
    ]
    wire = [frame for message in messages for frame in frames(encode(message))]
    assert isinstance(wire[0], bytes) and len(wire) > 3 and isinstance(wire[-1], bytes)
    encoded = [frame if isinstance(frame, str) else {"binary": base64.b64encode(frame).decode()} for frame in wire]
    (tmp_path / "frames.json").write_text(json.dumps(encoded))
    script = f"""
        import {{ Inbox, applyChanges }} from {json.dumps(LIVE_JS.as_uri())};
        import {{ readFileSync }} from "node:fs";
        const frames = JSON.parse(readFileSync({json.dumps(str(tmp_path / "frames.json"))}, "utf8"));
        const seqs = [];
        let state = null;
        const inbox = new Inbox((text) => {{
          const message = JSON.parse(text);
          seqs.push(message.seq);
          state = message.type === "snapshot" ? message.data : applyChanges(state, message.changes);
          if (seqs.length === 3) console.log(JSON.stringify({{ seqs, state }}));
        }}, () => console.log("lost"));
        for (const frame of frames) {{
          if (typeof frame === "string") inbox.push(frame);
          else inbox.push(new Uint8Array(Buffer.from(frame.binary, "base64")).buffer);
        }}
    """
    result = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    read = json.loads(result.stdout)
    assert read["seqs"] == [1, 2, 3]
    expected = apply(apply(before, messages[1]["changes"]), messages[2]["changes"])
    assert read["state"] == expected
