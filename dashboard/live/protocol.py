"""The delta protocol's pure half: what changed between two states, applying it, and the frames that
carry a message. No Redis, no database: unit tested on its own (static/js/live.js mirrors ``apply``)."""

import json
import time
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

# Changes on every computation; sent as the delta's own field.
IGNORED_KEYS = {"generated_at"}
# Escaped and UTF-8 encoded, a chunk frame stays well under daphne's 1 MiB frame limit.
CHUNK_CHARS = 128 * 1024


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


def frames(text: str) -> list[str]:
    """The websocket frames that carry ``text``: itself, or ``chunk`` messages the client joins."""
    if len(text) <= CHUNK_CHARS:
        return [text]
    parts = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
    chunk_id = f"{time.time_ns():x}"
    return [
        json.dumps({"type": "chunk", "id": chunk_id, "i": i, "n": len(parts), "text": part}, ensure_ascii=False)
        for i, part in enumerate(parts)
    ]
