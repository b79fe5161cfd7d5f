"""Issue 14, item 2: PostgreSQL goes away while spans flow, and comes back.

The span consumer and daphne reach the database through a TCP proxy that the test cuts (listener and
every connection closed) for OUTAGE_SECONDS: the shared PostgreSQL itself is never touched. The
consumer must back off without committing an offset, then catch up by itself, with every span stored
once; a page asked for during the outage gets a 503 saying the database is unavailable.
"""

import time
from functools import partial

import pytest
from django.db import connection

from tests.chaos.harness import (
    OUTAGE_SECONDS,
    SPANS,
    PacedProducer,
    WebServer,
    all_committed,
    committed_offsets,
    create_topics,
    database_url,
    rng,
    session_cookie,
    span_consumer,
    timed_get,
    wait_for,
)
from tests.chaos.proxy import TcpProxy
from tests.chaos.stream import SPANS_PER_TRACE, build, more_spans_than, observed
from topology.models import Span

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

# Traffic before, during and after the outage.
PRODUCE_SECONDS = OUTAGE_SECONDS + 20
BACKOFF_LOG = "Span consumer: database failed"
PAGES = ("/", "/routes/", "/api/topology/", "/api/ingest/")


def test_postgresql_outage_backs_off_without_committing_then_stores_every_span_once(
    kafka_bootstrap, redis_url, run_id, tmp_path
):
    chance = rng("postgresql")
    topics = {f"chaos-otlp-{run_id}": "otlp_proto", f"chaos-zipkin-{run_id}": "zipkin_json"}
    stream = build(SPANS // SPANS_PER_TRACE, *topics)
    create_topics(kafka_bootstrap, list(topics))
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)).start()
    through_proxy = database_url(host="127.0.0.1", port=proxy.port)
    group = f"chaos-{run_id}"
    consumer = span_consumer(kafka_bootstrap, topics, group, through_proxy, redis_url, tmp_path)
    web = WebServer(
        {"DATABASE_URL": through_proxy, "REDIS_URL": redis_url, "CHANNELS_PREFIX": f"chaos-{run_id}"}, tmp_path
    )
    producer = PacedProducer(kafka_bootstrap, stream.messages, PRODUCE_SECONDS)
    cookie = session_cookie()
    consumer.start()
    web.start()
    producer.start()
    try:
        wait_for(more_spans_than(0), 90, "the consumer stores spans")
        for path in PAGES:
            assert timed_get(web.url + path, cookie)[0] == 200, path
        time.sleep(chance.uniform(0, 2))  # a random point of the traffic, not a synchronisation

        cut_at = time.monotonic()
        dropped = proxy.cut()
        wait_for(lambda: BACKOFF_LOG in consumer.log(), 60, "the consumer noticing the outage")
        # From its first failure on, the consumer must neither store nor commit anything.
        spans_at_failure = Span.objects.count()
        committed_at_failure = committed_offsets(kafka_bootstrap, group)
        during = [(path, *timed_get(web.url + path, cookie)) for path in PAGES]
        sent_at_failure = producer.sent
        while time.monotonic() - cut_at < OUTAGE_SECONDS:
            assert Span.objects.count() == spans_at_failure
            assert committed_offsets(kafka_bootstrap, group) == committed_at_failure
            time.sleep(0.5)  # a sampling period, not a synchronisation
        backlog = producer.sent - sent_at_failure
        failures = consumer.log().count(BACKOFF_LOG)

        proxy.restore()
        restored_at, sent_at_restore = time.monotonic(), producer.sent
        first_page_after = wait_for(lambda: timed_get(web.url + "/", cookie)[0] == 200, 60, "a page answering again")
        wait_for(more_spans_than(spans_at_failure), 120, "the consumer storing again")
        first_span_after = time.monotonic() - restored_at
        backlog_committed = partial(all_committed, kafka_bootstrap, group, producer, sent_at_restore)
        wait_for(backlog_committed, 120, "every message sent before the recovery committed")
        drained = time.monotonic() - restored_at
        producer.finish(timeout=PRODUCE_SECONDS + 60)
        expected = stream.expected
        # Offsets are committed only once their spans are: when every message is committed, every span
        # must be in the database, and none can be delivered again (and counted twice) after this.
        wait_for(lambda: all_committed(kafka_bootstrap, group, producer), 120, "every produced message committed")
        assert consumer.alive() and consumer.starts == 1, "the consumer was not restarted: it recovered by itself"
    finally:
        producer.stop()
        consumer.stop()
        web.stop()
        proxy.stop()

    result = observed()
    print(f"[postgresql] in:  {expected.summary()} messages={len(stream.messages)}")
    print(f"[postgresql] out: {result.summary()}")
    first_failure = next(line for line in consumer.log().splitlines() if BACKOFF_LOG in line)
    print(
        f"[postgresql] outage {OUTAGE_SECONDS:.0f} s: {dropped} connections dropped; consumer backed off "
        f"{failures} times, stored and committed nothing; {backlog} messages produced meanwhile"
    )
    print(f"[postgresql] the consumer's first failure: {first_failure[:200]}")
    for path, status, body, seconds in during:
        print(f"[postgresql] during the outage GET {path}: {status} in {seconds * 1000:.0f} ms: {body[:80]!r}")
    print(
        f"[postgresql] after restore: consumer storing in {first_span_after:.1f} s, pages 200 in "
        f"{first_page_after:.1f} s, the {sent_at_restore} messages sent by then all stored in {drained:.1f} s"
    )
    assert [(path, status) for path, status, _, _ in during] == [(path, 503) for path in PAGES]
    for path, _, body, _ in during:
        assert "database is unavailable" in body, (path, body[:500])
    assert 2 <= failures <= 10, "one retry per backoff period, and at least one retry"
    assert backlog > 0, "messages waited in Kafka during the outage: there was something to lose"
    assert result == expected
