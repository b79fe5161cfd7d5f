"""Websocket fan-out benchmark: 100 logged-in clients on the topology view, broadcasts, delivery delay,
and the bytes each client is sent, today's text frames beside the deflated binary frames.

It runs twice on the same seeded mesh (``benchmarks.topology_ui``'s seed): clients reading text, as
before deflating (``/ws/live/topology/``), then clients asking for it as live.js does
(``?compression=deflate``). Each round changes the newest minute's rollups of ``--changed`` of the
edges, then calls ``dashboard.live.broadcast.broadcast("topology")`` the way the broadcaster does: the
view is computed once, diffed, and one delta is group_sent to every client through the real Redis
channel layer and daphne. The delay is from the moment the broadcaster sends (``sent_at`` in the
delta) to the moment each client has read and inflated the whole message. The bytes are what each
client reads off its socket, frame headers included; a minute at steady state is 60 broadcasts (the
topology's one a second). Printed, never asserted. It also reports what marking a view changed costs
a writer, and the delay from that mark, through a running broadcaster, to every client.

    SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench \\
        .venv/bin/python -m benchmarks.websocket_fanout --clients 100 --services 5000 --edges 25000

Targets (issue 11): delivery p95 <= 500 ms, a delta of 1 % of the edges <= 50 KiB.
"""

import argparse
import asyncio
import base64
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")
os.environ.setdefault("CHANNELS_PREFIX", f"bench-{uuid.uuid4().hex[:8]}")

import django

django.setup()

from benchmarks.topology_ui import daphne, database_url, scratch_database, seed, session_cookie  # noqa: E402
from dashboard.live.protocol import Receiver  # noqa: E402


class Client:
    """A minimal RFC 6455 client on asyncio streams: reads the server's frames as static/js/live.js does
    (``protocol.Receiver``: text, chunks, deflated binary parts) and counts the bytes it was sent."""

    def __init__(self, host, port, path, cookie):
        self.host, self.port, self.path, self.cookie = host, port, path, cookie
        self.receiver = Receiver()
        self.wire_bytes = 0  # every frame read, its header included

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
        self.inbox = asyncio.Queue()
        self.reading = asyncio.create_task(self._read())

    async def _frame(self):
        head = await self.reader.readexactly(2)
        opcode = head[0] & 0x0F
        length = head[1] & 0x7F
        header = 2
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            header += 2
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            header += 8
        payload = await self.reader.readexactly(length)
        self.wire_bytes += header + length
        return opcode, payload

    async def _read(self):
        """Reads all the time, as a browser does: pings are answered even while nobody asks for a message
        (daphne closes a socket whose pong is 30 s late), and each message is kept with when it was read."""
        try:
            while True:
                opcode, payload = await self._frame()
                if opcode == 8:
                    raise ConnectionError("closed by the server")
                if opcode == 9:  # ping: answer with a masked pong
                    mask = os.urandom(4)
                    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                    self.writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                    continue
                if opcode not in (1, 2):
                    continue
                text = self.receiver.feed(payload.decode() if opcode == 1 else payload)
                if text is not None:
                    self.inbox.put_nowait((json.loads(text), time.time(), self.wire_bytes))
        except Exception as error:  # the next message() raises it
            self.inbox.put_nowait((error, time.time(), self.wire_bytes))

    async def received(self):
        """The next whole JSON message, the time.time() it was read and inflated, and the bytes read
        off the socket up to its end."""
        message, at, wire_bytes = await self.inbox.get()
        if isinstance(message, Exception):
            raise message
        return message, at, wire_bytes

    async def message(self):
        """The next whole JSON message."""
        return (await self.received())[0]

    def close(self):
        self.reading.cancel()
        self.writer.close()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def change_rollups(round_number, fraction):
    """``fraction`` of the edges get more calls in one minute, as between two broadcasts."""
    from django.db.models import Count, F

    from topology.changes import TOPOLOGY, ChangedRows, announce_on_commit
    from topology.models import EdgeRollup

    # A minute with a row for every edge (a seeded one): the newest minute may hold only the few rows
    # that other rounds or benchmarks wrote since the clock passed the seeded minutes.
    fullest = EdgeRollup.objects.values("minute").annotate(rows=Count("id")).order_by("-rows", "-minute")[0]
    ids = list(EdgeRollup.objects.filter(minute=fullest["minute"]).order_by("id").values_list("id", flat=True))
    chosen = random.Random(round_number).sample(ids, max(1, round(len(ids) * fraction)))
    EdgeRollup.objects.filter(id__in=chosen).update(count=F("count") + 17 + round_number, errors=F("errors") + 1)
    # Named as ingestion names the rows it changed: the live topology reads those.
    announce_on_commit(TOPOLOGY, rows=ChangedRows(edge_rollups=frozenset(chosen)))
    return chosen


