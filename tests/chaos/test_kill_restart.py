"""Issue 14, item 1: the span consumer killed (kill -9) three times while traffic flows, and restarted
each time, loses no span and counts none twice."""

import time

import pytest
from django.db.models import Sum

from tests.chaos.harness import (
    SPANS,
    PacedProducer,
    all_committed,
    consumer_in_transaction,
    create_topics,
    database_url,
    rng,
    span_consumer,
    wait_for,
)
from tests.chaos.stream import SPANS_PER_TRACE, build, more_spans_than, observed
from topology.models import IngestRollup, Span

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

# Long enough for three kills and restarts while messages still arrive: a restart takes 5-8 s
# (Django, then the group join) before the new consumer stores anything.
PRODUCE_SECONDS = 36
KILLS = 3


def test_span_consumer_killed_three_times_mid_stream_stores_every_span_once(
    kafka_bootstrap, redis_url, run_id, tmp_path
):
    chance = rng("kill-restart")
    topics = {f"chaos-otlp-{run_id}": "otlp_proto", f"chaos-zipkin-{run_id}": "zipkin_json"}
    otlp_topic, zipkin_topic = topics
    stream = build(SPANS // SPANS_PER_TRACE, otlp_topic, zipkin_topic)
    create_topics(kafka_bootstrap, list(topics))
    group, application = f"chaos-{run_id}", f"chaos-consumer-{run_id}"
    consumer = span_consumer(
        kafka_bootstrap, topics, group, database_url(application_name=application), redis_url, tmp_path
    )
    producer = PacedProducer(kafka_bootstrap, stream.messages, PRODUCE_SECONDS)
    # Where each kill lands: while the consumer holds a database transaction open (its batch neither
    # stored nor acknowledged to Kafka), the moment that transaction ends (the batch stored, its
    # offsets most likely not committed yet: it comes again and must not count twice), and wherever
    # the random moment falls.
    moments = ["storing", "stored", "anywhere"]
    chance.shuffle(moments)
    expected = stream.expected
    kills = []
    started = time.monotonic()
    consumer.start()
    producer.start()
    try:
        wait_for(more_spans_than(0), 90, "the consumer stores spans after its start")
        for number, moment in enumerate(moments, 1):
            # Kill n comes once n quarters of the stream are out, so the kills spread over it.
            wait_for(produced(producer, number * len(stream.messages) // (KILLS + 1)), 120, "the stream going on")
            time.sleep(chance.uniform(0, 1.5))  # a random point of the consumer's work, not a synchronisation
            if moment in ("storing", "stored"):
                wait_for(lambda: consumer_in_transaction(application), 30, "a batch being stored", interval=0.002)
            if moment == "stored":
                wait_for(lambda: not consumer_in_transaction(application), 30, "a batch stored", interval=0.001)
            assert consumer.alive(), consumer.log()[-3000:]
            consumer.kill()
            killed_at, stored = time.monotonic(), Span.objects.count()
            assert stored < expected.spans, "the kill came after the whole stream was stored"
            consumer.start()
            back = wait_for(more_spans_than(stored), 90, "the restarted consumer stores spans")
            kills.append((moment, round(killed_at - started, 1), stored, round(back, 1)))

        producer.finish(timeout=PRODUCE_SECONDS + 60)
        # Offsets are committed only once their spans are: when every message is committed, every span
        # must be in the database, and none can be delivered again (and counted twice) after this.
        wait_for(lambda: all_committed(kafka_bootstrap, group, producer), 120, "every produced message committed")
        finished = time.monotonic() - started
    finally:
        producer.stop()
        consumer.stop()

    result = observed()
    duplicates = IngestRollup.objects.aggregate(n=Sum("duplicate_spans"))["n"] or 0
    print(f"[kill-restart] in:  {expected.summary()} messages={len(stream.messages)} over {PRODUCE_SECONDS} s")
    print(f"[kill-restart] out: {result.summary()} redelivered_duplicates={duplicates}")
    for number, (moment, at, stored, back) in enumerate(kills, 1):
        print(
            f"[kill-restart] kill {number} at {at} s ({moment}): {stored} spans stored; "
            f"restarted consumer storing again after {back} s"
        )
    print(f"[kill-restart] every message committed {finished:.1f} s after the start")
    assert result == expected


def produced(producer, count):
    """A condition for ``wait_for``: the producer has sent ``count`` messages."""
    return lambda: producer.sent >= count
