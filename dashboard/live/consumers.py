"""Websocket consumers of the live dashboard.

``/ws/live/<view>/?window=300``: a logged-in user gets a snapshot of the view, then the deltas every
broadcast carries (see dashboard/live/__init__.py for the protocol). Anonymous sockets are refused before
the handshake completes; AllowedHostsOriginValidator (dashboard/asgi.py) has already checked the origin.
A window the live views do not push is refused with the same message the API gives for a bad window.

Client messages: ``{"type": "resync"}`` (send a fresh snapshot), ``{"type": "ping"}`` (every 30 s:
keeps the window watched, recomputes a view nobody announced for 30 s since its window slides;
answered with ``pong``).
"""

import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from dashboard.live import broadcast
from dashboard.live.protocol import frames
from topology.changes import VIEWS
from topology.window import Window, WindowError

logger = logging.getLogger(__name__)

CLOSE_BAD_WINDOW = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_UNKNOWN_VIEW = 4404


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
            await database_sync_to_async(broadcast.watch)(self.view, self.window)
            text = await database_sync_to_async(broadcast.snapshot)(self.view, self.window)
        except Exception:
            logger.exception("snapshot of %s failed", self.view)
            await self.send_json({"type": "error", "message": "The snapshot could not be computed."})
            return
        await self.send_text(text)

    async def send_text(self, text: str) -> None:
        """Sends a message, split into ``chunk`` frames when it is larger than daphne's 1 MiB frame limit
        allows (the snapshot of a thousand services is about 1.5 MB)."""
        for frame in frames(text):
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
        # Already encoded (and split, if large) once by the broadcaster, for every client.
        for frame in event["frames"]:
            await self.send(text_data=frame)


def _query_param(scope: dict[str, Any], name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None
