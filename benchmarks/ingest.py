"""Span ingestion benchmark: OTLP messages of 50 spans through a real broker into the database.

Prints, over the same messages in one run: the raw consume rate of the same Kafka client with no
processing, the decode-only ceiling (consume, decode, discard), end to end with decoding and storing
one after the other and pipelined (the next batch decoded while the current one is stored), each as a
ratio of the decode-only ceiling, N processes in one group, and the peak RSS. Figures are printed,
never asserted.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python -m benchmarks.ingest --spans 200000
"""

import argparse
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")

import django

django.setup()

from django.db import connection  # noqa: E402
from kafka import KafkaConsumer  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from demo.embedded import EmbeddedKafka  # noqa: E402
from tests.kafka_helpers import FAST_GROUP, create_topic, produce, span_consumer  # noqa: E402
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf  # noqa: E402
from topology.models import (  # noqa: E402
    EdgeRollup,
    IngestRollup,
    InstanceRollup,
    RouteRollup,
    Span,
    StreamPosition,
)

SPANS_PER_MESSAGE = 50
MESSAGING = {"messaging.system": "kafka", "messaging.destination.name": "order-events"}


def template_message():
    """Ten five-span traces (gateway → orders, and a Kafka flow to inventory) from the OpenTelemetry SDK."""
    traces = OtelTraces()
    for i in range(10):
        start = now_ns()
        root = traces.span(
            "gateway",
            f"gateway-{i % 2}",
            "GET /api/orders",
            "server",
            start,
            30,
            attributes={"http.request.method": "GET", "http.route": "/api/orders"},
        )
        call = traces.span(
            "gateway",
            f"gateway-{i % 2}",
            "GET",
            "client",
            start + 10**6,
            20,
            parent=root,
            attributes={"http.request.method": "GET", "peer.service": "orders"},
        )
        served = traces.span(
            "orders",
            f"orders-{i % 3}",
            "GET /orders",
            "server",
            start + 2 * 10**6,
            15,
            parent=call,
            attributes={"http.request.method": "GET", "http.response.status_code": 200},
        )
        send = traces.span(
            "orders",
            f"orders-{i % 3}",
            "order-events publish",
            "producer",
            start + 3 * 10**6,
            1,
            parent=served,
            attributes=MESSAGING,
        )
        traces.span(
            "inventory",
            "inventory-0",
            "order-events process",
            "consumer",
            start + 8 * 10**6,
            2,
            parent=send,
            attributes=MESSAGING,
        )
    template = ExportTraceServiceRequest()
    template.ParseFromString(otlp_protobuf(traces.finished()))
    return template


def messages(count):
    """``count`` copies of the template, each with fresh trace ids, so that every span is new."""
    template = template_message()
    for _ in range(count):
        request = ExportTraceServiceRequest()
        request.CopyFrom(template)
        fresh = {}
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span.trace_id = fresh.setdefault(span.trace_id, uuid.uuid4().bytes)
        yield request.SerializeToString()


def raw_consume(bootstrap, topic, expected_messages):
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=1000,
        **FAST_GROUP,
    )
    seen, started, before_clock = 0, None, 0
    while seen < expected_messages:
        batch = consumer.poll(timeout_ms=500)
        seen += sum(len(records) for records in batch.values())
        if batch and started is None:
            started, before_clock = time.perf_counter(), seen  # the group join and its batch are not measured
    elapsed = time.perf_counter() - started
    consumer.close()
    return (expected_messages - before_clock) * SPANS_PER_MESSAGE / elapsed


def forget_what_was_counted():
    """Back to an empty database, so that the next run counts the same messages from the start."""
    for model in (Span, StreamPosition, EdgeRollup, InstanceRollup, RouteRollup, IngestRollup):
        model.objects.all().delete()


