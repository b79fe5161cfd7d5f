"""Issue 14, item 1: while traffic flows, the span consumer killed (kill -9) three times, the Celery
worker that runs beat and the periodic tasks killed once, and daphne restarted once, each restarted:
no span is lost or counted twice, and a live page's socket, reconnected after daphne's restart, holds
the final counts."""

import time

import pytest
from django.db.models import Sum
from django.utils import timezone

from dashboard.live.protocol import plain
from tests.chaos.harness import (
    SPANS,
    PacedProducer,
    Process,
    WebServer,
    all_committed,
    celery_worker,
    consumer_in_transaction,
    create_topics,
    database_url,
    rng,
    session_cookie,
    span_consumer,
    wait_for,
)
from tests.chaos.stream import SPANS_PER_TRACE, UNPAIRED_PEER, build, more_spans_than, observed
from tests.chaos.websocket import LivePage
from topology.graph import topology_view
from topology.models import IngestRollup, SourceStatus, Span
from topology.window import Window

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

# Long enough for three kills and restarts while messages still arrive: a restart takes 5-8 s
# (Django, then the group join) before the new consumer stores anything.
PRODUCE_SECONDS = 36
KILLS = 3
# The stream in sections: kill n comes once n sections are out, and the producer is held back so
# that at least half a section is still to come at every kill, however the timing falls.
SECTIONS = KILLS + 2
# The longest live window but one: it holds the whole run, whose spans carry the time of the build.
LIVE_WINDOW = 900
LIVE = f"/ws/live/topology/?window={LIVE_WINDOW}"
# One trace in 20 comes with a call only resolve_unpaired_spans counts (tests/chaos/stream.py).
UNPAIRED_EVERY = 20
# Longer than the whole run, shorter than the unpaired calls' age: the worker settles those, and never a
# span of the stream whose partner a kill delayed (its spans carry the time the stream was built).
PAIRING_GRACE_SECONDS = 600


