"""A span consumer killed mid-batch and started again loses nothing and counts nothing twice."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Sum

from tests.kafka_helpers import create_topic, produce
from tests.trace_payloads import OtelTraces, now_ns, otlp_protobuf
from topology.models import EdgeRollup, RouteRollup, Span

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
TRACES = 3000  # 3 spans each, two traces a message: more messages than one poll takes


def database_url():
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_consumer(bootstrap, topic, output=None):
    """``manage.py consume_spans``, its logs to the file ``output`` when given, in a session of its own so
    that a test can end it and whatever it started with one kill of its process group."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TRACE_TOPICS": f"{topic}:otlp_proto",
        "KAFKA_CONSUMER_GROUP": f"restart-{topic}",
        "KAFKA_MAX_POLL_INTERVAL_MS": "3000",
        "KAFKA_SESSION_TIMEOUT_MS": "3000",
        "LOG_LEVEL": "INFO",  # its partition assignments, which a test may read
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "consume_spans"],
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,
    )


def sessions_waiting_on_a_lock():
    """How many sessions of the test database wait on a lock now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else read once a transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0]


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_consumer_killed_mid_batch_loses_nothing_and_counts_nothing_twice(kafka_bootstrap, topic_name):
    traces = OtelTraces()
    messages = []
    for _ in range(TRACES // 2):
        for _ in range(2):
            start = now_ns()
            root = traces.span("gateway", "gateway-1", "GET /api/cart", "server", start, 20)
            call = traces.span(
                "gateway",
                "gateway-1",
                "GET",
                "client",
                start + 10**6,
                15,
                parent=root,
                attributes={"http.request.method": "GET"},
            )
            traces.span("cart", "cart-1", "GET /cart", "server", start + 2 * 10**6, 10, parent=call)
        messages.append(otlp_protobuf(traces.finished()))
    create_topic(kafka_bootstrap, topic_name, partitions=2)
    produce(kafka_bootstrap, topic_name, messages)

    first = start_consumer(kafka_bootstrap, topic_name)
    try:
        assert wait_for(lambda: Span.objects.count() > 0, 60), "the first consumer stored nothing"
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
    stored_before_restart = Span.objects.count()
    assert 0 < stored_before_restart < TRACES * 3, "the kill did not land mid-stream"

    second = start_consumer(kafka_bootstrap, topic_name)
    try:
        assert wait_for(lambda: Span.objects.count() == TRACES * 3, 90)
        time.sleep(1.5)  # a double count would show up as rollups above the truth
    finally:
        second.terminate()
        second.wait(10)

    edges = EdgeRollup.objects.filter(source__name="gateway", target__name="cart").aggregate(n=Sum("count"))["n"]
    routes = RouteRollup.objects.aggregate(n=Sum("count"))["n"]
    assert (edges, routes, Span.objects.filter(paired=False).count()) == (TRACES, TRACES, 0)
