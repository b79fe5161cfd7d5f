"""Under load: page loads, ``/api/topology/`` and span → browser latency while spans are ingested at full speed.

The real components, as the other benchmarks run them: PostgreSQL (a scratch database seeded with a
mesh, as benchmarks.websocket_fanout seeds it), the embedded Tansu broker, ``manage.py consume_spans``
processes in one consumer group, the broadcaster (``manage.py broadcast``) and daphne.

* Ingestion: a feeder process produces OTLP messages of 50 spans (benchmarks.ingest's traces, each
  copy moved to the present) as fast as the consumers take them: it keeps ``--backlog`` messages
  produced but not yet committed by the group, so the consumers never wait for work and the queue in
  front of them stays bounded (a backlog that grows without bound would measure the queue, not
  meshscope). ``--rate`` paces it instead.
* ``--clients`` websocket clients follow the live topology (snapshot, then deltas), as the topology
  page does; they answer pings and ping every 30 s as static/js/live.js does.
* A probe trace (``probe-caller`` → ``probe-callee``, one call) is produced every ``--probe-interval``
  seconds on the same topic, behind the traffic. Span → client is the time from handing it to the
  Kafka producer to the moment each client has read a message in which the probe edge's count went up
  (the count is the edge's ``rps`` times the seconds the window's rollups cover). One Playwright page
  (Debian's chromium) on the topology page gives span → browser: until the page's draw holding the new
  count has rendered (its ``body[data-draws]`` changes after the render frame; the topology page draws
  edges on a canvas, so no DOM node holds the count).
* A logged-in user loads every dashboard page, one after another: the document, then the data it
  shows (its REST calls, or for the live pages its websocket snapshot), and ``GET /api/topology/``.

Figures are printed beside the goals, never asserted, with the load average at start and end.

    SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python -m benchmarks.under_load

Goals (issue 14): span → browser p95 ≤ 1 s and page p95 ≤ 500 ms while ingesting.
"""

import argparse
import asyncio
import itertools
import json
import logging
import math
import multiprocessing
import os
import struct
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")
os.environ.setdefault("CHANNELS_PREFIX", f"bench-{uuid.uuid4().hex[:8]}")

import django

django.setup()

from benchmarks.ingest import SPANS_PER_MESSAGE, template_message  # noqa: E402
from benchmarks.topology_ui import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    daphne,
    database_url,
    scratch_database,
    seed,
    session_cookie,
)
from benchmarks.websocket_fanout import Client, percentile  # noqa: E402
from topology.window import DEFAULT_WINDOW_SECONDS, RATE_STEP_SECONDS  # noqa: E402

# kafka-python's selector warns whenever a busy machine makes its loop late: noise among the figures.
logging.getLogger("kafka").setLevel(logging.ERROR)

TOPIC = "bench-under-load"
PROBE_CALLER = "probe-caller"
# Probes on several edges can be in flight at once: one per edge, each told from the others by its edge.
PROBE_CALLEES = tuple(f"probe-callee-{n}" for n in range(8))
WINDOW = DEFAULT_WINDOW_SECONDS  # the pages' window when the URL names none
PING_SECONDS = 30  # static/js/live.js pings this often, which keeps the view watched
GOAL_SPAN_TO_BROWSER_MS = 1000
GOAL_PAGE_MS = 500


# --- the feeder (its own process: generating and producing must not share our GIL) ---------------


def feed(bootstrap, topic, group, backlog, rate, stop, committed):
    """Produces fresh 50-span OTLP messages while the group has fewer than ``backlog`` of them
    uncommitted (and, with ``rate``, no faster than ``rate`` spans/s) until ``stop`` is set."""
    from kafka import KafkaAdminClient, KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    payloads = present_messages()
    sent, done, checked = 0, 0, 0.0
    started = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now - checked >= 0.1:
            checked = now
            try:
                offsets = admin.list_group_offsets({group: None}).get(group, {})
            except Exception:  # the group does not exist before the first commit
                offsets = {}
            done = sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)
            committed.value = done
        allowed = backlog - (sent - done)
        if rate:
            allowed = min(allowed, int(rate / SPANS_PER_MESSAGE * (now - started)) - sent)
        if allowed <= 0:
            stop.wait(0.02)
            continue
        for _ in range(min(allowed, 50)):
            producer.send(topic, next(payloads))
            sent += 1
    producer.close(timeout=5)
    admin.close()


