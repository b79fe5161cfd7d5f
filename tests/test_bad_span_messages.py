"""Bad messages are dead-lettered by reason, with where they came from; the partition keeps flowing."""

import json
import time

import pytest
from django.db.models import Count

from tests.kafka_helpers import consume_until, create_topic, produce, span_consumer
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf, zipkin_json, zipkin_span
from topology.ingestion import store_spans
from topology.models import DeadLetter, Span

pytestmark = pytest.mark.django_db(transaction=True)


def zipkin(**overrides):
    span = {
        "traceId": "4e441824ec2b6a44ffdc9bb9a6453df3",
        "id": "ffdc9bb9a6453df3",
        "name": "get",
        "kind": "SERVER",
        "timestamp": int(time.time() * 1e6),
        "duration": 1200,
        "localEndpoint": {"serviceName": "api"},
    }
    span.update(overrides)
    return json.dumps([span]).encode()


BAD_MESSAGES = {
    "not_decodable": b"\xff\xfe definitely not json",
    "wrong_shape": b'{"spans": "not a list"}',
    "too_large": b"[" + b" " * (300 * 1024) + b"]",
    "bad_id": zipkin(traceId="<script>alert(1)</script>"),
    "bad_timestamp": zipkin(timestamp=int((time.time() + 86400 * 365) * 1e6)),
    "missing_field": zipkin(localEndpoint={"ipv4": "10.0.0.9"}),
    "too_many_attributes": zipkin(tags={f"k{i}": "v" for i in range(5000)}),
}
WRONG_TYPES = zipkin(traceId=123, id="bbbbbbbbbbbbbbbb")


def test_each_kind_of_bad_message_is_dead_lettered_by_reason_and_good_spans_still_arrive(
    kafka_bootstrap, topic_name, settings
):
    settings.SPAN_MAX_MESSAGE_BYTES = 200 * 1024
    old = zipkin(timestamp=int((time.time() - 86400 * 30) * 1e6), id="aaaaaaaaaaaaaaaa")
    good = zipkin_json([zipkin_span("api", "get /ok", "server", "abcdef0123456789", "0123456789abcdef")])
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [*BAD_MESSAGES.values(), old, WRONG_TYPES, good])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "auto"})
    assert consume_until(consumer, lambda: Span.objects.filter(name="get /ok").exists())
    consumer.close()

    by_reason = dict(DeadLetter.objects.values_list("reason").annotate(n=Count("id")))
    assert by_reason == {**dict.fromkeys(BAD_MESSAGES, 1), "bad_timestamp": 2, "wrong_shape": 2}
    letter = DeadLetter.objects.get(reason="bad_id")
    assert (letter.topic, letter.partition, letter.offset) == (topic_name, 0, 3)
    assert letter.payload_head.startswith('[{"traceId": "<script>')
    assert len(DeadLetter.objects.get(reason="too_large").payload_head) <= 1024


def test_one_bad_span_is_dead_lettered_while_the_rest_of_its_message_is_kept(kafka_bootstrap, topic_name):
    traces = OtelTraces()
    start = now_ns()
    traces.span("api", "api-1", "GET /fine", "server", start, 10)
    traces.span("api", "api-1", "GET /future", "server", start + 3600 * 10**9, 10)
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [otlp_protobuf(traces.finished())])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "otlp_proto"})
    assert consume_until(consumer, lambda: DeadLetter.objects.exists() and Span.objects.exists())
    consumer.close()

    assert list(Span.objects.values_list("name", flat=True)) == ["GET /fine"]
    assert DeadLetter.objects.get().reason == "bad_timestamp"


def test_spans_older_than_a_shorter_span_retention_are_refused_as_bad_timestamp(kafka_bootstrap, topic_name, settings):
    settings.SPAN_RETENTION_HOURS = 2
    hour = 3600 * 1e6
    kept = zipkin(timestamp=int(time.time() * 1e6 - 1.5 * hour), id="aaaaaaaaaaaaaaaa")
    too_old = zipkin(timestamp=int(time.time() * 1e6 - 2.5 * hour), id="bbbbbbbbbbbbbbbb")
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [kept, too_old])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "zipkin_json"})
    assert consume_until(consumer, lambda: DeadLetter.objects.exists() and Span.objects.exists())
    consumer.close()

    assert list(Span.objects.values_list("span_id", flat=True)) == ["aaaaaaaaaaaaaaaa"]
    assert list(DeadLetter.objects.values_list("reason", "offset")) == [("bad_timestamp", 1)]


