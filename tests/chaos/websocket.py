"""A live page's websocket client, on a plain TCP socket (RFC 6455), that keeps every message it
receives with the time it arrived: the chaos tests ask what came, and when.

``LiveSocket`` is one connection; ``LivePage`` reconnects as static/js/live.js does when its socket
is lost, and holds the view as live.js does (a snapshot, then the deltas in sequence, a resync on a
gap). Only what meshscope's sockets use: a handshake with the session cookie and an Origin daphne
accepts, text messages (fragmented or not), ping answered with pong, close.
"""

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dashboard.live.protocol import apply
from tests.chaos.harness import wait_for


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    message: dict[str, Any]
    connection: int = 1  # which of a LivePage's connections it came on


class LiveSocket:
    def __init__(self, url: str, cookie: str) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://{parts.netloc}\r\nCookie: sessionid={cookie}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError(f"the handshake ended early: {head!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"the handshake was refused: {head!r}")
        self.sock.settimeout(None)
        self.received: list[Received] = []
        self.closed = threading.Event()
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self.send_lock = threading.Lock()
        threading.Thread(target=self._read, name="chaos-websocket", daemon=True).start()

    def messages(self, kind: str, after: float = 0.0) -> list[Received]:
        return [item for item in list(self.received) if item.message.get("type") == kind and item.at > after]

    def wait_for_message(self, kind: str, timeout: float, after: float = 0.0) -> Received:
        wait_for(lambda: self.messages(kind, after) or self.closed.is_set(), timeout, f"a {kind} message")
        found = self.messages(kind, after)
        assert found, f"the socket closed before a {kind} message came"
        return found[0]

    def send_json(self, message: dict[str, Any]) -> None:
        self._send(0x1, json.dumps(message).encode())

    def close(self) -> None:
        self.closed.set()
        with contextlib.suppress(OSError):
            self._send(0x8, struct.pack("!H", 1000))
        self.sock.close()

    def _read(self) -> None:
        text = b""
        try:
            while not self.closed.is_set():
                fin, opcode, payload = self._frame()
                if opcode == 0x8:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                    return
                if opcode == 0x9:
                    self._send(0xA, payload)
                    continue
                if opcode in (0x1, 0x0):
                    text += payload
                    if fin:
                        self.received.append(Received(time.monotonic(), json.loads(text)))
                        text = b""
        except (OSError, ConnectionError):
            return
        finally:
            self.closed_at = time.monotonic()
            self.closed.set()

    def _frame(self) -> tuple[bool, int, bytes]:
        first, second = self._exactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._exactly(8))
        return bool(first & 0x80), first & 0x0F, self._exactly(length)  # a server never masks

    def _exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the server closed the socket")
            data += chunk
        return data

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)  # a client always masks
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        else:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        with self.send_lock:
            self.sock.sendall(header + mask + masked)


def reconnect_delay(attempt: int) -> float:
    """static/js/live.js's scheduleReconnect, without its ±20 % jitter: 0.5 s doubling up to 30 s."""
    return min(30.0, 0.5 * 2 ** min(attempt - 1, 6))


class LivePage:
    """A live page's socket, reconnected with live.js's backoff whenever it is lost or refused."""

    def __init__(self, url: str, cookie: str) -> None:
        self.url = url
        self.cookie = cookie
        self.connections: list[LiveSocket] = []
        self.failed_attempts: list[tuple[float, str]] = []  # (when, why) of handshakes that failed
        self.resyncs: set[tuple[int, int]] = set()  # (connection, message) of each gap a resync answered
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chaos-live-page", daemon=True)
        self.thread.start()

    @property
    def received(self) -> list[Received]:
        return [
            Received(item.at, item.message, number)
            for number, connection in enumerate(list(self.connections), 1)
            for item in list(connection.received)
        ]

    def messages(self, kind: str, after: float = 0.0) -> list[Received]:
        return sorted(
            (item for item in self.received if item.message.get("type") == kind and item.at > after),
            key=lambda item: item.at,
        )

    def wait_for_message(self, kind: str, timeout: float, after: float = 0.0) -> Received:
        wait_for(lambda: self.messages(kind, after), timeout, f"a {kind} message")
        return self.messages(kind, after)[0]

    def state(self) -> tuple[int, dict[str, Any]] | None:
        """(seq, view) as live.js holds it on the latest connection: its snapshot with each delta that
        follows in sequence applied. At a gap it asks for a snapshot (once per gap, as live.js does) and
        keeps what it held until the snapshot comes. None before the first snapshot."""
        if not self.connections:
            return None
        number, connection = len(self.connections), self.connections[-1]
        held: tuple[int, dict[str, Any]] | None = None
        for index, item in enumerate(list(connection.received)):
            message = item.message
            if message.get("type") == "snapshot":
                held = (message["seq"], message["data"])
            elif message.get("type") == "delta" and held is not None and message["seq"] > held[0]:
                if message["prev"] != held[0]:
                    if (number, index) not in self.resyncs and not connection.closed.is_set():
                        self.resyncs.add((number, index))
                        with contextlib.suppress(OSError):
                            connection.send_json({"type": "resync"})
                    continue
                held = (message["seq"], apply(held[1], message["changes"]))
        return held

    def close(self) -> None:
        self.stopping.set()
        for connection in list(self.connections):
            connection.close()
        self.thread.join(timeout=40)

    def _run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            try:
                connection = LiveSocket(self.url, self.cookie)
            except (OSError, ConnectionError) as error:
                self.failed_attempts.append((time.monotonic(), f"{type(error).__name__}: {error}"))
            else:
                self.connections.append(connection)
                # live.js counts an attempt as good once the socket opens.
                attempt = 0
                while not connection.closed.wait(0.1) and not self.stopping.is_set():
                    pass
            attempt += 1
            self.stopping.wait(reconnect_delay(attempt))