def kib(size):
    return f"{size / 1024:,.1f} KiB"


class Broadcasts:
    """The broadcaster's side in a process of its own, as ``manage.py broadcast`` is: computing a view of
    5,000 services in this process would hold the GIL for seconds while its hundred clients wait to read.
    Commands in (JSON lines on stdin), answers out (on stdout); see ``serve``."""

    def __init__(self, db):
        env = {**os.environ, "DATABASE_URL": database_url(db), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.websocket_fanout", "--serve-broadcasts"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def call(self, **command):
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the broadcasting process ended")
            if line.startswith("{"):
                return json.loads(line)

    async def __call__(self, **command):
        return await asyncio.to_thread(self.call, **command)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def serve():
    """The broadcasting process: change rollups, refresh, broadcast, mark through a running Broadcaster."""
    import threading

    from dashboard.live import broadcast
    from dashboard.live.protocol import as_text, encode, frames
    from topology.changes import ChangedRows

    stop, running, changed_ids = threading.Event(), None, []
    for line in sys.stdin:
        command = json.loads(line)
        answer = {}
        if command["do"] == "change":
            changed_ids = change_rollups(command["round"], command["fraction"])
            answer["changed"] = len(changed_ids)
        elif command["do"] == "refresh":
            broadcast.refresh_state("topology", 300)
        elif command["do"] == "broadcast":
            # The clients are watching; this benchmark's sockets send no pings to renew the mark.
            broadcast.watch("topology", 300)
            [sent] = broadcast.broadcast("topology")
            text = encode(sent)
            started = time.perf_counter()
            deflated = frames(text)
            answer = {
                "sent_at": sent["sent_at"],
                "seq": sent["seq"],
                "compute_ms": sent["compute_ms"],
                "json": len(text.encode()),
                # Both encodings of the same message, whichever the clients read.
                "deflated": sum(len(f) if isinstance(f, bytes) else len(f.encode()) for f in deflated),
                "text": sum(len(f.encode()) for f in as_text(deflated)),
                "deflate_ms": (time.perf_counter() - started) * 1000,
            }
        elif command["do"] == "mark":
            # What a committed write does in the writer's process (mark the view), and its cost.
            stop = threading.Event()
            running = threading.Thread(target=broadcast.Broadcaster().run, args=(stop,), daemon=True)
            running.start()
            broadcast.redis_client().delete(broadcast.key("slot", "topology"))
            answer["announced"] = time.time()
            started = time.perf_counter()
            # The rows of the last change, as its writer names them.
            broadcast.mark_changed(None, frozenset({"topology"}), rows=ChangedRows(edge_rollups=frozenset(changed_ids)))
            answer["announce_ms"] = (time.perf_counter() - started) * 1000
        elif command["do"] == "stop" and running is not None:
            stop.set()
            running.join(timeout=30)
        print(json.dumps(answer), flush=True)


async def phase(url, cookie, args, compression, broadcasts):
    """``args.clients`` clients on the live topology, asking for ``compression`` or not (today's text),
    through ``args.rounds`` broadcasts that each change ``args.changed`` of the edges. Returns figures."""
    from dashboard.live.protocol import encode

    host, port = url.removeprefix("http://").split(":")
    query = "window=300" + ("&compression=deflate" if compression else "")
    clients = [Client(host, int(port), f"/ws/live/topology/?{query}", cookie) for _ in range(args.clients)]

    async def snapshot(client):
        """Its sequence number and sizes: a hundred parsed snapshots of 5,000 services would hold GBs
        in this one process and stall its loop in garbage collection, where browsers each hold one."""
        await client.connect()
        message, _at, wire_bytes = await client.received()  # the first message: all the wire so far
        return message["seq"], len(encode(message).encode()), wire_bytes

    async def receive_until(client, seq):
        while True:
            message, at, wire_bytes = await client.received()
            if message.get("type") == "delta" and message["seq"] >= seq:
                return message, at, wire_bytes

    # The stored state the snapshots are served from, as at steady state: no client waits for (or is
    # sent the delta of) a first computation.
    await broadcasts(do="refresh")
    started = time.perf_counter()
    snapshots = []
    for wave in range(0, len(clients), args.wave):
        snapshots += await asyncio.gather(*(snapshot(client) for client in clients[wave : wave + args.wave]))
    figures = {
        "connect_ms": (time.perf_counter() - started) * 1000,
        "snapshot_json": snapshots[0][1],
        "snapshot_wire": statistics.median(wire_bytes for _, _, wire_bytes in snapshots),
    }
    # One broadcast not counted: whatever the first snapshot's computation sent is read by then.
    target = max(seq for seq, _, _ in snapshots) + 1
    waiting = [asyncio.create_task(receive_until(c, target)) for c in clients]
    await broadcasts(do="broadcast")
    warmed = await asyncio.wait_for(asyncio.gather(*waiting), timeout=60)
    seqs, read = [message["seq"] for message, _, _ in warmed], [wire_bytes for _, _, wire_bytes in warmed]

    delays, wire_sizes, sent, changed = [], [], [], []
    for round_number in range(args.rounds):
        # An uncounted broadcast first, read by every client: it takes whatever the window's slide
        # changed (when the minute turned, the whole view), so the counted one carries the edges.
        target = max(seqs) + 1
        waiting = [asyncio.create_task(receive_until(c, target)) for c in clients]
        await broadcasts(do="broadcast")
        absorbed = await asyncio.wait_for(asyncio.gather(*waiting), timeout=120)
        seqs, read = [message["seq"] for message, _, _ in absorbed], [wire_bytes for _, _, wire_bytes in absorbed]
        changed.append((await broadcasts(do="change", round=round_number, fraction=args.changed))["changed"])
        target = max(seqs) + 1
        waiting = [asyncio.create_task(receive_until(c, target)) for c in clients]
        sent.append(await broadcasts(do="broadcast"))
        results = await asyncio.wait_for(asyncio.gather(*waiting), timeout=120)
        delays.append([(received - sent[-1]["sent_at"]) * 1000 for _, received, _ in results])
        wire_sizes.append(statistics.mean(wire_bytes - before for (_, _, wire_bytes), before in zip(results, read)))
        read = [wire_bytes for _, _, wire_bytes in results]
        seqs = [message["seq"] for message, _, _ in results]
        await asyncio.sleep(args.interval)

    # Mark -> every client has it, through a broadcaster running as ``manage.py broadcast`` runs it.
    await broadcasts(do="change", round=99, fraction=args.changed)
    target = max(seqs) + 1
    waiting = [asyncio.create_task(receive_until(c, target)) for c in clients]
    marked = await broadcasts(do="mark")
    results = await asyncio.wait_for(asyncio.gather(*waiting), timeout=60)
    await broadcasts(do="stop")
    for client in clients:
        client.close()
    figures.update(
        delays=delays,
        end_to_end=[(received - marked["announced"]) * 1000 for _, received, _ in results],
        announce_ms=marked["announce_ms"],
        json_sizes=[message["json"] for message in sent],
        same_message=[(message["deflated"], message["text"]) for message in sent],
        deflate_ms=[message["deflate_ms"] for message in sent],
        computes=[message["compute_ms"] for message in sent],
        wire_sizes=wire_sizes,
        changed=changed,
    )
    return figures


def kinds(f):
    """The rounds by what their delta carried: the changed edges, or the whole view. When the minute
    turns, the minute that left the window changes every edge with traffic in it: at one broadcast a
    second, 1 of each minute's 60 carries (nearly) the whole view here, where every edge has traffic in
    every minute."""
    full = [i for i, size in enumerate(f["json_sizes"]) if size > f["snapshot_json"] / 4]
    changed = [i for i in range(len(f["json_sizes"])) if i not in full]
    return changed, full


def per_minute(f):
    changed, full = kinds(f)
    small = statistics.mean(f["wire_sizes"][i] for i in changed) if changed else 0
    whole = statistics.mean(f["wire_sizes"][i] for i in full) if full else f["snapshot_wire"]
    return 59 * small + whole, small


def report(name, f, args):
    changed, full = kinds(f)
    print(
        f"--- {name}: {args.clients} clients, {args.rounds} broadcasts, {statistics.median(f['changed'])} edges changed each"
    )
    print(
        f"connect + snapshot, {args.clients} clients, {args.wave} at a time   {f['connect_ms']:8.0f} ms   "
        f"snapshot {kib(f['snapshot_json'])} of JSON, {kib(f['snapshot_wire'])} on the wire per client"
    )
    for label, rounds in (("the changed edges", changed), ("the whole view (the minute's slide)", full)):
        if not rounds:
            print(f"deltas of {label}: none in this run")
            continue
        delays = [delay for i in rounds for delay in f["delays"][i]]
        print(
            f"deltas of {label}: {len(rounds)} broadcasts, median {kib(statistics.median(f['json_sizes'][i] for i in rounds))} "
            f"of JSON, {kib(statistics.median(f['wire_sizes'][i] for i in rounds))} on the wire per client; "
            f"delivery p50 {percentile(delays, 0.5):.1f} ms, p95 {percentile(delays, 0.95):.1f} ms, max {max(delays):.1f} ms"
        )
    minute, _small = per_minute(f)
    print(
        f"steady state, a broadcast a second: {kib(minute)} per client per minute "
        f"(59 deltas of the changed edges + 1 of the whole view; {kib(minute * args.clients)} for all)"
    )
    print(f"view compute per broadcast (once for all clients)   median {statistics.median(f['computes']):.0f} ms")
    print(
        f"mark -> every client has it          p50 {percentile(f['end_to_end'], 0.5):6.1f} ms   "
        f"p95 {percentile(f['end_to_end'], 0.95):6.1f} ms (includes computing the view); marking costs the writer "
        f"{f['announce_ms']:.1f} ms"
    )


async def run(url, cookie, args, broadcasts):
    phases = {}
    for name, compression in (("today: text frames", False), ("deflated binary frames", True)):
        if name.startswith("today") and args.skip_today:
            continue
        phases[name] = await phase(url, cookie, args, compression, broadcasts)
        report(name, phases[name], args)
    new = phases["deflated binary frames"]
    changed, full = kinds(new)
    print("--- the same messages in both encodings (computed from each broadcast)")
    for label, rounds in (("changed edges", changed), ("whole view", full)):
        if rounds:
            deflated = statistics.median(new["same_message"][i][0] for i in rounds)
            text = statistics.median(new["same_message"][i][1] for i in rounds)
            deflate_ms = statistics.median(new["deflate_ms"][i] for i in rounds)
            print(
                f"delta of the {label}: {kib(text)} as text frames, {kib(deflated)} deflated "
                f"({text / deflated:.1f}x; deflated once in {deflate_ms:.1f} ms)"
            )
    if len(phases) == 2:
        old = phases["today: text frames"]
        print(f"snapshot per client: {kib(old['snapshot_wire'])} today, {kib(new['snapshot_wire'])} deflated")
        print(f"bytes per client per minute: {kib(per_minute(old)[0])} today, {kib(per_minute(new)[0])} deflated")
    print("targets: delivery p95 <= 500 ms; delta <= 50 KiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.3)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--edges", type=int, default=600)
    parser.add_argument("--changed", type=float, default=0.01, help="the fraction of edges a broadcast changes")
    parser.add_argument(
        "--wave", type=int, default=10, help="clients that connect at once (a snapshot is read per client)"
    )
    parser.add_argument("--skip-today", action="store_true", help="only the deflating clients")
    parser.add_argument("--serve-broadcasts", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_broadcasts:
        serve()
        return
    with scratch_database() as db:
        started = time.perf_counter()
        seed(args.services, args.edges)
        print(f"seeded {args.services} services, {args.edges} edges in {time.perf_counter() - started:.0f} s")
        cookie = session_cookie()
        broadcasts = Broadcasts(db)
        try:
            with daphne(db) as url:
                asyncio.run(run(url, cookie, args, broadcasts))
        finally:
            broadcasts.close()


if __name__ == "__main__":
    main()
