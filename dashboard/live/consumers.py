"""Websocket consumers of the live dashboard.

``/ws/live/<view>/?window=300&compression=deflate``: a logged-in user gets a snapshot of the view, then
the deltas every broadcast carries (see dashboard/live/__init__.py for the protocol). With
``compression=deflate`` (live.js asks for it) a message above 1 KiB comes as binary frames deflated once
for every client by the broadcaster, forwarded as they are; without it, as text, which its consumer
inflates again (a script or test client that reads text only). Anonymous sockets are refused before
the handshake completes; AllowedHostsOriginValidator (dashboard/asgi.py) has already checked the origin.
A window the live views do not push is refused with the same message the API gives for a bad window.

Client messages: ``{"type": "resync"}`` (send a fresh snapshot), ``{"type": "ping"}`` (every 30 s:
keeps the window watched, recomputes a view nobody announced for 30 s since its window slides;
answered with ``pong``).
"""

import logging
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.live import broadcast
from dashboard.live.protocol import Frame, as_text, frames
from topology.changes import VIEWS
from topology.window import Window, WindowError

logger = logging.getLogger(__name__)

CLOSE_BAD_WINDOW = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_UNKNOWN_VIEW = 4404

# The frames of each view's latest snapshot, by (view, window, compressed): clients that connect at the
# same sequence number share one encoding and deflating (7.3 MB of JSON and 53 ms of deflate at 5,000
# services), as the clients of a broadcast share its frames.
_snapshot_frames: dict[tuple[str, int, bool], tuple[tuple[Any, ...], list[Frame]]] = {}
_snapshot_frames_lock = threading.Lock()


def snapshot_frames(view: str, seconds: int, compressed: bool) -> list[Frame]:
    """The frames of the snapshot a new client gets (``broadcast.snapshot``), encoded once per state."""
    broadcast.watch(view, seconds)
    snapshot = broadcast.snapshot(view, seconds)
    # The sequence number starts again at 1 when a stored state expires: when it was stored tells them apart.
    version = (snapshot.seq, snapshot.stored_at)
    key = (view, seconds, compressed)
    with _snapshot_frames_lock:
        cached = _snapshot_frames.get(key)
    if cached is not None and cached[0] == version and snapshot.seq:
        return cached[1]
    encoded = frames(snapshot.text, compressed)
    with _snapshot_frames_lock:
        _snapshot_frames[key] = (version, encoded)
    return encoded


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            # Closing before accept rejects the handshake (HTTP 403): nothing is sent to the socket.
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.view = self.scope["url_route"]["kwargs"]["view"]
        if self.view not in VIEWS:
            await self.close(code=CLOSE_UNKNOWN_VIEW)
            return
        try:
            self.window = Window.live(_query_param(self.scope, "window")).seconds
        except WindowError as error:
            await self.accept()
            await self.send_json({"type": "error", error.parameter: str(error), "message": str(error)})
            await self.close(code=CLOSE_BAD_WINDOW)
            return
        self.compressed = _query_param(self.scope, "compression") == "deflate"
        self.group = broadcast.group_name(self.view, self.window)
        # Join before the snapshot, so no delta falls between them; the client drops the ones the
        # snapshot already contains (seq <= snapshot seq).
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_snapshot()

    async def disconnect(self, code: int) -> None:
        group = getattr(self, "group", None)
        if group:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def send_snapshot(self) -> None:
        try:
            # Not on the one thread every consumer's session lookup and ping share: at 5,000 services
            # reading a snapshot takes about 100 ms, and other sockets' handshakes would queue behind.
            encoded = await database_sync_to_async(snapshot_frames, thread_sensitive=False)(
                self.view, self.window, self.compressed
            )
        except Exception:
            logger.exception("snapshot of %s failed", self.view)
            await self.send_json({"type": "error", "message": "The snapshot could not be computed."})
            return
        await self.send_frames(encoded)

    async def send_frames(self, encoded: Sequence[Frame]) -> None:
        """Sends a message's frames (``protocol.frames``: binary parts when deflated, text otherwise,
        each under daphne's 1 MiB frame limit). A consumer handles one event at a time, so the frames of
        two messages never interleave."""
        for frame in encoded:
            if isinstance(frame, bytes):
                await self.send(bytes_data=frame)
            else:
                await self.send(text_data=frame)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "resync":
            await self.send_snapshot()
        elif kind == "ping":
            await database_sync_to_async(broadcast.watch)(self.view, self.window)
            await database_sync_to_async(broadcast.refresh_if_stale)(self.view, self.window)
            await self.send_json({"type": "pong"})

    async def live_message(self, event: dict[str, Any]) -> None:
        # Already encoded, deflated and split once by the broadcaster, for every client.
        await self.send_frames(event["frames"] if self.compressed else as_text(event["frames"]))


def _query_param(scope: dict[str, Any], name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None
