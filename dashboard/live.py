"""Live updates: collectors announce that a view's data changed; websocket consumers push it.

CONTRACT (used by collectors; owned and implemented by the live-dashboard work):
``announce_change(view)`` where view is one of "topology", "routes", "balancers", "lag", "services".
It is cheap, never raises, never blocks the caller for long, and may be called after every batch:
coalescing to one broadcast per view per second (five for balancers and lag) happens behind it.

How it works
------------
Coalescing is shared by every process through Redis (the channel layer's Redis, under its prefix):

* ``announce_change`` marks the view dirty (``SET dirty``) and tries to take the view's slot
  (``SET slot NX PX 1000``; COALESCE_MS). Whoever takes the slot broadcasts now (the leading edge);
  whoever does not schedules one more attempt for when the slot expires (the trailing edge). The
  attempt that takes the slot consumes the dirty mark (``GETDEL``), so a burst of announcements from
  any number of processes gives one broadcast now and at most one per interval after it, and the
  last change of a burst is never lost.
* The broadcast runs on a background thread, so the collector only pays for two Redis round trips.
* A broadcaster computes the view once per watched window, diffs it against the last state stored in
  Redis, stores the new state with the next sequence number, and ``group_send``s the delta, already
  encoded as JSON text, to everyone watching. Consumers forward the text without recomputing it.

Views with a registered builder (``topology``, ``routes``, ``balancers``, ``lag``) get snapshot +
seq-numbered deltas. The others (``services``, which no page watches live) get an ``invalidate``
message with a sequence number, for a page to refetch its REST endpoint.

Delta protocol (websocket JSON messages, server to client)::

    {"type": "snapshot", "view", "window", "seq", "data": {...full view...}}
    {"type": "delta", "view", "window", "seq", "prev", "changes": {key: change}}
    {"type": "invalidate", "view", "seq"}

A change for a list of records with an ``id`` (or ``name``) is ``{"upsert": [records],
"remove": [ids]}``; for anything else it is ``{"set": value}``. A client applies a delta only when
``prev`` equals the sequence number it holds; otherwise it sends ``{"type": "resync"}``.
"""

import json
import logging
import threading
import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

logger = logging.getLogger(__name__)

VIEWS = ("topology", "routes", "balancers", "lag", "services")
WINDOWS = (300, 900, 3600)
DEFAULT_WINDOW = 300
# At most one broadcast per interval and view. The balancer statistics over minutes of traffic, and the
# lag sampled every 5 s, gain nothing from a second's freshness, and after the topology they cost the
# most to compute (150 ms and 60 ms for 1,000 services, in the collector's own process).
COALESCE_MS = {"topology": 1000, "routes": 1000, "services": 1000, "balancers": 5000, "lag": 5000}
WATCH_TTL_SECONDS = 120
STATE_TTL_SECONDS = 24 * 3600
COMPUTE_LOCK_MS = 15000


# --- views that have a snapshot ---------------------------------------------------------------


def _topology(window):
    from topology.graph import topology_snapshot
    from topology.window import Window

    return topology_snapshot(Window.from_params(window))


def _routes(window):
    from topology.traces import routes
    from topology.window import Window

    # NUL separates the parts: PostgreSQL refuses it in text, and no tracer writes it in a name.
    rows = [{"id": f"{row['service']}\0{row['operation']}", **row} for row in routes(Window.from_params(window))]
    return {"routes": rows}


def _balancers(window):
    from topology.balancing import BalancerWindow

    overview = BalancerWindow(minutes=window / 60).overview()
    services = [{"id": summary["service"], **summary} for summary in overview["services"]]
    return {"window": overview["window"], "services": services}


def _lag(window):
    from topology.consumer_lag import lag_overview
    from topology.models import SourceStatus
    from topology.propagation import flows

    kafka = SourceStatus.objects.filter(name="kafka").first()
    return {
        "kafka": kafka.as_dict() if kafka else None,
        "groups": [{"id": group["group"], **group} for group in lag_overview(minutes=window / 60)],
        "flows": [
            {"id": f"{flow['producer']}\0{flow['topic']}\0{flow['consumer']}", **flow}
            for flow in flows(minutes=window / 60)["flows"]
        ],
    }


BUILDERS = {"topology": _topology, "routes": _routes, "balancers": _balancers, "lag": _lag}


def group_name(view, window=None):
    """The channel-layer group of a view (and window, for views with snapshots)."""
    if view in BUILDERS:
        return f"live.{view}.{int(window or DEFAULT_WINDOW)}"
    return f"live.{view}"


