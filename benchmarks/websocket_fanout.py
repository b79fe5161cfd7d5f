"""Websocket fan-out benchmark: 100 logged-in clients on the topology view, broadcasts, delivery delay.

Each round changes the rollups, then calls ``dashboard.live.broadcast.broadcast("topology")`` the way
the broadcaster does: the view is computed once, diffed, and one delta is group_sent to every client
through the real Redis channel layer and daphne. The delay is from the moment the broadcaster sends
(``sent_at`` in the delta) to the moment each client has read the whole message. Printed, never
asserted. It also reports what marking a view changed costs a writer, and the delay from that mark,
through a running broadcaster, to every client.

    SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/uihelper \\
        .venv/bin/python -m benchmarks.websocket_fanout --clients 100 --rounds 20

Target (issue 4): delivery p95 under 500 ms.
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import struct
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")
os.environ.setdefault("CHANNELS_PREFIX", f"bench-{uuid.uuid4().hex[:8]}")

import django

django.setup()

from benchmarks.topology_ui import daphne, scratch_database, seed, session_cookie  # noqa: E402


class Client:
    """A minimal RFC 6455 client on asyncio streams: enough to read the server's text frames."""

    def __init__(self, host, port, path, cookie):
        self.host, self.port, self.path, self.cookie = host, port, path, cookie
        self.chunks = {}

    async def connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{self.host}:{self.port}\r\n"
            f"Cookie: sessionid={self.cookie}\r\n\r\n"
        )
        self.writer.write(request.encode())
        await self.writer.drain()
        status = await self.reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in status.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"handshake refused: {status[:80]!r}")

    async def _frame(self):
        head = await self.reader.readexactly(2)
        opcode = head[0] & 0x0F
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        payload = await self.reader.readexactly(length)
        return opcode, payload

    async def message(self):
        """The next whole JSON message (joining ``chunk`` messages)."""
        while True:
            opcode, payload = await self._frame()
            if opcode == 8:
                raise ConnectionError("closed by the server")
            if opcode == 9:  # ping: answer with a masked pong
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self.writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                continue
            if opcode != 1:
                continue
            message = json.loads(payload)
            if message.get("type") != "chunk":
                return message
            parts = self.chunks.setdefault(message["id"], {})
            parts[message["i"]] = message["text"]
            if len(parts) == message["n"]:
                del self.chunks[message["id"]]
                return json.loads("".join(parts[i] for i in range(message["n"])))

    def close(self):
        self.writer.close()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def change_rollups(round_number):
    """Some traffic changes every round, as it would between two broadcasts."""
    from django.db.models import F

    from topology.models import EdgeRollup

    ids = list(EdgeRollup.objects.order_by("id").values_list("id", flat=True)[round_number * 7 % 50 :: 9][:30])
    EdgeRollup.objects.filter(id__in=ids).update(count=F("count") + 17 + round_number, errors=F("errors") + 1)


async def run(url, cookie, args):
    import threading

    from asgiref.sync import sync_to_async

    from dashboard.live import broadcast
    from dashboard.live.protocol import encode

    host, port = url.removeprefix("http://").split(":")
    clients = [Client(host, int(port), "/ws/live/topology/?window=300", cookie) for _ in range(args.clients)]
    started = time.perf_counter()
    await asyncio.gather(*(client.connect() for client in clients))
    snapshots = await asyncio.gather(*(client.message() for client in clients))
    print(
        f"{args.clients} clients connected and got their snapshots in {(time.perf_counter() - started) * 1000:.0f} ms "
        f"(snapshot {len(json.dumps(snapshots[0])) / 1024:.0f} KiB, seq {snapshots[0]['seq']})"
    )
    seqs = [s["seq"] for s in snapshots]

    async def receive_until(client, index, seq):
        while True:
            message = await client.message()
            if message.get("type") == "delta" and message["seq"] >= seq:
                return message, time.time()

    delays, sizes, computes = [], [], []
    for round_number in range(args.rounds):
        await sync_to_async(change_rollups, thread_sensitive=False)(round_number)
        target = max(seqs) + 1
        waiting = [asyncio.create_task(receive_until(c, i, target)) for i, c in enumerate(clients)]
        sent = await sync_to_async(broadcast.broadcast, thread_sensitive=False)("topology")
        results = await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
        sent_at = sent[0]["sent_at"]
        delays.extend((received - sent_at) * 1000 for _, received in results)
        sizes.append(len(encode(sent[0])))
        computes.append(sent[0]["compute_ms"])
        seqs = [message["seq"] for message, _ in results]
        await asyncio.sleep(args.interval)

    # What a committed write does in the writer's process (mark the view), its cost, and mark -> every
    # client has it, through a broadcaster running as ``manage.py broadcast`` runs it.
    stop = threading.Event()
    broadcaster = threading.Thread(target=broadcast.Broadcaster().run, args=(stop,), daemon=True)
    broadcaster.start()
    await sync_to_async(change_rollups, thread_sensitive=False)(99)
    broadcast.redis_client().delete(broadcast.key("slot", "topology"))
    target = max(seqs) + 1
    waiting = [asyncio.create_task(receive_until(c, i, target)) for i, c in enumerate(clients)]
    announced = time.time()
    t0 = time.perf_counter()
    await sync_to_async(broadcast.mark_changed, thread_sensitive=False)(None, frozenset({"topology"}))
    announce_cost = (time.perf_counter() - t0) * 1000
    results = await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
    end_to_end = [(received - announced) * 1000 for _, received in results]
    stop.set()
    broadcaster.join(timeout=10)
    for client in clients:
        client.close()

    print(f"broadcasts: {args.rounds} rounds x {args.clients} clients = {len(delays)} deliveries")
    print(
        f"delivery delay (broadcast -> receipt)   p50 {percentile(delays, 0.5):6.1f} ms   p95 {percentile(delays, 0.95):6.1f} ms   "
        f"max {max(delays):6.1f} ms"
    )
    print(
        f"delta size                              median {statistics.median(sizes) / 1024:.1f} KiB   max {max(sizes) / 1024:.1f} KiB "
        f"(of a {len(json.dumps(snapshots[0])) / 1024:.0f} KiB view)"
    )
    print(f"view compute per broadcast (once for all clients)   median {statistics.median(computes):.0f} ms")
    print(f"marking a view changed, cost to the writer   {announce_cost:.1f} ms")
    print(
        f"mark -> every client has it  p50 {percentile(end_to_end, 0.5):6.1f} ms   p95 {percentile(end_to_end, 0.95):6.1f} ms "
        f"(includes computing the view)"
    )
    print("target: delivery p95 < 500 ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--edges", type=int, default=600)
    args = parser.parse_args()
    with scratch_database() as db:
        seed(args.services, args.edges)
        cookie = session_cookie()
        with daphne(db) as url:
            asyncio.run(run(url, cookie, args))


if __name__ == "__main__":
    main()
