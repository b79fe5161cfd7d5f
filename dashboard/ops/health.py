"""Liveness and readiness for orchestrators and load balancers: no login, and no data in the answer.

``/healthz`` says only that the process answers HTTP. ``/readyz`` says whether it can do its work: the
database, Redis (the Channels layer and Celery's broker) and the Kafka bootstrap servers each answer
within CHECK_TIMEOUT_SECONDS. A failure names the part, never the error, which goes to the log.
"""

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import redis
from django.conf import settings
from django.db import connection, connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kafka import KafkaConsumer

log = logging.getLogger(__name__)

# A probe that waits longer than its orchestrator's timeout (Kubernetes: 1 s by default) is a failure
# anyway; a dependency this slow is not ready.
CHECK_TIMEOUT_SECONDS = 2.0


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()


def check_kafka() -> None:
    # A metadata round trip proves a Kafka broker answers, with the cluster's TLS and SASL settings.
    consumer = KafkaConsumer(
        bootstrap_servers=settings.KAFKA_BOOTSTRAP_SERVERS,
        bootstrap_timeout_ms=int(CHECK_TIMEOUT_SECONDS * 1000),
        request_timeout_ms=int(CHECK_TIMEOUT_SECONDS * 1000) + 1,
        client_id="meshscope-readyz",
        **settings.KAFKA_SECURITY,
    )
    consumer.close()


CHECKS: dict[str, Callable[[], None]] = {"database": check_database, "redis": check_redis, "kafka": check_kafka}


def _run(check: Callable[[], None]) -> None:
    try:
        check()
    finally:
        # The check ran on a thread of its own: its database connection goes with it.
        connections.close_all()


def failing_parts() -> list[str]:
    """The parts that do not answer within CHECK_TIMEOUT_SECONDS, checked side by side, so that one
    that hangs (a firewall dropping packets) costs the probe no more than the timeout."""
    pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="readyz")
    futures = {name: pool.submit(_run, check) for name, check in CHECKS.items()}
    done, _ = wait(futures.values(), timeout=CHECK_TIMEOUT_SECONDS + 1)
    pool.shutdown(wait=False, cancel_futures=True)
    failing = []
    for name, future in futures.items():
        error = future.exception() if future in done else TimeoutError(f"no answer in {CHECK_TIMEOUT_SECONDS} s")
        if error is not None:
            log.warning("Readiness: %s is unavailable: %s", name, error)
            failing.append(name)
    return failing


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    failing = failing_parts()
    if failing:
        return JsonResponse({"status": "unavailable", "failing": failing}, status=503)
    return JsonResponse({"status": "ok"})