def normalise_window(value):
    try:
        window = int(value)
    except (TypeError, ValueError):
        return DEFAULT_WINDOW
    return window if window in WINDOWS else DEFAULT_WINDOW


# --- the delta protocol (pure functions, unit tested) -----------------------------------------


def _record_key(record):
    if isinstance(record, dict):
        if "id" in record:
            return str(record["id"])
        if "name" in record:
            return str(record["name"])
    return None


def _is_keyed_list(value):
    return isinstance(value, list) and all(_record_key(item) is not None for item in value)


IGNORED_KEYS = {"generated_at"}  # changes on every computation; sent as the delta's own field


def diff(old, new):
    """The changes that turn ``old`` into ``new``: only what differs, by record for keyed lists."""
    changes = {}
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


def apply(state, changes):
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


def encode(message):
    return json.dumps(message, cls=DjangoJSONEncoder, separators=(",", ":"))


CHUNK_CHARS = 128 * 1024  # escaped and UTF-8 encoded, a chunk frame stays well under daphne's 1 MiB


def frames(text):
    """The websocket frames that carry ``text``: itself, or ``chunk`` messages the client joins."""
    if len(text) <= CHUNK_CHARS:
        return [text]
    parts = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
    chunk_id = f"{time.time_ns():x}"
    return [
        json.dumps({"type": "chunk", "id": chunk_id, "i": i, "n": len(parts), "text": part}, ensure_ascii=False)
        for i, part in enumerate(parts)
    ]


def _event(message):
    """The channel-layer event of a broadcast: encoded (and split) once, forwarded as is by every consumer."""
    return {"type": "live.message", "frames": frames(encode(message))}


def _computed(view, window):
    """The view as its builder gives it, stamped with when (a builder may stamp it itself), as JSON carries it."""
    return _plain({"generated_at": datetime.now(UTC), **BUILDERS[view](window)})


def _plain(data):
    """The view as JSON would carry it (datetimes as strings), so stored and fresh states compare."""
    return json.loads(encode(data))


# --- Redis ------------------------------------------------------------------------------------

_clients = {}
_clients_lock = threading.Lock()


def _layer_config():
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG", {})
    hosts = config.get("hosts") or [settings.REDIS_URL]
    host = hosts[0]
    if isinstance(host, dict):
        host = host.get("address", settings.REDIS_URL)
    return host, config.get("prefix", "asgi")


def redis_client():
    import redis

    url, _prefix = _layer_config()
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=1)
            _clients[url] = client
        return client


def _key(*parts):
    _url, prefix = _layer_config()
    return ":".join([prefix, "live", *[str(p) for p in parts]])


# --- announcing -------------------------------------------------------------------------------

_pending = set()
_pending_lock = threading.Lock()


REDIS_DOWN_BACKOFF_SECONDS = 5.0
_redis_down_until = 0.0


def announce_change(view):
    """Says that ``view``'s data changed. Cheap, never raises; broadcasts are coalesced.

    While Redis does not answer, announcements are dropped for a few seconds at a time (a collector
    must not wait for a connect timeout on every batch); the pages resync when it is back."""
    global _redis_down_until
    if view not in VIEWS:
        logger.warning("announce_change: unknown view %r", view)
        return None
    if time.monotonic() < _redis_down_until:
        return None
    try:
        client = redis_client()
        client.set(_key("dirty", view), "1", ex=60)
        _attempt(view, client)
    except Exception as error:  # the contract: never raise into a collector
        _redis_down_until = time.monotonic() + REDIS_DOWN_BACKOFF_SECONDS
        logger.warning(
            "announce_change(%r) failed, live updates paused for %.0f s: %s", view, REDIS_DOWN_BACKOFF_SECONDS, error
        )
    return None


def _attempt(view, client):
    """Takes the view's slot and broadcasts, or schedules a trailing attempt for when it frees."""
    if client.set(_key("slot", view), "1", nx=True, px=COALESCE_MS[view]):
        if client.getdel(_key("dirty", view)):
            _run_in_background(view, broadcast, view)
        return
    wait_ms = client.pttl(_key("slot", view))
    _schedule(view, max(wait_ms, 20) / 1000 + 0.01)


def _schedule(view, delay):
    with _pending_lock:
        if view in _pending:
            return
        _pending.add(view)
    timer = threading.Timer(delay, _trailing, args=(view,))
    timer.daemon = True
    timer.start()


def _trailing(view):
    with _pending_lock:
        _pending.discard(view)
    try:
        client = redis_client()
        if client.exists(_key("dirty", view)):
            _attempt(view, client)
    except Exception:
        logger.exception("trailing broadcast of %r failed", view)


