"""The delta protocol's pure half: what changed between two states, applying it, and the frames that
carry a message. No Redis, no database: unit tested on its own (static/js/live.js mirrors ``apply`` and
``Receiver``).

Frames. A message of at most COMPRESS_ABOVE characters is one text frame of JSON. A larger one is
deflated (zlib format, which the browser's ``DecompressionStream("deflate")`` reads) once, where it is
encoded, and sent as binary frames of at most CHUNK_BYTES, each behind an 8-byte header (message id,
part index, part count; network byte order). Measured on the topology of 5,000 services and 25,000
edges (``benchmarks.topology_ui``'s seed), deflate level 6:

* snapshot: 7,263,070 B of JSON (8.1 MiB as today's escaped text chunks), 647,396 B deflated (11.2x,
  53-135 ms once); with the compact encoding below, 3,928,327 B and 580,314 B deflated;
* delta of 1 % of the edges (250 edges): 62,705 B of JSON, 7,562 B deflated (8.3x, 0.5 ms); compact,
  34,589 B and 6,851 B deflated.

The compact encoding (a keyed list as ``{"columns": [...], "rows": [[...]]}``) halves the JSON but only
takes 9-10 % more off once deflated, since deflate already sends each repeated key as a back-reference;
it would cost a second representation that every client, ``apply`` and its mirror must know, and 25 ms
on the server to build for a snapshot. It is not used. Below 1 KiB deflate gains little (a delta of
one edge: 438 B to 291 B) and the text frame spares the browser an asynchronous decompression.

Daphne cannot negotiate permessage-deflate: it never sets autobahn's ``perMessageCompressionAccept``,
whose default declines every offer, and ignores the headers of ``websocket.accept`` (daphne#236,
daphne#326; PR daphne#331 is not merged). That extension would also deflate each message once per
client, where these frames are deflated once for all of them.
"""

import itertools
import json
import struct
import zlib
from collections.abc import Iterable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

# Changes on every computation; sent as the delta's own field.
IGNORED_KEYS = {"generated_at"}
# Escaped and UTF-8 encoded, a text chunk frame stays well under daphne's 1 MiB frame limit.
CHUNK_CHARS = 128 * 1024
# Messages longer than this (characters) are deflated into binary frames of at most CHUNK_BYTES plus
# the header; a binary chunk needs no escaping, so it can be larger than a text one.
COMPRESS_ABOVE = 1024
CHUNK_BYTES = 512 * 1024
COMPRESS_LEVEL = 6
# A binary frame's header: the message's id, the part's index, the number of parts.
BINARY_HEADER = struct.Struct("!IHH")
_message_ids = itertools.count(1)

Frame = str | bytes


def _record_key(record: Any) -> str | None:
    if isinstance(record, dict):
        if "id" in record:
            return str(record["id"])
        if "name" in record:
            return str(record["name"])
    return None


