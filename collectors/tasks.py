"""The Celery tasks of the collectors. Beat's schedule is in dashboard/celery.py.

Celery's autodiscovery imports this module only, so the tasks that live beside their collectors
are imported here to register them.
"""

import time
from collections.abc import Callable

from celery import shared_task
from django.conf import settings

from collectors.consul import sync_consul
from collectors.kafka_spans import SpanConsumer
from collectors.lag import sample_consumer_lag
from topology import retention
from topology.ingestion import resolve_unpaired
from topology.route_hops import settle_route_hops

__all__ = [
    "consume_spans",
    "prune",
    "resolve_unpaired_spans",
    "sample_consumer_lag",
    "settle_route_hops_task",
    "sync_consul",
]

_span_consumer: SpanConsumer | None = None


@shared_task(name="collectors.consume_spans", ignore_result=True)
def consume_spans() -> int:
    """Consumes spans for SPAN_CONSUMER_RUN_SECONDS. The consumer outlives the task so that the
    worker stays in the consumer group between runs; run it on a solo-pool worker (README)."""
    global _span_consumer
    if _span_consumer is None:
        _span_consumer = SpanConsumer()
    return _span_consumer.run(settings.SPAN_CONSUMER_RUN_SECONDS)


# Beat offers each of these a run every 15 s: a run settles batches for up to 10 s, so what is due is
# settled however much arrives, and runs never overlap.
SETTLE_BUDGET_SECONDS = 10


def _batches_within_budget(settle_batch: Callable[[], int]) -> int:
    """Calls ``settle_batch`` until it settles nothing or SETTLE_BUDGET_SECONDS have passed; the total."""
    deadline = time.monotonic() + SETTLE_BUDGET_SECONDS
    settled = 0
    while True:
        batch = settle_batch()
        settled += batch
        if not batch or time.monotonic() >= deadline:
            return settled


@shared_task(name="collectors.resolve_unpaired_spans", ignore_result=True)
def resolve_unpaired_spans() -> int:
    """Calls to uninstrumented callees (databases, caches), counted on their own after the grace."""
    return _batches_within_budget(lambda: resolve_unpaired(settings.SPAN_PAIRING_GRACE_SECONDS))


@shared_task(name="collectors.settle_route_hops", ignore_result=True)
def settle_route_hops_task() -> int:
    """Settled traces' hops counted into their routes' call trees. A batch of 5,000 pending spans is
    the roots of 5,000 requests at a ratio of 1, the spans of about 700 eight-span requests at 0.1."""
    return _batches_within_budget(lambda: settle_route_hops(settings.SPAN_PAIRING_GRACE_SECONDS))


@shared_task(name="collectors.prune", ignore_result=True)
def prune() -> dict[str, int]:
    return retention.prune()
