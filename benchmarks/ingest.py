"""Span ingestion benchmark: OTLP messages of 50 spans through a real broker into the database.

Prints, over the same messages in one run: the raw consume rate of the same Kafka client with no
processing, the decode-only ceiling (consume, decode, discard), end to end with decoding and storing
one after the other and pipelined (the next batch decoded while the current one is stored), and
pipelined at SPAN_KEEP_RATIO=0.1, each as a ratio of the decode-only ceiling, then the scale-out curve: 1, 2, 4 ``manage.py consume_spans``
processes in one consumer group against one PostgreSQL, with their peak RSS, where their CPU went and
what their database sessions waited on, and the bytes each stored span takes in PostgreSQL. Between
runs the database is emptied, so that every run counts the same messages from the start. Figures are
printed, never asserted.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python -m benchmarks.ingest --spans 200000
"""

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")

import django

django.setup()

import psutil  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import Sum  # noqa: E402
from django.test import override_settings  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

from demo.embedded import EmbeddedKafka  # noqa: E402
from tests.kafka_helpers import FAST_GROUP, create_topic, span_consumer  # noqa: E402
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf  # noqa: E402
from topology.models import (  # noqa: E402
    EdgeRollup,
    IngestRollup,
    InstanceRollup,
    RouteHopRollup,
    RouteRollup,
    Span,
    StreamPosition,
)
from topology.route_hops import settle_route_hops  # noqa: E402

SPANS_PER_MESSAGE = 50
# Divisible by 1, 2, 3 and 4, so that every process of the curve gets the same share of the partitions
# (with 6, four processes would get 2, 2, 1 and 1, and the run would last as long as the busiest).
PARTITIONS = 12
ROLLUP_TABLES = (EdgeRollup, InstanceRollup, RouteRollup, RouteHopRollup, IngestRollup)
MB = 1024 * 1024
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
                    # Random in all 128 bits, as the SDK's ids are: SPAN_KEEP_RATIO decides on the low 64,
                    # where a UUID4 has its fixed variant bits.
                    span.trace_id = fresh.setdefault(span.trace_id, os.urandom(16))
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


def produce_evenly(bootstrap, topic, payloads):
    """Message i to partition i mod PARTITIONS: every partition holds the same number of messages."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for i, payload in enumerate(payloads):
            producer.send(topic, payload, partition=i % PARTITIONS)
        producer.flush()
    finally:
        producer.close()


def forget_what_was_counted():
    """Back to an empty database, so that the next run counts the same messages from the start.

    PostgreSQL truncates: deleted rows would stay in the tables' files until a vacuum, and be measured
    as the next run's bytes per span.
    """
    models = (Span, StreamPosition, *ROLLUP_TABLES)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE " + ", ".join(connection.ops.quote_name(m._meta.db_table) for m in models))
    else:
        for model in models:
            model.objects.all().delete()


def counted_messages(topic):
    """Messages counted so far: the stored positions, as offsets count from 0 in a new topic."""
    return StreamPosition.objects.filter(topic=topic).aggregate(total=Sum("next_offset"))["total"] or 0


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


def other_sessions():
    """The other sessions on the benchmark's database (the workers'): pid and what each waits on."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, wait_event_type FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchall()


def scheduled(process):
    """Seconds the process's threads have run on a core, and waited for one while runnable (Linux's
    schedstat): the wait is how busy the machine is, which CPU time alone does not show."""
    on_core = waiting = 0
    try:
        for task in Path(f"/proc/{process.pid}/task").iterdir():
            try:
                fields = (task / "schedstat").read_text().split()
            except OSError:
                continue  # a thread that has just ended
            on_core, waiting = on_core + int(fields[0]), waiting + int(fields[1])
    except OSError:
        pass  # not Linux, or not visible from here (a database on another host): counted as nothing
    return on_core / 1e9, waiting / 1e9


class Curve:
    """What one run of N worker processes measured."""

    def __init__(self, workers, rate, measured, peak_rss, cpu, sessions):
        self.workers = workers
        self.rate = rate
        self.measured = measured  # the share of the messages counted while the clock ran
        self.peak_rss = peak_rss  # bytes, one per process
        # While measured, the seconds on a core of (workers, their PostgreSQL sessions, broker), the
        # workers' seconds waiting for a core, and the seconds measured.
        self.cpu = cpu
        self.sessions = sessions  # share of samples: state of a worker's database session