def test_nul_bytes_and_markup_in_names_are_stored_as_plain_text(kafka_bootstrap, topic_name):
    hostile = "<img src=x onerror=alert(1)>\x00svc"
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [zipkin(localEndpoint={"serviceName": hostile}, tags={"k\x00": "v\x00"})])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "zipkin_json"})
    assert consume_until(consumer, lambda: Span.objects.exists())
    consumer.close()

    span = Span.objects.get()
    assert span.service.name == "<img src=x onerror=alert(1)>svc"
    assert span.attributes == {"k": "v"}


def test_a_message_that_breaks_a_decoder_is_dead_lettered_and_the_partition_flows_on(
    kafka_bootstrap, topic_name, monkeypatch
):
    from collectors import kafka_spans

    real_decode = kafka_spans.decode

    def decode(payload, *args):
        if payload.startswith(b"poison"):
            raise RecursionError("a decoder bug nobody foresaw")
        return real_decode(payload, *args)

    monkeypatch.setattr(kafka_spans, "decode", decode)
    good = zipkin_json([zipkin_span("api", "get /after", "server", "abcdef0123456789", "0123456789abcdef")])
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [b"poison pill", good])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "auto"})
    assert consume_until(consumer, lambda: Span.objects.filter(name="get /after").exists())
    consumer.close()

    letter = DeadLetter.objects.get()
    assert (letter.reason, letter.offset, letter.payload_head) == ("wrong_shape", 0, "poison pill")
    assert "RecursionError" in letter.detail


def test_text_no_database_can_take_is_stored_with_the_replacement_character(kafka_bootstrap, topic_name):
    # A lone surrogate is valid JSON (\ud800) but no UTF-8: the decoder replaces it, the span is kept.
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [zipkin(localEndpoint={"serviceName": "api\ud800"}, tags={"note": "\ud800"})])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "zipkin_json"})
    assert consume_until(consumer, lambda: Span.objects.exists())
    consumer.close()

    assert not DeadLetter.objects.exists()
    assert Span.objects.get().service.name == "api\ufffd"


def test_a_message_the_database_refuses_is_isolated_from_its_batch_as_unstorable(
    kafka_bootstrap, topic_name, monkeypatch
):
    """Whatever the decoders let through that the database then refuses (here: a refusal injected for one
    span), only its message is dead-lettered; the rest of the batch is stored."""
    from django.db import DataError

    from collectors import kafka_spans

    def refusing(records, **counts):
        records = list(records)
        if any(record.name == "get /poison" for record in records):
            raise DataError("value refused by the database")
        return store_spans(records, **counts)

    monkeypatch.setattr(kafka_spans, "store_spans", refusing)
    first = zipkin_json([zipkin_span("api", "get /first", "server", "abcdef0123456789", "0123456789abcdef")])
    poison = zipkin_json([zipkin_span("api", "get /poison", "server", "abcdef0123456787", "0123456789abcded")])
    last = zipkin_json([zipkin_span("api", "get /last", "server", "abcdef0123456788", "0123456789abcdee")])
    create_topic(kafka_bootstrap, topic_name, partitions=1)
    produce(kafka_bootstrap, topic_name, [first, poison, last])

    consumer = span_consumer(kafka_bootstrap, {topic_name: "zipkin_json"})
    assert consume_until(consumer, lambda: Span.objects.filter(name="get /last").exists())
    consumer.close()

    letter = DeadLetter.objects.get()
    assert (letter.reason, letter.offset) == ("unstorable", 1)
    assert "value refused by the database" in letter.detail
    assert sorted(Span.objects.values_list("name", flat=True)) == ["get /first", "get /last"]
