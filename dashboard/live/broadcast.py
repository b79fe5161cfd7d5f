"""Computing the live views and pushing their deltas, coalesced across every process through Redis.

* ``mark_changed`` is subscribed to ``topology.changes.views_changed``: after a write commits, in
  whatever process wrote, it marks the views dirty (``SET dirty``, one pipelined round trip). That is
  all a collector pays; it never computes a view.
* The ``Broadcaster`` (``manage.py broadcast``, the live layer's own process; several may run) looks at
  the marks every TICK_SECONDS. A dirty view whose slot is free takes the slot (``SET slot NX PX``,
  COALESCE_MS) and consumes the mark (``GETDEL``), then is computed once per watched window, diffed
  against the state stored in Redis, stored with the next sequence number, and its delta sent, already
  encoded as JSON text, to everyone watching. Consumers forward the text without recomputing it.

So a burst of announcements from any number of processes gives one broadcast now and at most one per
interval after it, and the last change of a burst is never lost: its mark waits for the next slot.

The topology, routes and balancer views are kept incrementally (``topology.live_topology``,
``live_routes``, ``live_balancers``): writers name the rows they changed, ``mark_changed`` adds them to
the view's set of changed rows, and the broadcaster updates the records of those rows alone. The lag
view is computed whole and diffed. Either way the state is stored in Redis record by record (a hash per
keyed list), so a broadcast writes what changed, not the view. A stored state is known by its version,
(seq, when stored): a process that finds another version than the one it stored last (another
broadcaster, or a web process that computed a first snapshot) reads its view afresh and diffs it
against the stored state, never sends changes on top of a state it did not make.

Views with a builder (``topology``, ``routes``, ``balancers``, ``lag``) get snapshot + seq-numbered
deltas. ``services``, which no page watches live, gets an ``invalidate`` message with a sequence number,
for a page to refetch its REST endpoint.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from dashboard.live.builders import BUILDERS
from dashboard.live.protocol import diff, encode, frames, plain
from topology.changes import BALANCERS, LAG, ROUTES, SERVICES, TOPOLOGY, VIEWS, ChangedRows
from topology.live_balancers import LiveBalancers
from topology.live_routes import LiveRoutes
from topology.live_topology import LiveTopology
from topology.record_changes import RecordChanges
from topology.window import LIVE_WINDOW_SECONDS, Window

log = logging.getLogger(__name__)

# At most one broadcast per interval and view. The balancer statistics over minutes of traffic, and the
# lag sampled every 5 s, gain nothing from a second's freshness, and after the topology they cost the
# most to compute (150 ms and 60 ms for 1,000 services).
COALESCE_MS = {TOPOLOGY: 1000, ROUTES: 1000, SERVICES: 1000, BALANCERS: 5000, LAG: 5000}
# How often a broadcaster looks at the marks: the most a change waits before its computation starts.
TICK_SECONDS = 0.05
DIRTY_TTL_SECONDS = 60
WATCH_TTL_SECONDS = 120
STATE_TTL_SECONDS = 24 * 3600
COMPUTE_LOCK_MS = 15000
# A view nobody announced for this long is recomputed on a client's ping: its window still slides.
SLIDE_REFRESH_SECONDS = 30.0
# A new client's stored snapshot older than this is followed by a fresh computation's delta.
SNAPSHOT_MAX_AGE_SECONDS = 5.0
# While Redis does not answer, marks are dropped for this long at a time: a collector must not wait
# for a connect timeout on every batch. The pages resync when it is back.
REDIS_DOWN_BACKOFF_SECONDS = 5.0


class Keeper(Protocol):
    """A view kept from the rows that changed (``topology.live_topology``, ``live_routes``, ``live_balancers``)."""

    @property
    def lists(self) -> tuple[str, ...]: ...
    @property
    def windows(self) -> tuple[int, ...]: ...
    @property
    def built(self) -> bool: ...

    def rebuild(self, now: datetime) -> dict[int, RecordChanges]: ...
    def update(self, now: datetime, changed: ChangedRows) -> dict[int, RecordChanges]: ...
    def header(self, seconds: int, now: datetime) -> dict[str, Any]: ...
    def view(self, seconds: int, now: datetime) -> dict[str, Any]: ...


# The views kept from the rows that changed, and the members of their sets of changed rows.
KEEPERS: dict[str, Callable[[tuple[int, ...]], Keeper]] = {
    TOPOLOGY: LiveTopology,
    ROUTES: LiveRoutes,
    BALANCERS: LiveBalancers,
}
INCREMENTAL_VIEWS = tuple(KEEPERS)
ROW_PREFIXES = {"edge_rollups": "e", "instance_rollups": "i", "route_rollups": "r", "services": "s"}
# The rows each kept view reads; the others are not marked for it.
VIEW_ROWS = {
    TOPOLOGY: ("edge_rollups", "instance_rollups", "services"),
    ROUTES: ("route_rollups", "services"),
    BALANCERS: ("instance_rollups", "services"),
}
# An incremental view is read afresh this often whatever happens: a change whose mark was lost (a
# writer killed between its commit and its mark) shows at the latest then. At 5,000 services and
# 25,000 edges a rebuild of the 5-minute window takes 1.7 s, a whole reading of the view 1.4 s.
REBUILD_SECONDS = 600.0


# --- Redis ------------------------------------------------------------------------------------

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def _layer_config() -> tuple[str, str]:
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    hosts = config.get("hosts") or [settings.REDIS_URL]
    host = hosts[0]
    if isinstance(host, dict):
        host = host.get("address", settings.REDIS_URL)
    return host, config.get("prefix", "asgi")


def redis_client() -> redis.Redis:
    url, _prefix = _layer_config()
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=1)
            _clients[url] = client
        return client


def key(*parts: object) -> str:
    """A live-layer key in Redis, under the channel layer's prefix."""
    _url, prefix = _layer_config()
    return ":".join([prefix, "live", *[str(p) for p in parts]])


