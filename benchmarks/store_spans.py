"""Storing alone: ``store_spans`` on decoded batches of 10,000 spans, with no Kafka in the way.

Prints (never asserts) the median and best time of a batch, so that a change to the span table or to
ingestion can be compared with the code before it (run both in one sitting: these machines are noisy).
It creates a throw-away database next to the one DATABASE_URL names and drops it at the end:

    SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench .venv/bin/python -m benchmarks.store_spans
"""

import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-key")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402

from benchmarks.ingest import messages  # noqa: E402
from collectors.formats import decode  # noqa: E402
from topology.ingestion import store_spans  # noqa: E402

MESSAGES_PER_BATCH = 200  # 10,000 spans, as the span consumer's max_poll_records gives
BATCHES = 12
WARM_UP = 2


def main():
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        payloads = messages(MESSAGES_PER_BATCH * BATCHES)
        batches = [
            [
                span
                for _ in range(MESSAGES_PER_BATCH)
                for span in decode(next(payloads), "otlp_proto", 10**7, 86400).spans
            ]
            for _ in range(BATCHES)
        ]
        seconds = []
        for batch in batches:
            started = time.perf_counter()
            with transaction.atomic():
                store_spans(batch)
            seconds.append(time.perf_counter() - started)
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)
    measured = seconds[WARM_UP:]
    size = len(batches[0])
    print(f"database      {connection.vendor}")
    print(f"batch         {size:,} spans, {len(measured)} batches after {WARM_UP} to warm up")
    print(
        f"median        {statistics.median(measured) * 1000:.0f} ms ({size / statistics.median(measured):,.0f} spans/s)"
    )
    print(f"best          {min(measured) * 1000:.0f} ms ({size / min(measured):,.0f} spans/s)")


if __name__ == "__main__":
    main()
