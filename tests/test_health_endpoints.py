"""/healthz and /readyz: no login, no data, and readiness naming the dependency that does not answer."""

import threading
import time

import pytest
from django.db import connection

from dashboard.ops import health
from demo.embedded import free_port


@pytest.fixture
def reachable(settings, kafka_bootstrap, redis_url):
    settings.KAFKA_BOOTSTRAP_SERVERS = [kafka_bootstrap]
    settings.REDIS_URL = redis_url
    return settings


def test_healthz_answers_without_login_or_data(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_ready_when_the_database_redis_and_kafka_answer(client, reachable):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_names_kafka_when_its_bootstrap_does_not_answer(client, reachable):
    reachable.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failing": ["kafka"]}


@pytest.mark.django_db
def test_readyz_names_redis_when_it_does_not_answer(client, reachable):
    reachable.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failing": ["redis"]}


@pytest.mark.django_db(transaction=True)
def test_readyz_names_the_database_when_it_does_not_answer(client, reachable, monkeypatch):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite is a file: there is no server to be unreachable")
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
    monkeypatch.setitem(connection.settings_dict, "PORT", str(free_port()))
    try:
        response = client.get("/readyz")
    finally:
        connection.close()
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "failing": ["database"]}


@pytest.mark.django_db
def test_readyz_tells_anonymous_callers_nothing_but_the_parts(client, reachable):
    reachable.REDIS_URL = "redis://:hunter2@127.0.0.1:1/0"
    body = client.get("/readyz").content.decode()
    assert "hunter2" not in body and "127.0.0.1" not in body


@pytest.mark.django_db
def test_readyz_gives_up_on_a_part_that_hangs_after_its_timeout(client, reachable, monkeypatch):
    release = threading.Event()
    monkeypatch.setitem(health.CHECKS, "kafka", lambda: release.wait(30))
    started = time.monotonic()
    try:
        response = client.get("/readyz")
    finally:
        release.set()
    assert time.monotonic() - started < health.CHECK_TIMEOUT_SECONDS + 2
    assert response.status_code == 503
    assert response.json()["failing"] == ["kafka"]