def present_messages():
    """benchmarks.ingest's message of ten traces, copied with fresh trace ids and moved to the moment of
    each copy, as live traffic is: roots and children interleave in time, as the trace queries expect."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    template = template_message()
    spans = [span for rs in template.resource_spans for ss in rs.scope_spans for span in ss.spans]
    first = min(span.start_time_unix_nano for span in spans)
    while True:
        request = ExportTraceServiceRequest()
        request.CopyFrom(template)
        shift = time.time_ns() - first
        fresh = {}
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span.trace_id = fresh.setdefault(span.trace_id, uuid.uuid4().bytes)
                    span.start_time_unix_nano += shift
                    span.end_time_unix_nano += shift
        yield request.SerializeToString()


def probe_message(callee):
    """One call probe-caller → ``callee``, its CLIENT and SERVER spans in one OTLP message; and its
    trace id."""
    from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf

    traces = OtelTraces()
    start = now_ns()
    call = traces.span(
        PROBE_CALLER,
        "probe-caller-0",
        "GET",
        "client",
        start,
        2,
        attributes={"http.request.method": "GET", "peer.service": callee},
    )
    traces.span(
        callee,
        f"{callee}-0",
        "GET /probe",
        "server",
        start + 100_000,
        1,
        parent=call,
        attributes={"http.request.method": "GET", "http.route": "/probe"},
    )
    return otlp_protobuf(traces.finished()), format(call.context.trace_id, "032x")


# --- following the live topology -------------------------------------------------------------------


def covered_seconds(until, window):
    """topology.window.Window.covered_seconds, from the ``until`` a topology view carries."""
    end = datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp()
    first_minute = math.floor((end - window) / 60) * 60
    return math.ceil((end - first_minute) / RATE_STEP_SECONDS) * RATE_STEP_SECONDS


def probe_counts(data_edges, until, window):
    """The calls in the window of each probe edge among ``data_edges``, by callee, from their rates."""
    return {
        edge["target"]: round(edge["rps"] * covered_seconds(until, window))
        for edge in data_edges
        if edge["source"] == PROBE_CALLER and edge["target"] in PROBE_CALLEES
    }


async def send_text(client, text):
    """A masked text frame (a client always masks), for the pings live.js sends."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81]) + (
        bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    )
    client.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    await client.writer.drain()


class Follower:
    """A websocket client of the live topology, handling messages as static/js/live.js does (a delta
    after a gap asks for a snapshot): the probe edges' counts, and when each value arrived."""

    def __init__(self, client):
        self.client = client
        self.seq = None  # of the state held; None until the first snapshot
        self.counts = {}  # by probe callee
        self.history = {callee: [] for callee in PROBE_CALLEES}  # (time.time() on arrival, count), on every change
        self.deliveries = []  # (compute_ms, sent -> read in ms) of each delta
        self.resyncs = 0
        self.lost = None  # why the connection ended, if it did

    async def run(self):
        try:
            await self.follow()
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as error:
            self.lost = f"{type(error).__name__}: {error}"

    async def follow(self):
        last_ping = time.monotonic()
        while True:
            message = await self.client.message()
            arrived = time.time()
            counts = {}
            if message.get("type") == "snapshot":
                self.seq = message["seq"]
                data = message["data"]
                counts = probe_counts(data.get("edges", []), data["until"], message["window"])
            elif message.get("type") == "delta" and self.seq is not None and message["seq"] > self.seq:
                if message["prev"] != self.seq:
                    self.resyncs += 1
                    self.seq = None
                    await send_text(self.client, '{"type":"resync"}')
                    continue
                self.seq = message["seq"]
                changes = message["changes"]
                self.deliveries.append((message["compute_ms"], (arrived - message["sent_at"]) * 1000))
                until = changes.get("until", {}).get("set")
                upserts = changes.get("edges", {}).get("upsert", [])
                counts = probe_counts(upserts, until, message["window"]) if until else {}
            for callee, count in counts.items():
                if count != self.counts.get(callee):
                    self.counts[callee] = count
                    self.history[callee].append((arrived, count))
            if time.monotonic() - last_ping > PING_SECONDS:
                last_ping = time.monotonic()
                await send_text(self.client, '{"type":"ping"}')