def _is_keyed_list(value: Any) -> bool:
    return isinstance(value, list) and all(_record_key(item) is not None for item in value)


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The changes that turn ``old`` into ``new``: only what differs, by record for keyed lists."""
    changes: dict[str, Any] = {}
    old = old or {}
    for key, value in new.items():
        if key in IGNORED_KEYS:
            continue
        before = old.get(key)
        if before == value:
            continue
        if _is_keyed_list(value) and _is_keyed_list(before if before is not None else []):
            before_map = {_record_key(item): item for item in (before or [])}
            new_map = {_record_key(item): item for item in value}
            upsert = [item for k, item in new_map.items() if before_map.get(k) != item]
            remove = [k for k in before_map if k not in new_map]
            if upsert or remove:
                changes[key] = {"upsert": upsert, "remove": remove}
        else:
            changes[key] = {"set": value}
    for key in old:
        if key not in new and key not in IGNORED_KEYS:
            changes[key] = {"set": None}
    return changes


def apply(state: dict[str, Any] | None, changes: dict[str, Any]) -> dict[str, Any]:
    """Applies ``changes`` from :func:`diff` to ``state`` (a copy is returned). Mirrors static/js/live.js."""
    state = dict(state or {})
    for key, change in changes.items():
        if "set" in change:
            if change["set"] is None:
                state.pop(key, None)
            else:
                state[key] = change["set"]
            continue
        records = {_record_key(item): item for item in state.get(key) or []}
        for k in change.get("remove", []):
            records.pop(k, None)
        for item in change.get("upsert", []):
            records[_record_key(item)] = item
        state[key] = list(records.values())
    return state


def encode(message: Any) -> str:
    return json.dumps(message, cls=DjangoJSONEncoder, separators=(",", ":"))


def plain(data: Any) -> Any:
    """The view as JSON would carry it (datetimes as strings), so stored and fresh states compare."""
    return json.loads(encode(data))


def frames(text: str, compressed: bool = True) -> list[Frame]:
    """The websocket frames that carry ``text``: itself when small; else, ``compressed``, its deflated
    UTF-8 in binary parts (module doc), or, for a client that did not ask for that, ``chunk`` messages
    it joins. Called once per message where it is encoded, never once per client."""
    if len(text) <= COMPRESS_ABOVE:
        return [text]
    message_id = next(_message_ids) & 0xFFFFFFFF
    if compressed:
        deflated = zlib.compress(text.encode(), COMPRESS_LEVEL)
        parts = [deflated[i : i + CHUNK_BYTES] for i in range(0, len(deflated), CHUNK_BYTES)]
        return [BINARY_HEADER.pack(message_id, i, len(parts)) + part for i, part in enumerate(parts)]
    if len(text) <= CHUNK_CHARS:
        return [text]
    pieces = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
    chunk_id = f"{message_id:x}"
    return [
        json.dumps(
            {"type": "chunk", "id": chunk_id, "i": i, "n": len(pieces), "text": piece},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        for i, piece in enumerate(pieces)
    ]


class IncompleteMessage(ValueError):
    """A message's parts did not all arrive, in order: the client resyncs (live.js does the same)."""


class Receiver:
    """The client's half of :func:`frames`: feeds frames in order, gives back each whole message's JSON
    text. static/js/live.js does the same; Python clients (the benchmark, the tests, a consumer
    serving a client that takes text only) use this."""

    def __init__(self) -> None:
        self._id: object = None
        self._parts: list[Any] = []

    def feed(self, frame: Frame) -> str | None:
        """The text of the message ``frame`` completes, or None while parts are missing."""
        if isinstance(frame, bytes):
            message_id, index, count = BINARY_HEADER.unpack_from(frame)
            whole = self._join(message_id, index, count, frame[BINARY_HEADER.size :])
            return None if whole is None else zlib.decompress(b"".join(whole)).decode()
        if not frame.startswith('{"type":"chunk"'):
            return frame
        chunk = json.loads(frame)
        whole = self._join(chunk["id"], chunk["i"], chunk["n"], chunk["text"])
        return None if whole is None else "".join(whole)

    def _join(self, message_id: object, index: int, count: int, part: Any) -> list[Any] | None:
        if index == 0:
            self._id, self._parts = message_id, []
        if message_id != self._id or index != len(self._parts):
            self._id, self._parts = None, []
            raise IncompleteMessage(f"part {index} of message {message_id} came out of order")
        self._parts.append(part)
        if index < count - 1:
            return None
        whole, self._id, self._parts = self._parts, None, []
        return whole


def as_text(frames_: Iterable[Frame]) -> list[Frame]:
    """The same messages as text frames, for a client that takes no binary frames: inflated and split
    again, once per such client (the browser takes the binary frames as they are)."""
    receiver = Receiver()
    texts = (receiver.feed(frame) for frame in frames_)
    return [out for text in texts if text is not None for out in frames(text, compressed=False)]
