"""Issue 14, item 2: Redis (the channel layer, Celery's broker and the live layer's marks) freezes while
spans flow and a live page is open, then comes back.

A Redis of this test's own is frozen with SIGSTOP for OUTAGE_SECONDS: connections stay open and
nothing answers, the worst case for a client (a refused connection fails at once; a silent one waits
for its timeout). daphne, ``manage.py broadcast`` and the span consumer all use it. Pages and the API
must keep answering 200 meanwhile, since they read PostgreSQL only; every span must still be stored
once; and after SIGCONT an open live page (its socket reconnecting as static/js/live.js does) gets a
snapshot and deltas again.
"""

import os
import signal
import statistics
import time

import pytest

from demo.embedded import EmbeddedRedis
from tests.chaos.harness import (
    OUTAGE_SECONDS,
    SPANS,
    PacedProducer,
    Process,
    WebServer,
    all_committed,
    create_topics,
    database_url,
    rng,
    session_cookie,
    span_consumer,
    timed_get,
    wait_for,
)
from tests.chaos.stream import SPANS_PER_TRACE, build, more_spans_than, observed
from tests.chaos.websocket import LivePage
from topology.models import Span

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

PRODUCE_SECONDS = OUTAGE_SECONDS + 20
PAGES = ("/", "/routes/", "/balancers/", "/api/topology/", "/api/routes/", "/api/ingest/")
LIVE = "/ws/live/topology/?window=300"


def test_redis_frozen_leaves_pages_answering_and_live_updates_resume_after(kafka_bootstrap, run_id, tmp_path):
    chance = rng("redis")
    redis = EmbeddedRedis(log_dir=tmp_path).start()
    topics = {f"chaos-otlp-{run_id}": "otlp_proto", f"chaos-zipkin-{run_id}": "zipkin_json"}
    stream = build(SPANS // SPANS_PER_TRACE, *topics)
    create_topics(kafka_bootstrap, list(topics))
    group = f"chaos-{run_id}"
    env = {"DATABASE_URL": database_url(), "REDIS_URL": redis.url, "CHANNELS_PREFIX": group}
    consumer = span_consumer(kafka_bootstrap, topics, group, database_url(), redis.url, tmp_path)
    broadcaster = Process("broadcast", ["manage.py", "broadcast"], {**env, "LOG_LEVEL": "WARNING"}, tmp_path)
    web = WebServer(env, tmp_path)
    producer = PacedProducer(kafka_bootstrap, stream.messages, PRODUCE_SECONDS)
    cookie = session_cookie()
    frozen = False
    pages = []
    consumer.start()
    broadcaster.start()
    web.start()
    producer.start()
    try:
        wait_for(more_spans_than(0), 90, "the consumer stores spans")
        page = LivePage(web.url.replace("http", "ws") + LIVE, cookie)
        pages.append(page)
        page.wait_for_message("snapshot", 30)
        page.wait_for_message("delta", 30)  # traffic flows: the open page is being updated
        for path in PAGES:
            assert timed_get(web.url + path, cookie)[0] == 200, path
        time.sleep(chance.uniform(0, 2))  # a random point of the traffic, not a synchronisation

        os.kill(redis.process.pid, signal.SIGSTOP)
        frozen, frozen_at = True, time.monotonic()
        spans_at_freeze = Span.objects.count()
        during = []
        while time.monotonic() - frozen_at < OUTAGE_SECONDS:
            for path in PAGES:
                status, _body, seconds = timed_get(web.url + path, cookie, timeout=OUTAGE_SECONDS + 30)
                during.append((path, status, seconds))
        stored_during = Span.objects.count() - spans_at_freeze

        os.kill(redis.process.pid, signal.SIGCONT)
        frozen, resumed_at = False, time.monotonic()
        # Live again: a delta after SIGCONT, on a socket that began with its snapshot (a new socket, when
        # the freeze cost the page its connection).
        delta = page.wait_for_message("delta", 90, after=resumed_at)
        snapshot = next(item for item in page.messages("snapshot") if item.connection == delta.connection)
        producer.finish(timeout=PRODUCE_SECONDS + 60)
        expected = stream.expected
        # Offsets are committed only once their spans are: when every message is committed, every span
        # must be in the database, and none can be delivered again (and counted twice) after this.
        wait_for(lambda: all_committed(kafka_bootstrap, group, producer), 120, "every produced message committed")
        assert consumer.alive() and broadcaster.alive() and web.alive(), "every process rode the outage out"
        assert (consumer.starts, broadcaster.starts, web.starts) == (1, 1, 1)
    finally:
        if frozen:
            os.kill(redis.process.pid, signal.SIGCONT)
        for page in pages:
            page.close()
        producer.stop()
        for process in (consumer, broadcaster, web):
            process.stop()
        redis.stop()

    result = observed()
    pauses = consumer.log().count("live updates paused")
    print(f"[redis] in:  {expected.summary()} messages={len(stream.messages)}")
    print(f"[redis] out: {result.summary()}")
    print(
        f"[redis] frozen {OUTAGE_SECONDS:.0f} s with {spans_at_freeze} spans stored; {stored_during} more stored "
        f"meanwhile; the consumer paused its live marks {pauses} times"
    )
    for path in PAGES:
        times = [seconds * 1000 for p, _, seconds in during if p == path]
        statuses = sorted({status for p, status, _ in during if p == path})
        print(
            f"[redis] during the freeze GET {path}: {len(times)} requests, statuses {statuses}, "
            f"median {statistics.median(times):.0f} ms, slowest {max(times):.0f} ms"
        )
    first = page.connections[0]
    lost = (
        f"{first.closed_at - frozen_at:.1f} s into the freeze (code {first.close_code})" if first.closed_at else "never"
    )
    print(
        f"[redis] the page's socket was lost {lost}; {len(page.failed_attempts)} reconnections refused "
        f"during the freeze; {len(page.connections)} connections in all"
    )
    print(
        f"[redis] after SIGCONT: the page live again in {delta.at - resumed_at:.1f} s: a delta (seq "
        f"{delta.message['seq']}) on connection {delta.connection}, whose snapshot came "
        f"{snapshot.at - resumed_at:+.1f} s from SIGCONT"
    )
    assert {status for _, status, _ in during} == {200}
    assert {path for path, _, _ in during} == set(PAGES)
    assert stored_during > 0, "spans kept being stored while Redis was frozen"
    assert delta.message["seq"] > snapshot.message["seq"]
    assert result == expected
