"""Trace search on a seeded span table: each search's time and PostgreSQL's plan, with and without the
GIN index over the spans' attributes (``span_attributes_gin``), so that one can see the index is used.

Prints (never asserts). It creates a throw-away database next to the one DATABASE_URL names, fills its
span table with ``--spans`` spans (traces of five spans, 20 traces a second, up to now) in one INSERT … SELECT, and drops it at the end:

    SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python -m benchmarks.trace_search
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")

import django

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from topology.models import Service  # noqa: E402
from topology.trace_search import TraceSearch, parse_duration, parse_tags  # noqa: E402
from topology.traces import trace_list  # noqa: E402
from topology.window import Window  # noqa: E402

SERVICES = ["gateway", "orders", "payments", "inventory", "billing"]
# Each trace: 5 spans; 2 traces in 100 failed with a 500 (one as OTLP's number, one as Zipkin's text),
# 50 routes, 10,000 users.
SEED = """
INSERT INTO topology_span (trace_id, span_id, parent_id, service_id, kind, name, protocol, started_at,
                           duration_us, status_code, error, peer, topic, attributes, paired)
SELECT lpad(to_hex(i / 5 + 1), 32, '0'),
       lpad(to_hex(i + 1), 16, '0'),
       CASE WHEN i %% 5 = 0 THEN '' ELSE lpad(to_hex(i - i %% 5 + 1), 16, '0') END,
       (SELECT min(id) FROM topology_service) + i %% 5,
       CASE WHEN i %% 5 = 0 THEN 'server' ELSE 'client' END,
       'GET /api/r' || (i / 5 %% 50),
       'http',
       now() - ((%(spans)s - i) / 100.0) * interval '1 second',
       1000 + (i * 7919) %% 500000,
       '200', false, '', '',
       jsonb_build_object(
           'http.route', '/api/r' || (i / 5 %% 50),
           'http.request.method', 'GET',
           'http.response.status_code',
               CASE i / 5 %% 100 WHEN 0 THEN to_jsonb(500) WHEN 50 THEN to_jsonb('500'::text) ELSE to_jsonb(200) END,
           'server.port', 8080 + i %% 5,
           'user.id', 'u' || (i / 5 %% 10000)),
       true
FROM generate_series(0::bigint, %(spans)s - 1) AS i
"""
SEARCHES = [
    ("tags=http.response.status_code=500 (2 % of traces)", {"tags": "http.response.status_code=500"}),
    ("tags=user.id=u4242 (0.01 %)", {"tags": "user.id=u4242"}),
    (
        "tags=http.route=/api/r7 http.response.status_code=500",
        {"tags": "http.route=/api/r7 http.response.status_code=500"},
    ),
    ("service=payments tags=user.id=u4242", {"service": "payments", "tags": "user.id=u4242"}),
    ("tags=user.id=u4242, window 1 h", {"tags": "user.id=u4242", "window": 3600}),
    ("min_duration=499ms (no tag)", {"min_duration": "499ms"}),
]
RUNS = 5


def search(params):
    window = Window.last(params["window"]) if "window" in params else None
    matching = TraceSearch(
        service=params.get("service", ""),
        tags=parse_tags(params.get("tags", "")),
        min_duration_us=parse_duration("min_duration", params.get("min_duration", "")),
    ).matching_spans()
    return trace_list(
        limit=50,
        since=window.since if window else None,
        until=window.until if window else None,
        having=matching,
    )


def measure(label):
    print(f"\n== {label}")
    for name, params in SEARCHES:
        seconds = []
        for _ in range(RUNS):
            started = time.perf_counter()
            found = search(params)
            seconds.append(time.perf_counter() - started)
        with CaptureQueriesContext(connection) as queries:
            search(params)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + queries[0]["sql"])
            plan = [row[0] for row in cursor.fetchall()]
        print(f"-- {name}: {len(found)} traces, median {statistics.median(seconds) * 1000:.1f} ms")
        for line in plan:
            print(f"   {line}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=1_000_000)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("this measures PostgreSQL's plans: point DATABASE_URL at a PostgreSQL")
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        Service.objects.bulk_create([Service(name=name, in_traces=True) for name in SERVICES])
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(SEED, {"spans": args.spans})
            cursor.execute("ANALYZE topology_span")
            cursor.execute("SELECT pg_size_pretty(pg_relation_size('span_attributes_gin'))")
            (index_size,) = cursor.fetchone()
        print(
            f"seeded        {args.spans:,} spans in {time.perf_counter() - started:.0f} s; the GIN index: {index_size}"
        )
        measure("with span_attributes_gin")
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX span_attributes_gin")
        measure("without it")
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)


if __name__ == "__main__":
    main()
