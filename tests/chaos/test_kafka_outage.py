"""Issue 14, item 2: the Kafka broker stops answering while spans are produced, then comes back.

The broker is a Tansu of this test's own, frozen with SIGSTOP for OUTAGE_SECONDS: its connections
stay open but nothing answers, as with a hung broker or a partitioned network (Tansu keeps its data
in memory, so a restart would lose the stream). The "kafka" source must turn stale, with the reason,
while it lasts, and fresh again after; the span consumer must carry on without a restart, and every
span be stored once.
"""

import os
import signal
import threading
import time
from functools import partial

import pytest
from django.db import connections

from collectors.lag import sample_consumer_lag
from demo.embedded import EmbeddedKafka
from tests.chaos.harness import (
    OUTAGE_SECONDS,
    SPANS,
    PacedProducer,
    all_committed,
    create_topics,
    database_url,
    rng,
    span_consumer,
    wait_for,
)
from tests.chaos.stream import SPANS_PER_TRACE, build, more_spans_than, observed
from topology.models import SourceStatus, Span

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

PRODUCE_SECONDS = OUTAGE_SECONDS + 20
LAG_PERIOD_SECONDS = 5.0  # beat's schedule of collectors.sample_consumer_lag (dashboard/celery.py)


class LagSampler(threading.Thread):
    """collectors.sample_consumer_lag every LAG_PERIOD_SECONDS, as the beat worker runs it."""

    def __init__(self) -> None:
        super().__init__(name="chaos-lag-sampler", daemon=True)
        self.stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                sample_consumer_lag()
                self.stopping.wait(LAG_PERIOD_SECONDS)
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=60)


def kafka_status() -> SourceStatus | None:
    return SourceStatus.objects.filter(name="kafka").first()


def test_kafka_broker_frozen_marks_the_source_stale_then_recovers_without_losing_a_span(
    settings, client, django_user_model, redis_url, run_id, tmp_path
):
    chance = rng("kafka")
    broker = EmbeddedKafka(log_dir=tmp_path).start()
    bootstrap = broker.bootstrap_servers
    settings.KAFKA_BOOTSTRAP_SERVERS = [bootstrap]
    group = f"chaos-{run_id}"
    settings.LAG_CONSUMER_GROUPS = [group]
    topics = {f"chaos-otlp-{run_id}": "otlp_proto", f"chaos-zipkin-{run_id}": "zipkin_json"}
    stream = build(SPANS // SPANS_PER_TRACE, *topics)
    create_topics(bootstrap, list(topics))
    consumer = span_consumer(bootstrap, topics, group, database_url(), redis_url, tmp_path)
    producer = PacedProducer(bootstrap, stream.messages, PRODUCE_SECONDS)
    sampler = LagSampler()
    frozen = False
    consumer.start()
    producer.start()
    sampler.start()
    try:
        wait_for(more_spans_than(0), 90, "the consumer stores spans")
        wait_for(lambda: (s := kafka_status()) is not None and not s.is_stale, 60, "a lag sample")
        time.sleep(chance.uniform(0, 2))  # a random point of the traffic, not a synchronisation

        os.kill(broker.process.pid, signal.SIGSTOP)
        frozen, frozen_at = True, time.monotonic()
        spans_at_freeze, sent_at_freeze = Span.objects.count(), producer.sent
        stale_after = wait_for(lambda: kafka_status().is_stale, OUTAGE_SECONDS + 30, "the kafka source stale")
        reasons = set()
        while time.monotonic() - frozen_at < OUTAGE_SECONDS:
            status = kafka_status()
            assert status.is_stale, "the kafka source looked fresh while the broker was frozen"
            reasons.add(status.stale_reason)
            assert consumer.alive(), consumer.log()[-3000:]
            time.sleep(0.5)  # a sampling period, not a synchronisation
        backlog = producer.sent - sent_at_freeze
        spans_at_resume = Span.objects.count()
        client.force_login(django_user_model.objects.create_user("sre"))
        shown = next(source for source in client.get("/api/sources/").json()["sources"] if source["name"] == "kafka")

        os.kill(broker.process.pid, signal.SIGCONT)
        frozen, resumed_at, sent_at_resume = False, time.monotonic(), producer.sent
        fresh_after = wait_for(lambda: not kafka_status().is_stale, 60, "the kafka source fresh again")
        wait_for(more_spans_than(spans_at_resume), 120, "the consumer storing again")
        storing_after = time.monotonic() - resumed_at
        backlog_committed = partial(all_committed, bootstrap, group, producer, sent_at_resume)
        wait_for(backlog_committed, 120, "every message sent before the recovery committed")
        drained = time.monotonic() - resumed_at
        producer.finish(timeout=PRODUCE_SECONDS + 60)
        expected = stream.expected
        # Offsets are committed only once their spans are: when every message is committed, every span
        # must be in the database, and none can be delivered again (and counted twice) after this.
        wait_for(lambda: all_committed(bootstrap, group, producer), 120, "every produced message committed")
        assert consumer.alive() and consumer.starts == 1, "the consumer was not restarted: it recovered by itself"
    finally:
        if frozen:
            os.kill(broker.process.pid, signal.SIGCONT)
        producer.stop()
        sampler.stop()
        consumer.stop()
        broker.stop()

    result = observed()
    print(f"[kafka] in:  {expected.summary()} messages={len(stream.messages)}")
    print(f"[kafka] out: {result.summary()}")
    print(
        f"[kafka] broker frozen {OUTAGE_SECONDS:.0f} s with {spans_at_freeze} spans stored; source stale after "
        f"{stale_after:.1f} s; {backlog} messages produced meanwhile; the span consumer logged "
        f"{consumer.log().count('Span consumer: kafka failed')} Kafka failures"
    )
    for reason in sorted(reasons):
        print(f"[kafka] stale reason: {reason}")
    print(
        f"[kafka] after SIGCONT: source fresh in {fresh_after:.1f} s, consumer storing in {storing_after:.1f} s, "
        f"the {sent_at_resume} messages sent by then all stored in {drained:.1f} s"
    )
    assert result == expected
    # What the pages show while it lasts: stale, since when, and the collector's own words.
    assert shown["stale"] is True and shown["stale_since"] is not None and shown["stale_reason"] in reasons
    assert all(reason.startswith(("Consumer lag: ", "Span consumer: ")) for reason in reasons), reasons