def ingest_in_processes(bootstrap, topic, payloads, workers, broker):
    """The scale-out case: ``workers`` ``manage.py consume_spans`` processes in one group, each its own
    process, against the benchmark's PostgreSQL database.

    Joining a group on Tansu takes up to the rebalance timeout, once per member that joins, and the
    members that join first would count the messages alone meanwhile. So the processes join on an
    empty topic of their own first (a worker opens its database session when it is first given
    partitions: the last one to open it completes the group), then the messages are produced, and the
    clock runs from the end of producing to the last message counted.
    """
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TRACE_TOPICS": f"{topic}:otlp_proto",
        "KAFKA_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:6]}",
        "KAFKA_MAX_POLL_INTERVAL_MS": "15000",
    }
    wait_for(lambda: not other_sessions(), "the last run's database sessions to close")
    root = Path(__file__).resolve().parent.parent
    processes = [
        subprocess.Popen([sys.executable, "manage.py", "consume_spans"], cwd=root, env=env) for _ in range(workers)
    ]
    watched = [psutil.Process(process.pid) for process in processes]
    peak_rss = [0] * workers

    def sample():
        for i, process in enumerate(watched):
            peak_rss[i] = max(peak_rss[i], process.memory_info().rss)
        if any(process.poll() is not None for process in processes):
            raise RuntimeError("A consume_spans process exited during the run.")
        return other_sessions()

    try:
        wait_for(lambda: len(sample()) >= workers, f"all {workers} processes to be given partitions")
        measured = [
            *watched,
            *database_processes(pid for pid, _, _ in other_sessions()),
            psutil.Process(broker.process.pid),
        ]
        produce_evenly(bootstrap, topic, payloads)
        started, first = time.perf_counter(), counted_messages(topic)
        before = [scheduled(process) for process in measured]
        states = {"active": 0, "lock": 0, "idle": 0}
        while counted_messages(topic) < len(payloads):
            for _, state, wait in sample():
                states["lock" if wait == "Lock" else "active" if state == "active" else "idle"] += 1
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        after = [scheduled(process) for process in measured]
        used = [a[0] - b[0] for a, b in zip(after, before)]  # workers, database sessions, broker
        waited = sum(a[1] - b[1] for a, b in zip(after[:workers], before[:workers]))
        samples = sum(states.values()) or 1
        return Curve(
            workers,
            (len(payloads) - first) * SPANS_PER_MESSAGE / elapsed,
            (len(payloads) - first) / len(payloads),
            peak_rss,
            (sum(used[:workers]), sum(used[workers:-1]), used[-1], waited, elapsed),
            {state: count / samples for state, count in states.items()},
        )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait()


def database_processes(pids):
    """The worker sessions' PostgreSQL processes, when the database runs on this machine: none else."""
    found = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.name().startswith("postgres"):
                found.append(process)
        except psutil.Error:
            continue
    return found


def wait_for(condition, what, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"Gave up waiting {seconds} s for {what}.")
        time.sleep(0.1)


def bytes_per_span():
    """PostgreSQL's size of the span table (rows, indexes, TOAST, over its partitions) and of each rollup
    table, per stored span."""
    spans = Span.objects.count()
    with connection.cursor() as cursor:
        sizes = {}
        for model in (Span, *ROLLUP_TABLES):
            table = model._meta.db_table
            # Over the partitions too: a partitioned table's own size is 0 (and pg_partition_tree lists
            # nothing for a plain table).
            cursor.execute(
                "SELECT coalesce(sum(pg_total_relation_size(relid)), pg_total_relation_size(%s)),"
                " coalesce(sum(pg_indexes_size(relid)), pg_indexes_size(%s)) FROM pg_partition_tree(%s)",
                [table, table, table],
            )
            total, indexes = cursor.fetchone()
            sizes[table] = (total, indexes, model.objects.count())
    return spans, sizes