def seen_after(history, produced_at):
    """When a history of (time, count) first shows a count above the one it held at ``produced_at``."""
    before = None
    for at, count in history:
        if at <= produced_at:
            before = count
        elif before is None or count > before:
            return at
    return None


# The page's own record of the probe edge's count: after every draw has rendered (topology.js sets
# body[data-draws] in the frame after cytoscape's render), the count its model holds.
_PAGE_HOOK = """
window.__probeCounts = {};
new MutationObserver(() => {
  const m = window.meshscope;
  if (!m || !m.model.meta.until) return;
  for (const e of m.model.edges.values()) {
    if (e.source !== __CALLER__ || !__CALLEES__.includes(e.target)) continue;
    const until = Date.parse(m.model.meta.until);
    const first = Math.floor((until - m.model.meta.window * 1000) / 60000) * 60000;
    const covered = Math.ceil((until - first) / 1000 / __STEP__) * __STEP__;
    const count = Math.round(e.rps * covered);
    const seen = (window.__probeCounts[e.target] = window.__probeCounts[e.target] || []);
    if (!seen.length || seen[seen.length - 1][1] !== count) seen.push([Date.now() / 1000, count]);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-draws"] });
"""
PAGE_HOOK = (
    _PAGE_HOOK.replace("__CALLER__", json.dumps(PROBE_CALLER))
    .replace("__CALLEES__", json.dumps(PROBE_CALLEES))
    .replace("__STEP__", str(RATE_STEP_SECONDS))
)


def watch_in_browser(url, cookie, ready, stop, result):
    """One chromium page on the topology page until ``stop``; leaves its probe counts in ``result``."""
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=url)
            context.add_cookies([{"name": "sessionid", "value": cookie, "url": url}])
            page = context.new_page()
            page.on("pageerror", lambda error: result.setdefault("errors", []).append(str(error)))
            page.add_init_script(PAGE_HOOK)
            page.goto("/", wait_until="commit")
            page.wait_for_function("() => window.meshscope && window.meshscope.firstDrawnMs", timeout=120_000)
            ready.set()
            while not stop.is_set():
                page.wait_for_timeout(250)
            seen = page.evaluate("() => window.__probeCounts")
            result["history"] = {callee: [tuple(item) for item in seen.get(callee, [])] for callee in PROBE_CALLEES}
            browser.close()
    except Exception as error:  # reported with the figures; the rest of the run goes on
        result["failed"] = f"{type(error).__name__}: {error}"
        ready.set()


# --- page loads ------------------------------------------------------------------------------------


def pages(trace_id):
    """Each dashboard page: its document, and the data it shows (REST paths, or a live view's snapshot)."""
    route = "service=gateway&operation=" + quote("GET /api/orders")
    return [
        ("topology", "/", ("live", "topology")),
        ("routes", "/routes/", ("live", "routes")),
        ("route", f"/routes/detail/?{route}", ("rest", f"/api/routes/tree/?{route}&window={WINDOW}")),
        ("traces", "/traces/", ("rest", "/api/traces/?limit=100")),
        ("trace", f"/traces/{trace_id}/", ("rest", f"/api/traces/{trace_id}/")),
        ("balancers", "/balancers/", ("live", "balancers")),
        ("consistency", "/consistency/", ("live", "lag")),
        ("services", "/services/", None),
    ]