def group_name(view: str, window: int | None = None) -> str:
    """The channel-layer group of a view (and window, for views with snapshots)."""
    if view in BUILDERS:
        return f"live.{view}.{int(window or LIVE_WINDOW_SECONDS[0])}"
    return f"live.{view}"


# --- marking (in the writer's process) ----------------------------------------------------------


class _RedisBackoff:
    """Until when marks are dropped because Redis did not answer."""

    until = 0.0


def mark_changed(sender: object, views: frozenset[str], rows: ChangedRows | None = None, **kwargs: Any) -> None:
    """Receives ``views_changed``: marks the views dirty for a broadcaster, and adds the changed rows to
    the sets of the incremental views (or asks them to read afresh). Cheap; never raises."""
    if time.monotonic() < _RedisBackoff.until:
        return
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for view in views:
            if view in INCREMENTAL_VIEWS:
                if rows is None or _RedisBackoff.until:
                    # Unnamed rows, or marks dropped while Redis was away: read the view afresh.
                    pipeline.set(key("full", view), "1", ex=STATE_TTL_SECONDS)
                elif members := [f"{ROW_PREFIXES[name]}{pk}" for name in VIEW_ROWS[view] for pk in getattr(rows, name)]:
                    pipeline.sadd(key("changed", view), *members)
                    pipeline.expire(key("changed", view), STATE_TTL_SECONDS)
            pipeline.set(key("dirty", view), "1", ex=DIRTY_TTL_SECONDS)
        pipeline.execute()
        _RedisBackoff.until = 0.0
    except redis.RedisError as error:
        _RedisBackoff.until = time.monotonic() + REDIS_DOWN_BACKOFF_SECONDS
        log.warning(
            "Marking %s changed failed, live updates paused for %.0f s: %s",
            sorted(views),
            REDIS_DOWN_BACKOFF_SECONDS,
            error,
        )