def worker_counts(text):
    counts = [int(part) for part in text.split(",") if part.strip()]
    if any(count < 0 or count > PARTITIONS for count in counts):
        raise argparse.ArgumentTypeError(f"between 0 and {PARTITIONS} (the topic's partitions)")
    return [count for count in counts if count]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=[1, 2, 4],
        help="Comma-separated numbers of consume_spans processes for the scale-out curve (0: skip it).",
    )
    args = parser.parse_args()
    count = args.spans // SPANS_PER_MESSAGE
    spans = count * SPANS_PER_MESSAGE
    load_before = os.getloadavg()

    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    curve, sizes = [], None
    try:
        with EmbeddedKafka() as broker:
            topic = "bench-otlp"
            create_topic(broker.bootstrap_servers, topic, partitions=PARTITIONS)
            payloads = list(messages(count))
            produce_evenly(broker.bootstrap_servers, topic, payloads)
            raw_rate = raw_consume(broker.bootstrap_servers, topic, count)
            decode_rate = decode_only(broker.bootstrap_servers, topic, spans)
            serial_rate = ingest(broker.bootstrap_servers, topic, spans, pipelined=False)
            forget_what_was_counted()
            ingest_rate = ingest(broker.bootstrap_servers, topic, spans, pipelined=True)
            stored_at_one = Span.objects.count()
            forget_what_was_counted()
            with override_settings(SPAN_KEEP_RATIO=0.1):
                tenth_rate = ingest(broker.bootstrap_servers, topic, spans, pipelined=True)
                # Every span is stored until its trace settles; settling counts the hops and deletes the
                # dropped traces' spans, as beat's runs would a minute later.
                stored_unsettled = Span.objects.count()
                settle_started = time.perf_counter()
                while settle_route_hops(grace_seconds=0):
                    pass
                settle_seconds = time.perf_counter() - settle_started
            stored_at_tenth = Span.objects.count()
            sizes_after = "one pipelined process"
            if connection.vendor == "postgresql":
                for workers in args.workers:
                    forget_what_was_counted()
                    own_topic = f"{topic}-{workers}"
                    create_topic(broker.bootstrap_servers, own_topic, partitions=PARTITIONS)
                    curve.append(ingest_in_processes(broker.bootstrap_servers, own_topic, payloads, workers, broker))
                    sizes_after = f"{workers} processes"
                sizes = bytes_per_span()
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)
    load_after = os.getloadavg()
    print(f"database      {connection.vendor}")
    print(f"spans         {spans} in {count} OTLP messages of {SPANS_PER_MESSAGE}, {PARTITIONS} partitions")
    print(f"load average  {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end ({os.cpu_count()} cores)")
    print(f"raw consume   {raw_rate:,.0f} spans/s (same client, same messages, no processing)")
    print(f"decode only   {decode_rate:,.0f} spans/s (consume, decode, discard: the ceiling of one process)")
    print(
        f"serial        {serial_rate:,.0f} spans/s end to end, decode then store ({serial_rate / decode_rate:.2f} of decode only)"
    )
    print(f"pipelined     {ingest_rate:,.0f} spans/s end to end ({ingest_rate / decode_rate:.2f} of decode only)")
    print(f"pipelined/serial {ingest_rate / serial_rate:.2f}")
    print(
        f"SPAN_KEEP_RATIO=0.1 {tenth_rate:,.0f} spans/s end to end, pipelined ({tenth_rate / decode_rate:.2f} of"
        f" decode only, {tenth_rate / ingest_rate:.2f} of ratio 1); spans stored {stored_at_tenth:,} of"
        f" {stored_at_one:,} at ratio 1 ({stored_at_tenth / stored_at_one:.1%}: the kept traces and the exemplars)"
        f" once settled, {stored_unsettled:,} before"
    )
    print(
        f"settling      {stored_unsettled / settle_seconds:,.0f} stored spans/s at 0.1 (hops counted, dropped spans"
        f" deleted), {settle_seconds:.1f} s for the run's {stored_unsettled:,}"
    )
    print(f"peak RSS      {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (this process)")
    if curve:
        print("scale-out     consume_spans processes in one consumer group, one PostgreSQL, same messages:")
        base = curve[0].rate
        for point in curve:
            sessions = point.sessions
            workers_cpu, sessions_cpu, broker_cpu, waited, elapsed = point.cpu
            counted = point.rate * elapsed
            print(
                f"  {point.workers} process{'es' if point.workers > 1 else '  '} {point.rate:>9,.0f} spans/s end to end"
                f" ({point.rate / base:.2f} of {curve[0].workers}, {point.rate / decode_rate:.2f} of decode only);"
                f" peak RSS {max(point.peak_rss) / MB:.0f} MB per process"
                f" ({', '.join(f'{rss / MB:.0f}' for rss in point.peak_rss)})"
            )
            print(
                f"               CPU µs per span: workers {workers_cpu / counted * 1e6:.0f},"
                f" their PostgreSQL sessions {sessions_cpu / counted * 1e6:.0f}, broker {broker_cpu / counted * 1e6:.0f}"
                f" (cores busy: {workers_cpu / elapsed:.2f}, {sessions_cpu / elapsed:.2f}, {broker_cpu / elapsed:.2f});"
                f" the workers' threads waited {waited / max(workers_cpu, 1e-9):.1f} s for a free core for each second"
                f" they ran on one (near 0 on an idle machine)"
            )
            print(
                f"               database sessions {sessions['active']:.0%} active, {sessions['lock']:.0%} waiting on a"
                f" lock, {sessions['idle']:.0%} idle (the worker decoding, polling or waiting for a core);"
                f" {point.measured:.0%} of the messages counted after producing ended, on the clock"
            )
    if sizes:
        stored, by_table = sizes
        print(f"bytes per span in PostgreSQL, after {sizes_after} stored {stored:,} spans (pg_total_relation_size):")
        for table, (total, indexes, rows) in by_table.items():
            print(
                f"  {table:<24} {total / stored:>7,.1f} B/span ({total / MB:,.1f} MB: {indexes / MB:,.1f} MB indexes;"
                f" {rows:,} rows)"
            )


if __name__ == "__main__":
    main()