def _run_in_background(view, func, *args):
    def run():
        from django.db import connections

        try:
            func(*args)
        except Exception:
            logger.exception("broadcast of %r failed", view)
        finally:
            connections.close_all()  # this thread's own connections: the thread ends here

    thread = threading.Thread(target=run, name=f"meshscope-live-{view}", daemon=True)
    thread.start()
    return thread


# --- broadcasting -----------------------------------------------------------------------------


def watch(view, window):
    """Called by consumers: someone is watching ``view`` in ``window``, so broadcasts compute it."""
    if view in BUILDERS:
        redis_client().set(_key("watch", view, normalise_window(window)), "1", ex=WATCH_TTL_SECONDS)


def watched_windows(view):
    """The windows someone watches (consumers refresh the mark on connect and every ping). With no
    watcher nothing is computed: the next client starts from the stored state and a refresh."""
    client = redis_client()
    return [window for window in WINDOWS if client.exists(_key("watch", view, window))]


def refresh_if_stale(view, window, max_age=30.0):
    """Called on a client's ping: when nothing was announced for a while the window still slides,
    so the view is recomputed (in the background) and its delta broadcast."""
    if view not in BUILDERS:
        return
    window = normalise_window(window)
    stored = _load_state(view, window)
    if stored is None or time.time() - stored.get("stored_at", 0) > max_age:
        _run_in_background(view, _refresh_and_send, view, window)


def broadcast(view):
    """Computes the view once per watched window and sends every watcher the delta. Returns the messages."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    sent = []
    if view not in BUILDERS:
        seq = redis_client().incr(_key("seq", view))
        message = {"type": "invalidate", "view": view, "seq": seq, "sent_at": time.time()}
        async_to_sync(layer.group_send)(group_name(view), _event(message))
        return [message]
    for window in watched_windows(view):
        message = refresh_state(view, window)
        if message is not None:
            async_to_sync(layer.group_send)(group_name(view, window), _event(message))
            sent.append(message)
    return sent


def _load_state(view, window):
    raw = redis_client().get(_key("state", view, window))
    if not raw:
        return None
    stored = json.loads(raw)
    return stored


def refresh_state(view, window):
    """Recomputes the view, stores it with the next sequence number and returns the delta message
    (None when another process is computing it right now)."""
    client = redis_client()
    lock = _key("compute", view, window)
    token = str(time.monotonic_ns())
    if not client.set(lock, token, nx=True, px=COMPUTE_LOCK_MS):
        client.set(_key("dirty", view), "1", ex=60)
        _schedule(view, 0.25)
        return None
    try:
        started = time.perf_counter()
        data = _computed(view, window)
        compute_ms = (time.perf_counter() - started) * 1000
        stored = _load_state(view, window) or {"seq": 0, "data": {}}
        changes = diff(stored["data"], data)
        seq = stored["seq"] + 1
        client.set(
            _key("state", view, window),
            encode({"seq": seq, "data": data, "stored_at": time.time()}),
            ex=STATE_TTL_SECONDS,
        )
        return {
            "type": "delta",
            "view": view,
            "window": window,
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


def snapshot(view, window, max_age=5.0):
    """The state a new client starts from: ``{"type": "snapshot", ...}``.

    The stored state is sent at once (a Redis GET, however large the mesh); when it is older than
    ``max_age`` a background refresh follows and broadcasts its delta, which this client receives too.
    Without a stored state the view is computed here."""
    window = normalise_window(window)
    if view not in BUILDERS:
        raw = redis_client().get(_key("seq", view))
        return {"type": "invalidate", "view": view, "seq": int(raw or 0)}
    stored = _load_state(view, window)
    if stored is not None:
        if time.time() - stored.get("stored_at", 0) > max_age:
            _run_in_background(view, _refresh_and_send, view, window)
    else:
        _refresh_and_send(view, window)
        stored = _load_state(view, window)
        if stored is None:  # another process holds the compute lock: wait for it briefly
            for _ in range(50):
                time.sleep(0.1)
                stored = _load_state(view, window)
                if stored is not None:
                    break
            else:
                stored = {"seq": 0, "data": _computed(view, window)}
    return {"type": "snapshot", "view": view, "window": window, "seq": stored["seq"], "data": stored["data"]}


def _refresh_and_send(view, window):
    message = refresh_state(view, window)
    # Sent even when nothing changed: it took a sequence number, and a client that missed it would
    # see a gap and ask for the whole view again.
    if message is not None:
        from asgiref.sync import async_to_sync
        from channels.layers import get_channel_layer

        async_to_sync(get_channel_layer().group_send)(group_name(view, window), _event(message))
