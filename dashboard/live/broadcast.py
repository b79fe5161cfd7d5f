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

Views with a builder (``topology``, ``routes``, ``balancers``, ``lag``) get snapshot + seq-numbered
deltas. ``services``, which no page watches live, gets an ``invalidate`` message with a sequence number,
for a page to refetch its REST endpoint.
"""

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections

from dashboard.live.builders import BUILDERS
from dashboard.live.protocol import diff, encode, frames, plain
from topology.changes import BALANCERS, LAG, ROUTES, SERVICES, TOPOLOGY, VIEWS
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


def mark_changed(sender: object, views: frozenset[str], **kwargs: Any) -> None:
    """Receives ``views_changed``: marks the views dirty for a broadcaster. Cheap; never raises."""
    if time.monotonic() < _RedisBackoff.until:
        return
    try:
        pipeline = redis_client().pipeline(transaction=False)
        for view in views:
            pipeline.set(key("dirty", view), "1", ex=DIRTY_TTL_SECONDS)
        pipeline.execute()
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


def _load_state(view: str, seconds: int) -> dict[str, Any] | None:
    raw = redis_client().get(key("state", view, seconds))
    return json.loads(raw) if raw else None


def refresh_state(view: str, seconds: int) -> dict[str, Any] | None:
    """Recomputes the view, stores it with the next sequence number and returns the delta message
    (None when another process is computing it right now: the view stays marked, for the next slot)."""
    client = redis_client()
    lock = key("compute", view, seconds)
    token = str(time.monotonic_ns())
    if not client.set(lock, token, nx=True, px=COMPUTE_LOCK_MS):
        _mark_dirty(view)
        return None
    try:
        started = time.perf_counter()
        data = computed(view, seconds)
        compute_ms = (time.perf_counter() - started) * 1000
        stored = _load_state(view, seconds) or {"seq": 0, "data": {}}
        changes = diff(stored["data"], data)
        seq = stored["seq"] + 1
        client.set(
            key("state", view, seconds),
            encode({"seq": seq, "data": data, "stored_at": time.time()}),
            ex=STATE_TTL_SECONDS,
        )
        client.set(key("timing", view, seconds), encode({"ms": compute_ms, "at": time.time()}), ex=STATE_TTL_SECONDS)
        return {
            "type": "delta",
            "view": view,
            "window": seconds,
            "seq": seq,
            "prev": stored["seq"],
            "generated_at": data["generated_at"],
            "compute_ms": round(compute_ms, 1),
            "sent_at": time.time(),
            "changes": changes,
        }
    finally:
        if client.get(lock) == token.encode():
            client.delete(lock)


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
    sent = (refresh_and_send(view, seconds) for seconds in watched_windows(view))
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
    stored = _load_state(view, seconds)
    if stored is None or time.time() - stored.get("stored_at", 0) > SLIDE_REFRESH_SECONDS:
        _mark_dirty(view)


def snapshot(view: str, seconds: int) -> dict[str, Any]:
    """The state a new client starts from: ``{"type": "snapshot", ...}``.

    The stored state is sent at once (a Redis GET, however large the mesh); when it is older than
    SNAPSHOT_MAX_AGE_SECONDS the view is marked, and the broadcaster's delta follows, which this client
    receives too. Without a stored state the view is computed here."""
    if view not in BUILDERS:
        raw = redis_client().get(key("seq", view))
        return {"type": "invalidate", "view": view, "seq": int(raw or 0)}
    stored = _load_state(view, seconds)
    if stored is not None:
        if time.time() - stored.get("stored_at", 0) > SNAPSHOT_MAX_AGE_SECONDS:
            _mark_dirty(view)
    else:
        refresh_and_send(view, seconds)
        stored = _load_state(view, seconds)
        if stored is None:  # another process holds the compute lock: wait for it briefly
            for _ in range(50):
                time.sleep(0.1)
                stored = _load_state(view, seconds)
                if stored is not None:
                    break
            else:
                stored = {"seq": 0, "data": computed(view, seconds)}
    return {"type": "snapshot", "view": view, "window": seconds, "seq": stored["seq"], "data": stored["data"]}