async def load_pages(url, cookie, trace_id, stop, times, failures):
    """One logged-in user, loading page after page: ``times[name]`` gets each load's milliseconds
    (whole, and the document alone), ``failures[name]`` what went wrong with a load that did not complete."""
    import requests

    session = requests.Session()
    session.cookies.set("sessionid", cookie)
    host, port = url.removeprefix("http://").split(":")

    def get(path):
        response = session.get(url + path, allow_redirects=False, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}")

    while not stop.is_set():
        for name, document, data in [*pages(trace_id), ("/api/topology/", f"/api/topology/?window={WINDOW}", None)]:
            if stop.is_set():
                return
            started = time.perf_counter()
            try:
                await asyncio.to_thread(get, document)
                document_ms = (time.perf_counter() - started) * 1000
                if data and data[0] == "rest":
                    await asyncio.to_thread(get, data[1])
                elif data:
                    client = Client(host, int(port), f"/ws/live/{data[1]}/?window={WINDOW}", cookie)
                    await client.connect()
                    try:
                        await asyncio.wait_for(snapshot_of(client), timeout=60)
                    finally:
                        client.close()
            except Exception as error:
                failures.setdefault(name, []).append(f"{type(error).__name__}: {error}")
                continue
            times.setdefault(name, []).append(((time.perf_counter() - started) * 1000, document_ms))


async def snapshot_of(client):
    while (await client.message()).get("type") != "snapshot":
        pass


# --- the run -----------------------------------------------------------------------------------------


async def measure(url, cookie, bootstrap, trace_id, args):
    from kafka import KafkaProducer

    from topology.models import Span

    host, port = url.removeprefix("http://").split(":")
    followers = [
        Follower(Client(host, int(port), f"/ws/live/topology/?window={WINDOW}", cookie)) for _ in range(args.clients)
    ]
    await asyncio.gather(*(follower.client.connect() for follower in followers))
    tasks = [asyncio.create_task(follower.run()) for follower in followers]
    reading = dict(zip(followers, tasks))

    browser = {}
    browser_ready, browser_stop = threading.Event(), threading.Event()
    if args.browser and Path(CHROMIUM).exists():
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # playwright's loop in its thread, no ORM there
        threading.Thread(
            target=watch_in_browser, args=(url, cookie, browser_ready, browser_stop, browser), daemon=True
        ).start()
    else:
        browser["failed"] = "not run" if not args.browser else f"{CHROMIUM} is missing"
        browser_ready.set()

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)

    def is_stored(trace_id):
        return Span.objects.filter(trace_id=trace_id).exists()

    async def probe(callee, timeout):
        """Produces one probe on ``callee``'s edge; returns (callee, when it was produced, when its spans
        were stored) once every client saw it (or after ``timeout``)."""
        before = [follower.counts.get(callee) for follower in followers]
        payload, trace_id = probe_message(callee)
        produced_at = time.time()
        await asyncio.to_thread(lambda: producer.send(TOPIC, payload).get(timeout=30))
        stored_at = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stored_at is None and await asyncio.to_thread(is_stored, trace_id):
                stored_at = time.time()
            waiting = [
                f
                for f, b in zip(followers, before)
                if not reading[f].done() and (f.counts.get(callee) is None or (b is not None and f.counts[callee] <= b))
            ]
            if not waiting and stored_at is not None:
                break
            await asyncio.sleep(0.05)
        return callee, produced_at, stored_at

    # The first probes add the probe services to the graph (a new layout in the page): not measured.
    await asyncio.gather(*(probe(callee, timeout=120) for callee in PROBE_CALLEES))
    await asyncio.to_thread(browser_ready.wait, 180)

    page_times, page_failures = {}, {}
    stop = asyncio.Event()
    loader = asyncio.create_task(load_pages(url, cookie, trace_id, stop, page_times, page_failures))
    # One probe every interval, on the next edge whose last probe every client has seen.
    in_flight = {}
    probes = []  # (callee, produced_at, stored_at)
    ends = time.monotonic() + args.seconds
    for number in itertools.count():
        if time.monotonic() >= ends:
            break
        callee = PROBE_CALLEES[number % len(PROBE_CALLEES)]
        if callee in in_flight:
            probes.append(await in_flight.pop(callee))
        in_flight[callee] = asyncio.create_task(probe(callee, timeout=60))
        await asyncio.sleep(args.probe_interval)
    probes.extend(await asyncio.gather(*in_flight.values()))
    stop.set()
    await loader
    await asyncio.sleep(3)  # what the browser has still to draw of the last probe
    browser_stop.set()
    for task in tasks:
        task.cancel()
    for follower in followers:
        follower.client.close()
    producer.close(timeout=5)
    return followers, probes, page_times, page_failures, browser


