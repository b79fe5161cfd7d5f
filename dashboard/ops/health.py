"""Liveness and readiness for orchestrators and load balancers: no login, and no data in the answer.

``/healthz`` says only that the process answers HTTP. ``/readyz`` says whether it can do its work: the
database, Redis (the Channels layer and Celery's broker) and the Kafka bootstrap servers each answer
within CHECK_TIMEOUT_SECONDS. A failure names the part, never the error, which goes to the log.
"""

import logging
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
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


def failing_parts() -> list[str]:
    failing = []
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as error:  # any failure of a dependency means "not ready", whatever its type
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