def test_span_consumer_celery_worker_and_daphne_restarted_mid_stream_count_every_span_once_and_live(
    kafka_bootstrap, redis_url, run_id, tmp_path
):
    chance = rng("kill-restart")
    topics = {f"chaos-otlp-{run_id}": "otlp_proto", f"chaos-zipkin-{run_id}": "zipkin_json"}
    otlp_topic, zipkin_topic = topics
    stream = build(SPANS // SPANS_PER_TRACE, otlp_topic, zipkin_topic, unpaired_every=UNPAIRED_EVERY)
    create_topics(kafka_bootstrap, list(topics))
    group, application = f"chaos-{run_id}", f"chaos-consumer-{run_id}"
    consumer = span_consumer(
        kafka_bootstrap, topics, group, database_url(application_name=application), redis_url, tmp_path
    )
    env = {"DATABASE_URL": database_url(), "REDIS_URL": redis_url, "CHANNELS_PREFIX": group}
    worker = celery_worker(kafka_bootstrap, database_url(), redis_url, group, tmp_path)
    worker.env["SPAN_PAIRING_GRACE_SECONDS"] = str(PAIRING_GRACE_SECONDS)
    broadcaster = Process("broadcast", ["manage.py", "broadcast"], {**env, "LOG_LEVEL": "WARNING"}, tmp_path)
    web = WebServer(env, tmp_path)
    producer = PacedProducer(kafka_bootstrap, stream.messages, PRODUCE_SECONDS)
    section = len(stream.messages) // SECTIONS
    producer.limit = 2 * section
    # Where each kill lands: while the consumer holds a database transaction open (its batch neither
    # stored nor acknowledged to Kafka), the moment that transaction ends (the batch stored, its
    # offsets most likely not committed yet: it comes again and must not count twice), and wherever
    # the random moment falls.
    moments = ["storing", "stored", "anywhere"]
    chance.shuffle(moments)
    # The Celery worker's kill and daphne's restart each come after one of the consumer's kills that
    # another follows: between two of them, in an order of chance.
    others = [(chance.randint(1, KILLS - 1), chance.random(), name) for name in ("celery", "daphne")]
    expected = stream.expected
    cookie = session_cookie()
    kills, strikes, pages = [], {}, []
    started = time.monotonic()
    for process in (consumer, worker, broadcaster, web):
        process.start()
    producer.start()
    try:
        wait_for(more_spans_than(0), 90, "the consumer stores spans after its start")
        page = LivePage(web.url.replace("http", "ws") + LIVE, cookie)
        pages.append(page)
        page.wait_for_message("snapshot", 30)
        for number, moment in enumerate(moments, 1):
            wait_for(produced(producer, number * section), 120, "the stream going on")
            time.sleep(chance.uniform(0, 1.5))  # a random point of the consumer's work, not a synchronisation
            # Half a section more may flow, so that a batch comes to be stored; the rest waits.
            producer.limit = max(producer.limit, producer.sent + section // 2)
            if moment in ("storing", "stored"):
                wait_for(lambda: consumer_in_transaction(application), 30, "a batch being stored", interval=0.002)
            if moment == "stored":
                wait_for(lambda: not consumer_in_transaction(application), 30, "a batch stored", interval=0.001)
            assert consumer.alive(), consumer.log()[-3000:]
            consumer.kill()
            killed_at, stored = time.monotonic(), Span.objects.count()
            producer.limit = len(stream.messages) if number == KILLS else (number + 2) * section
            assert stored < expected.spans, "the kill came after the whole stream was stored"
            consumer.start()
            back = wait_for(more_spans_than(stored), 90, "the restarted consumer stores spans")
            kills.append((moment, round(killed_at - started, 1), stored, round(back, 1)))
            for _, _, name in sorted(item for item in others if item[0] == number):
                time.sleep(chance.uniform(0, 1.5))  # a random point of the traffic, not a synchronisation
                strikes[name] = strike(name, worker, web, started)

        producer.finish(timeout=PRODUCE_SECONDS + 60)
        # Offsets are committed only once their spans are: when every message is committed, every span
        # must be in the database, and none can be delivered again (and counted twice) after this.
        wait_for(lambda: all_committed(kafka_bootstrap, group, producer), 120, "every produced message committed")
        finished = time.monotonic() - started
        # The restarted worker's beat runs the periodic tasks: the lag collector has sampled since.
        worker_back = wait_for(
            lambda: SourceStatus.objects.filter(name="kafka", last_success__gt=strikes["celery"][1]).exists(),
            90,
            "a periodic task run by the restarted Celery worker",
        )
        # Every call without a partner settled, by the worker's beat (a run killed mid-way rolled back).
        settled = wait_for(lambda: not Span.objects.filter(paired=False).exists(), 120, "every unpaired call settled")
        # The page's socket, reconnected after daphne's restart, reaches the final counts. The unpaired
        # calls are older than its window.
        shown = {edge: figures for edge, figures in expected.edges.items() if edge[1] != UNPAIRED_PEER}
        try:
            live_final = wait_for(lambda: live_edges(page) == shown, 90, "the live page's final counts")
        except AssertionError as error:
            raise AssertionError(f"{error}: it shows {live_edges(page)}, the input {shown}") from None
        seq, view = page.state()
        reading = topology_view(Window.from_params(view["window"], view["until"]))
        assert all(process.alive() for process in (consumer, worker, broadcaster, web))
    finally:
        for page in pages:
            page.close()
        producer.stop()
        for process in (consumer, worker, broadcaster, web):
            process.stop()

    result = observed()
    duplicates = IngestRollup.objects.aggregate(n=Sum("duplicate_spans"))["n"] or 0
    daphne_at = strikes["daphne"][0]
    # Connections whose first message (the snapshot) came after daphne's restart.
    reconnected = [
        number
        for number, connection in enumerate(page.connections, 1)
        if connection.received and connection.received[0].at - started > daphne_at
    ]
    print(f"[kill-restart] in:  {expected.summary()} messages={len(stream.messages)} over {PRODUCE_SECONDS} s")
    print(f"[kill-restart] out: {result.summary()} redelivered_duplicates={duplicates}")
    for number, (moment, at, stored, back) in enumerate(kills, 1):
        print(
            f"[kill-restart] kill {number} at {at} s ({moment}): {stored} spans stored; "
            f"restarted consumer storing again after {back} s"
        )
    print(
        f"[kill-restart] Celery worker killed at {strikes['celery'][0]} s with {strikes['celery'][2]} spans "
        f"unpaired, and started again; once every message was committed, its beat had run the lag collector "
        f"again {worker_back:.1f} s later, and every unpaired span was settled {settled:.1f} s after that"
    )
    print(
        f"[kill-restart] daphne restarted at {daphne_at} s (listening again after {strikes['daphne'][2]} s); the "
        f"page's socket: {len(page.connections)} connections, {len(page.failed_attempts)} refused, resyncs "
        f"{len(page.resyncs)}; final counts on it {live_final:.1f} s after the commits, at seq {seq}"
    )
    print(f"[kill-restart] every message committed {finished:.1f} s after the start")
    assert result == expected
    assert worker.starts == 2 and web.starts == 2 and consumer.starts == KILLS + 1
    assert reconnected, "the page's socket connected again after daphne's restart"
    # The socket's view, by snapshot and deltas, is the server's reading of the same window.
    assert view["edges"] == plain_edges(reading)


def produced(producer, count):
    """A condition for ``wait_for``: the producer has sent ``count`` messages."""
    return lambda: producer.sent >= count


def strike(name, worker, web, started):
    """kill -9 of the Celery worker, or a restart of daphne on its port: (when, the wall clock then, and
    the spans unpaired at the kill, or the seconds until daphne listened again)."""
    at, wall = round(time.monotonic() - started, 1), timezone.now()
    if name == "celery":
        worker.kill()
        unpaired = Span.objects.filter(paired=False).count()
        worker.start()
        return at, wall, unpaired
    web.stop()
    begun = time.monotonic()
    web.start()
    return at, wall, round(time.monotonic() - begun, 1)


def live_edges(page):
    """The edges' (calls, errors) as the page's view holds them."""
    held = page.state()
    if held is None:
        return None
    view = held[1]
    edges = {}
    for edge in view["edges"]:
        calls = edge["count"]
        edges[(edge["source"], edge["target"])] = (calls, round(edge["error_rate"] * calls))
    return edges


def plain_edges(reading):
    return plain(reading)["edges"]