def _mark_dirty(view: str) -> None:
    """Asks the broadcaster to recompute ``view`` (a web process whose window slid, or a computation
    another process held the lock for); it raises, as the caller's own Redis calls do."""
    redis_client().set(key("dirty", view), "1", ex=DIRTY_TTL_SECONDS)


# --- computing and sending (in the broadcaster's process) ---------------------------------------


def _event(message: dict[str, Any]) -> dict[str, Any]:
    """The channel-layer event of a broadcast: encoded (and split) once, forwarded as is by every consumer."""
    return {"type": "live.message", "frames": frames(encode(message))}


def _send(group: str, message: dict[str, Any]) -> None:
    async_to_sync(get_channel_layer().group_send)(group, _event(message))


def computed(view: str, seconds: int) -> dict[str, Any]:
    """The view as its builder gives it now, stamped with when, as JSON carries it."""
    return plain({"generated_at": datetime.now(UTC), **BUILDERS[view](Window.live(seconds))})


def watch(view: str, seconds: int) -> None:
    """Someone is watching ``view`` in ``seconds``, so broadcasts compute it (consumers call this)."""
    if view in BUILDERS:
        redis_client().set(key("watch", view, seconds), "1", ex=WATCH_TTL_SECONDS)


def watched_windows(view: str) -> list[int]:
    """The windows someone watches (consumers refresh the mark on connect and every ping). With no
    watcher nothing is computed: the next client starts from the stored state and a refresh."""
    client = redis_client()
    return [seconds for seconds in LIVE_WINDOW_SECONDS if client.exists(key("watch", view, seconds))]


# --- the stored state ------------------------------------------------------------------------------
#
# A view's state in Redis: ``state:<view>:<window>`` holds {"seq", "stored_at", "fields", "lists"}, the
# fields that are not lists of records with ids; each list of records is a hash ``state:<view>:<window>:
# <list>`` of record id -> record JSON. A broadcast writes the records that changed, in one MULTI with
# the new sequence number; a new client's snapshot reads them all in one MULTI.

# A stored state's (seq, stored_at): the seq alone starts again at 1 when a state expires.
Version = tuple[int, float]