def latencies(history, probes):
    """Milliseconds from each probe to its count in ``history`` (by callee; None: never seen)."""
    seen = [(seen_after(history[callee], produced_at), produced_at) for callee, produced_at, _ in probes]
    return [None if at is None else (at - produced_at) * 1000 for at, produced_at in seen]


def figures(values):
    if not values:
        return "no samples"
    return (
        f"p50 {percentile(values, 0.5):7.0f} ms   p95 {percentile(values, 0.95):7.0f} ms   "
        f"max {max(values):7.0f} ms   (n={len(values)})"
    )


def load_average():
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} CPUs)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=90, help="how long to measure while ingesting")
    parser.add_argument("--clients", type=int, default=50, help="websocket clients on the live topology")
    parser.add_argument("--consumers", type=int, default=2, help="consume_spans processes in the group")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument(
        "--backlog", type=int, default=0, help="messages produced but not committed (default: one poll per consumer)"
    )
    parser.add_argument("--rate", type=int, default=0, help="spans/s to produce (default: as fast as consumed)")
    parser.add_argument("--probe-interval", type=float, default=1.0, help="seconds between probes once one is seen")
    parser.add_argument("--services", type=int, default=200, help="the seeded mesh the pages show")
    parser.add_argument("--edges", type=int, default=600)
    parser.add_argument("--no-browser", dest="browser", action="store_false", help="skip the Playwright page")
    parser.add_argument("--logs", help="where the processes log (default: a new temporary directory)")
    args = parser.parse_args()
    backlog = args.backlog or 200 * args.consumers  # consume_spans polls 200 messages at a time

    from django.conf import settings

    from demo.embedded import EmbeddedKafka
    from tests.chaos.harness import Process, wait_for
    from tests.kafka_helpers import create_topic
    from topology.models import Span

    print(f"load average at start   {load_average()}")
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    stop_feeding = context.Event()
    committed = context.Value("q", 0)
    logs = args.logs or tempfile.mkdtemp(prefix="under-load-")
    Path(logs).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BENCH_DAPHNE_LOG", str(Path(logs) / "daphne.log"))
    with scratch_database() as db:
        seed(args.services, args.edges)
        cookie = session_cookie()
        with EmbeddedKafka() as broker:
            bootstrap = broker.bootstrap_servers
            create_topic(bootstrap, TOPIC, partitions=args.partitions)
            group = f"bench-{uuid.uuid4().hex[:6]}"
            env = {
                "DATABASE_URL": database_url(db),
                "REDIS_URL": settings.REDIS_URL,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "TRACE_TOPICS": f"{TOPIC}:otlp_proto",
                "KAFKA_CONSUMER_GROUP": group,
                # Long enough for a batch stored on a busy machine; Tansu makes a join wait this once.
                "KAFKA_MAX_POLL_INTERVAL_MS": "15000",
                "KAFKA_SESSION_TIMEOUT_MS": "10000",
                "LOG_LEVEL": "WARNING",
            }
            processes = [
                Process(f"consume_spans-{n}", ["manage.py", "consume_spans"], env, Path(logs))
                for n in range(args.consumers)
            ]
            processes.append(Process("broadcast", ["manage.py", "broadcast"], env, Path(logs)))
            feeder = context.Process(
                target=feed, args=(bootstrap, TOPIC, group, backlog, args.rate, stop_feeding, committed)
            )
            try:
                for process in processes:
                    process.start()
                with daphne(db) as url:
                    feeder.start()
                    wait_for(lambda: committed.value > 0, 180, "the consumers storing spans", interval=0.2)
                    trace_id = Span.objects.filter(service__name="gateway").values_list("trace_id", flat=True)[0]
                    print(f"ingesting after {time.monotonic() - started:.0f} s; measuring for {args.seconds:.0f} s")
                    first = (time.monotonic(), committed.value)
                    followers, probes, page_times, page_failures, browser = asyncio.run(
                        measure(url, cookie, bootstrap, trace_id, args)
                    )
                    last = (time.monotonic(), committed.value)
                    stopped = [process.name for process in processes if not process.alive()]
            finally:
                stop_feeding.set()
                if feeder.pid is not None:
                    feeder.join(timeout=15)
                    if feeder.is_alive():
                        feeder.terminate()
                for process in processes:
                    process.stop()
            if stopped:
                for process in processes:
                    print(f"--- {process.name} log (tail) ---\n{process.log()[-2000:]}")

    spans_per_second = (last[1] - first[1]) * SPANS_PER_MESSAGE / (last[0] - first[0])
    per_client = [latencies(follower.history, probes) for follower in followers]
    all_clients = [ms for row in per_client for ms in row if ms is not None]
    missed = sum(ms is None for row, follower in zip(per_client, followers) for ms in row if not follower.lost)
    by_probe = [[row[i] for row in per_client if row[i] is not None] for i in range(len(probes))]
    first_client = [min(values) for values in by_probe if values]
    last_client = [max(values) for values in by_probe if values]
    deliveries = [delay for follower in followers for _, delay in follower.deliveries]
    computes = [compute for compute, _ in followers[0].deliveries] if followers else []

    print()
    print(
        f"ingestion          {spans_per_second:,.0f} spans/s stored while measuring "
        f"({args.consumers} consume_spans processes, {'paced at ' + str(args.rate) + ' spans/s' if args.rate else 'full speed'}, "
        f"backlog ≤ {backlog} messages of {SPANS_PER_MESSAGE} spans)"
    )
    print(f"websocket clients  {args.clients} on the live topology, window {WINDOW} s")
    print(
        f"probes             {len(probes)}, one every {args.probe_interval:.1f} s on {len(PROBE_CALLEES)} edges in turn, "
        "each once its edge's last probe was seen"
    )
    lost = [follower.lost for follower in followers if follower.lost]
    print(
        f"client resyncs     {sum(follower.resyncs for follower in followers)} (a delta after a gap)"
        f"{f'; {len(lost)} connections lost, e.g. {lost[0]}' if lost else ''}"
    )
    print()
    print("span → websocket client (produced → the client has read the delta with the new count)")
    print(
        f"  every client     {figures(all_clients)}{f'   not seen by a connected client: {missed}' if missed else ''}"
    )
    print(f"  first client     {figures(first_client)}")
    print(f"  last client      {figures(last_client)}")
    if "history" in browser:
        in_page = [ms for ms in latencies(browser["history"], probes) if ms is not None]
        print(f"span → browser     {figures(in_page)}   (chromium: the draw with the new count rendered)")
    else:
        print(f"span → browser     not measured: {browser.get('failed', 'the page did not report')}")
    if browser.get("errors"):
        print(f"  page errors: {browser['errors'][:3]}")
    # Stored: the first of the probe loop's look-ups (one every 50 ms or so) that found the probe's spans.
    to_store = [None if at is None else (at - produced_at) * 1000 for _, produced_at, at in probes]
    store_to_client = [
        min(values) - store_ms for values, store_ms in zip(by_probe, to_store) if values and store_ms is not None
    ]
    to_store = [ms for ms in to_store if ms is not None]
    print("where the time goes")
    print(f"  produced → stored             {figures(to_store)}   (Kafka backlog, the consumer's batch transaction)")
    print(f"  stored → first client         {figures(store_to_client)}   (mark, coalescing, computing, sending)")
    print(f"  view computed per broadcast   {figures(computes)}")
    print(f"  broadcast → client read       {figures(deliveries)}")
    print()
    print("page loads, one logged-in user: the document, then the data it shows (REST calls or a live snapshot)")
    everything = []
    for name, values in page_times.items():
        totals, documents = [total for total, _ in values], [document for _, document in values]
        print(f"  {name:16} {figures(totals)}   document alone p95 {percentile(documents, 0.95):5.0f} ms")
        if name != "/api/topology/":
            everything.extend(totals)
    print(f"  {'every page':16} {figures(everything)}")
    for name, errors in page_failures.items():
        print(f"  {name}: {len(errors)} loads failed, e.g. {errors[0]}")
    print()
    print(f"goals: span → browser p95 ≤ {GOAL_SPAN_TO_BROWSER_MS} ms; page p95 ≤ {GOAL_PAGE_MS} ms (while ingesting)")
    if stopped:
        print(f"warning: these processes had exited during the run: {', '.join(stopped)}")
    print(f"logs of the processes in {logs}")
    print(f"load average at end     {load_average()}   (run took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