def decode_only(bootstrap, topic, expected_spans):
    """The ceiling of one consumer process: what it decodes a second when nothing is stored."""
    consumer = span_consumer(bootstrap, {topic: "otlp_proto"}, max_poll_interval_ms=15_000, session_timeout_ms=10_000)
    decoded, started, before_clock = 0, None, 0
    while decoded < expected_spans:
        polled = consumer.consumer.poll(timeout_ms=500)
        if started is None and polled:
            started, before_clock = time.perf_counter(), decoded
        for _, result in consumer._decode_all(polled):
            decoded += len(getattr(result, "spans", ()))
    elapsed = time.perf_counter() - started
    consumer.close()
    return (expected_spans - before_clock) / elapsed


def ingest(bootstrap, topic, expected_spans, pipelined):
    # Long enough for a batch to be stored; Tansu makes the join wait this long once, before the clock.
    consumer = span_consumer(
        bootstrap,
        {topic: "otlp_proto"},
        pipelined=pipelined,
        max_poll_interval_ms=15_000,
        session_timeout_ms=10_000,
    )
    stored, started, before_clock = 0, None, 0
    while stored < expected_spans:
        if started is None and consumer.consumer.assignment():
            started, before_clock = time.perf_counter(), stored
        stored += consumer.poll_once(500)
    elapsed = time.perf_counter() - started
    consumer.close()
    # The poll that joins the group also stores its batch before the clock starts: not counted.
    return (expected_spans - before_clock) / elapsed


def ingest_in_processes(bootstrap, topic, expected_spans, workers):
    """The scale-out case: ``workers`` span consumers in one group, each its own process."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TRACE_TOPICS": f"{topic}:otlp_proto",
        "KAFKA_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:6]}",
        "KAFKA_MAX_POLL_INTERVAL_MS": "15000",
    }
    root = Path(__file__).resolve().parent.parent
    processes = [
        subprocess.Popen([sys.executable, "manage.py", "consume_spans"], cwd=root, env=env) for _ in range(workers)
    ]
    try:
        started, first = None, 0
        while True:
            stored = Span.objects.count()
            if started is None and stored:
                started, first = time.perf_counter(), stored
            if stored >= expected_spans:
                return (expected_spans - first) / (time.perf_counter() - started)
            time.sleep(0.1)
    finally:
        for process in processes:
            process.terminate()
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument(
        "--workers", type=int, default=2, help="Consumer processes for the scale-out figure (0: skip it)."
    )
    args = parser.parse_args()
    count = args.spans // SPANS_PER_MESSAGE
    spans = count * SPANS_PER_MESSAGE

    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        with EmbeddedKafka() as broker:
            topic = "bench-otlp"
            create_topic(broker.bootstrap_servers, topic, partitions=6)
            produce(broker.bootstrap_servers, topic, messages(count))
            raw_rate = raw_consume(broker.bootstrap_servers, topic, count)
            decode_rate = decode_only(broker.bootstrap_servers, topic, spans)
            serial_rate = ingest(broker.bootstrap_servers, topic, spans, pipelined=False)
            forget_what_was_counted()
            ingest_rate = ingest(broker.bootstrap_servers, topic, spans, pipelined=True)
            scaled_rate = None
            if args.workers and connection.vendor == "postgresql":
                forget_what_was_counted()
                scaled_rate = ingest_in_processes(broker.bootstrap_servers, topic, spans, args.workers)
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)
    print(f"database      {connection.vendor}")
    print(f"spans         {spans} in {count} OTLP messages of {SPANS_PER_MESSAGE}")
    print(f"raw consume   {raw_rate:,.0f} spans/s (same client, same messages, no processing)")
    print(f"decode only   {decode_rate:,.0f} spans/s (consume, decode, discard: the ceiling of one process)")
    print(
        f"serial        {serial_rate:,.0f} spans/s end to end, decode then store ({serial_rate / decode_rate:.2f} of decode only)"
    )
    print(f"pipelined     {ingest_rate:,.0f} spans/s end to end ({ingest_rate / decode_rate:.2f} of decode only)")
    print(f"pipelined/serial {ingest_rate / serial_rate:.2f}")
    if scaled_rate:
        print(f"{args.workers} processes   {scaled_rate:,.0f} spans/s end to end (one consumer group, same messages)")
    print(f"peak RSS      {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