def _record_lists(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The lists of ``data`` whose records all have an id (stored record by record)."""
    return {
        name: value
        for name, value in data.items()
        if isinstance(value, list) and all(isinstance(record, dict) and "id" in record for record in value)
    }


def _load_meta(view: str, seconds: int) -> dict[str, Any] | None:
    raw = redis_client().get(key("state", view, seconds))
    return json.loads(raw) if raw else None


def _version(meta: dict[str, Any] | None) -> Version | None:
    return (meta["seq"], meta["stored_at"]) if meta else None


def _load_raw(view: str, seconds: int) -> tuple[dict[str, Any], dict[str, list[bytes]]] | None:
    """The stored state as (meta, {list: [record JSON, in id order]}), read in one MULTI, or None."""
    client = redis_client()
    meta_key = key("state", view, seconds)
    for _ in range(5):
        raw = client.get(meta_key)
        if not raw:
            return None
        meta = json.loads(raw)
        pipeline = client.pipeline(transaction=True)
        pipeline.get(meta_key)
        for name in meta["lists"]:
            pipeline.hgetall(key("state", view, seconds, name))
        again, *lists = pipeline.execute()
        if again == raw:
            return meta, {name: [records[i] for i in sorted(records)] for name, records in zip(meta["lists"], lists)}
        # Stored again between the two reads: read once more.
    return None


def _load_state(view: str, seconds: int) -> dict[str, Any] | None:
    """{"seq", "stored_at", "data"} as stored, or None."""
    loaded = _load_raw(view, seconds)
    if loaded is None:
        return None
    meta, lists = loaded
    data = dict(meta["fields"])
    for name, records in lists.items():
        data[name] = [json.loads(record) for record in records]
    return {"seq": meta["seq"], "stored_at": meta["stored_at"], "data": data}


def _save_state(
    view: str,
    seconds: int,
    seq: int,
    fields: dict[str, Any],
    lists: dict[str, list[dict[str, Any]] | dict[str, Any]],
) -> Version:
    """Stores sequence ``seq``: ``fields`` whole, and each record list either whole (a list of records)
    or by its change (``{"upsert": [...], "remove": [...]}`` against the stored state), in one MULTI.
    Returns the stored state's version."""
    stored_at = time.time()
    meta = {"seq": seq, "stored_at": stored_at, "fields": fields, "lists": sorted(lists)}
    pipeline = redis_client().pipeline(transaction=True)
    pipeline.set(key("state", view, seconds), encode(meta), ex=STATE_TTL_SECONDS)
    for name, records in lists.items():
        hash_key = key("state", view, seconds, name)
        if isinstance(records, list):
            pipeline.delete(hash_key)
            upserts, removes = records, []
        else:
            upserts, removes = records["upsert"], records["remove"]
        if upserts:
            pipeline.hset(hash_key, mapping={str(record["id"]): encode(record) for record in upserts})
        if removes:
            pipeline.hdel(hash_key, *[str(record_id) for record_id in removes])
        pipeline.expire(hash_key, STATE_TTL_SECONDS)
    pipeline.execute()
    return (seq, stored_at)


def _save_diffed(
    view: str, seconds: int, seq: int, data: dict[str, Any], changes: dict[str, Any], stored: list[str]
) -> Version:
    """Stores ``data``, which ``changes`` turns the stored state (whose record lists are ``stored``) into."""
    lists: dict[str, list[dict[str, Any]] | dict[str, Any]] = {}
    for name, records in _record_lists(data).items():
        change = changes.get(name)
        if name not in stored or (change is not None and "upsert" not in change):
            lists[name] = records
        else:
            lists[name] = change or {"upsert": [], "remove": []}
    fields = {name: value for name, value in data.items() if name not in lists}
    return _save_state(view, seconds, seq, fields, lists)


def _delta(
    view: str, seconds: int, seq: int, prev: int, data: dict[str, Any], changes: dict[str, Any], ms: float
) -> dict[str, Any]:
    redis_client().set(key("timing", view, seconds), encode({"ms": ms, "at": time.time()}), ex=STATE_TTL_SECONDS)
    return {
        "type": "delta",
        "view": view,
        "window": seconds,
        "seq": seq,
        "prev": prev,
        "generated_at": data["generated_at"],
        "compute_ms": round(ms, 1),
        "sent_at": time.time(),
        "changes": changes,
    }


# --- computing a whole view and diffing it -----------------------------------------------------------

# What this process stored last, per (view, window): (version, data). Diffing against it spares reading
# the state back from Redis, as long as no other process stored another since.
_held: dict[tuple[str, int], tuple[Version, dict[str, Any]]] = {}


def refresh_state(view: str, seconds: int) -> dict[str, Any] | None:
    """Recomputes the view, stores it with the next sequence number and returns the delta message
    (None when another process is computing it right now: the view stays marked, for the next slot)."""
    if view in INCREMENTAL_VIEWS:
        return _refresh_incremental(view, (seconds,)).get(seconds)
    return _refresh_whole(view, seconds)


def _refresh_whole(view: str, seconds: int) -> dict[str, Any] | None:
    """``refresh_state`` by computing the whole view and diffing it against the stored state. A kept
    view's first snapshot is computed so in a web process, under the lock its broadcaster takes."""
    client = redis_client()
    lock = key("compute", view) if view in INCREMENTAL_VIEWS else key("compute", view, seconds)
    token = str(time.monotonic_ns())
    if not client.set(lock, token, nx=True, px=COMPUTE_LOCK_MS):
        _mark_dirty(view)
        return None
    try:
        started = time.perf_counter()
        data = computed(view, seconds)
        meta = _load_meta(view, seconds)
        stored_seq = meta["seq"] if meta else 0
        held = _held.get((view, seconds))
        if held is not None and held[0] == _version(meta):
            before = held[1]
        else:
            stored = _load_state(view, seconds)
            before = stored["data"] if stored else {}
        changes = diff(before, data)
        seq = stored_seq + 1
        version = _save_diffed(view, seconds, seq, data, changes, meta["lists"] if meta else [])
        _held[(view, seconds)] = (version, data)
        return _delta(view, seconds, seq, stored_seq, data, changes, (time.perf_counter() - started) * 1000)
    finally:
        if client.get(lock) == token.encode():
            client.delete(lock)


# --- keeping a view incrementally ------------------------------------------------------------------


class _Kept:
    """An incremental view held by this process: its keeper, the version it stored last per window, the
    fields apart from records it sent last, and when it was last read afresh."""

    def __init__(self, view: str, windows: tuple[int, ...]) -> None:
        self.keeper = KEEPERS[view](windows)
        self.versions: dict[int, Version] = {}
        self.fields: dict[int, dict[str, Any]] = {}
        self.rebuilt_at = 0.0


_kept: dict[str, _Kept] = {}


def forget() -> None:
    """Drops the views this process keeps (tests, whose databases change under it)."""
    _kept.clear()
    _held.clear()


def _forget_changed_rows(view: str) -> None:
    pipeline = redis_client().pipeline(transaction=True)
    pipeline.delete(key("changed", view))
    pipeline.set(key("full", view), "1", ex=STATE_TTL_SECONDS)
    pipeline.execute()


def _take_changed_rows(view: str) -> ChangedRows | None:
    """The rows writers marked changed since the last take; None when the view must be read afresh."""
    pipeline = redis_client().pipeline(transaction=True)
    pipeline.smembers(key("changed", view))
    pipeline.delete(key("changed", view))
    pipeline.getdel(key("full", view))
    members, _deleted, full = pipeline.execute()
    if full:
        return None
    ids: dict[str, set[int]] = {prefix: set() for prefix in ROW_PREFIXES.values()}
    for member in members:
        text = member.decode()
        ids[text[0]].add(int(text[1:]))
    return ChangedRows(**{name: frozenset(ids[prefix]) for name, prefix in ROW_PREFIXES.items()})


def _refresh_incremental(view: str, windows: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    """Updates the view from the rows that changed (or afresh) and stores and returns each window's delta."""
    client = redis_client()
    lock = key("compute", view)
    token = str(time.monotonic_ns())
    if not client.set(lock, token, nx=True, px=COMPUTE_LOCK_MS):
        _mark_dirty(view)
        return {}
    try:
        started = time.perf_counter()
        # Taken under the lock and before any read: a rebuild reads what they name, too.
        rows = _take_changed_rows(view)
        kept = _kept.get(view)
        if kept is None or not set(windows) <= set(kept.keeper.windows):
            kept = _kept[view] = _Kept(view, tuple(sorted(set(windows) | set(kept.keeper.windows if kept else ()))))
        now = timezone.now()
        metas = {seconds: _load_meta(view, seconds) for seconds in windows}
        # A state this process did not store last (none, after Redis lost it; another broadcaster's; a
        # web process's first snapshot): the rows it saw are not all the rows that changed, read afresh.
        foreign = any(kept.versions.get(seconds) != _version(meta) for seconds, meta in metas.items())
        if foreign or rows is None or not kept.keeper.built or time.monotonic() - kept.rebuilt_at > REBUILD_SECONDS:
            record_changes = kept.keeper.rebuild(now)
            kept.rebuilt_at = time.monotonic()
        else:
            record_changes = kept.keeper.update(now, rows)
        messages = {}
        for seconds in windows:
            messages[seconds] = _store_incremental(
                view, seconds, kept, record_changes[seconds], metas[seconds], now, started
            )
        # A window kept but not watched is not stored: its next store diffs against what is.
        for seconds in set(kept.keeper.windows) - set(windows):
            kept.versions.pop(seconds, None)
        return messages
    except Exception:
        _kept.pop(view, None)  # half applied: read afresh next time
        raise
    finally:
        if client.get(lock) == token.encode():
            client.delete(lock)


def _store_incremental(
    view: str,
    seconds: int,
    kept: _Kept,
    record_changes: RecordChanges,
    meta: dict[str, Any] | None,
    now: datetime,
    started: float,
) -> dict[str, Any]:
    """Stores one window's update and returns its delta: the records that changed, when this process
    stored the state last; else the whole view diffed against the stored state."""
    keeper = kept.keeper
    fields = plain({"generated_at": now, **keeper.header(seconds, now)})
    stored_seq = meta["seq"] if meta else 0
    seq = stored_seq + 1
    if meta is not None and kept.versions.get(seconds) == _version(meta):
        changes: dict[str, Any] = {
            name: {"set": value}
            for name, value in fields.items()
            if name != "generated_at" and kept.fields[seconds].get(name) != value
        }
        lists: dict[str, list[dict[str, Any]] | dict[str, Any]] = {}
        for name in kept.keeper.lists:
            change = {"upsert": plain(record_changes.upsert[name]), "remove": record_changes.remove[name]}
            lists[name] = change
            if change["upsert"] or change["remove"]:
                changes[name] = change
        version = _save_state(view, seconds, seq, fields, lists)
    else:
        data = plain(keeper.view(seconds, now))
        stored = _load_state(view, seconds)
        changes = diff(stored["data"] if stored else {}, data)
        version = _save_diffed(view, seconds, seq, data, changes, meta["lists"] if meta else [])
    kept.versions[seconds] = version
    kept.fields[seconds] = fields
    return _delta(view, seconds, seq, stored_seq, fields, changes, (time.perf_counter() - started) * 1000)


def refresh_and_send(view: str, seconds: int) -> dict[str, Any] | None:
    message = refresh_state(view, seconds)
    # Sent even when nothing changed: it took a sequence number, and a client that missed it would
    # see a gap and ask for the whole view again.
    if message is not None:
        _send(group_name(view, seconds), message)
    return message


def broadcast(view: str) -> list[dict[str, Any]]:
    """Computes the view once per watched window and sends every watcher the delta. Returns the messages."""
    if view not in BUILDERS:
        seq = redis_client().incr(key("seq", view))
        message = {"type": "invalidate", "view": view, "seq": seq, "sent_at": time.time()}
        _send(group_name(view), message)
        return [message]
    windows = watched_windows(view)
    if view in INCREMENTAL_VIEWS:
        if not windows:
            # Nobody to update: the rows marked meanwhile are not kept, the next watcher's view is read afresh.
            _forget_changed_rows(view)
            return []
        messages = _refresh_incremental(view, tuple(windows))
        for seconds, message in messages.items():
            _send(group_name(view, seconds), message)
        return list(messages.values())
    sent = (refresh_and_send(view, seconds) for seconds in windows)
    return [message for message in sent if message is not None]


class Broadcaster:
    """The live layer's loop: computes and sends the views that writers marked, coalesced (module doc)."""

    def __init__(self, tick_seconds: float = TICK_SECONDS) -> None:
        self.tick_seconds = tick_seconds

    def tick(self) -> list[dict[str, Any]]:
        """One look at the marks: broadcasts every dirty view whose slot is free. Returns the messages."""
        client = redis_client()
        pipeline = client.pipeline(transaction=False)
        for view in VIEWS:
            pipeline.exists(key("dirty", view))
            pipeline.exists(key("slot", view))
        flags = pipeline.execute()
        sent: list[dict[str, Any]] = []
        for index, view in enumerate(VIEWS):
            dirty, slot_taken = flags[2 * index], flags[2 * index + 1]
            if not dirty or slot_taken:
                continue
            if client.set(key("slot", view), "1", nx=True, px=COALESCE_MS[view]) and client.getdel(key("dirty", view)):
                sent.extend(broadcast(view))
        return sent

    def run(self, stop: threading.Event) -> None:
        """Ticks until ``stop`` is set. A Redis or database outage is logged and waited out."""
        while not stop.is_set():
            close_old_connections()
            try:
                self.tick()
            except Exception as error:  # the loop outlives any outage; the next tick tries again
                log.warning("Live broadcast failed; retrying: %s", error, exc_info=True)
                stop.wait(1.0)
            stop.wait(self.tick_seconds)


def last_computations() -> list[tuple[str, int, float, float]]:
    """(view, window, milliseconds, when) of each view's latest computation, for /metrics; one round trip."""
    pairs = [(view, seconds) for view in BUILDERS for seconds in LIVE_WINDOW_SECONDS]
    answers = redis_client().mget([key("timing", view, seconds) for view, seconds in pairs])
    timings = [(pair, json.loads(raw)) for pair, raw in zip(pairs, answers) if raw]
    return [(view, seconds, timing["ms"], timing["at"]) for (view, seconds), timing in timings]


# --- what consumers ask for (in the web process) ------------------------------------------------


def refresh_if_stale(view: str, seconds: int) -> None:
    """On a client's ping: when nothing was announced for a while the window still slides, so the view
    is marked for the broadcaster to recompute and broadcast its delta."""
    if view not in BUILDERS:
        return
    stored = _load_meta(view, seconds)
    if stored is None or time.time() - stored.get("stored_at", 0) > SLIDE_REFRESH_SECONDS:
        _mark_dirty(view)


@dataclass(frozen=True)
class Snapshot:
    """A new client's first message as JSON text, and which stored state it is (seq 0: none stored)."""

    text: str
    seq: int
    stored_at: float


def snapshot(view: str, seconds: int) -> Snapshot:
    """The message a new client starts from: ``{"type": "snapshot", ...}``, as JSON text.

    The stored state is sent at once, its records joined as stored, never decoded (at 5,000 services
    and 25,000 edges: 7 MB in about 150 ms; decoding and encoding them took twice that); when it is
    older than SNAPSHOT_MAX_AGE_SECONDS the view is marked, and the broadcaster's delta follows, which
    this client receives too. Without a stored state the whole view is computed here."""
    if view not in BUILDERS:
        seq = int(redis_client().get(key("seq", view)) or 0)
        return Snapshot(encode({"type": "invalidate", "view": view, "seq": seq}), seq, 0.0)
    loaded = _load_raw(view, seconds)
    if loaded is not None:
        if time.time() - loaded[0]["stored_at"] > SNAPSHOT_MAX_AGE_SECONDS:
            _mark_dirty(view)
    else:
        message = _refresh_whole(view, seconds)
        if message is not None:
            _send(group_name(view, seconds), message)
        for _ in range(50):
            loaded = _load_raw(view, seconds)
            if loaded is not None:
                break
            time.sleep(0.1)  # another process holds the compute lock: wait for it briefly
        else:
            data = computed(view, seconds)
            return Snapshot(
                encode({"type": "snapshot", "view": view, "window": seconds, "seq": 0, "data": data}), 0, 0.0
            )
    meta, lists = loaded
    parts = [encode(meta["fields"])[1:-1]] if meta["fields"] else []
    for name, records in lists.items():
        parts.append(f"{encode(name)}:[{b','.join(records).decode()}]")
    head = encode({"type": "snapshot", "view": view, "window": seconds, "seq": meta["seq"]})[:-1]
    return Snapshot(f'{head},"data":{{{",".join(parts)}}}}}', meta["seq"], meta["stored_at"])
