"""Shared fixtures: a real Kafka-protocol broker (Tansu), Redis, and the database pytest-django sets up.

Tests run against PostgreSQL when DATABASE_URL points at it and against SQLite otherwise. Redis is the
one at REDIS_URL when it answers, else an embedded redis-server started for the session. A test that
uses neither the database nor Redis (histograms, statistics, the protocol, the decoders) starts nothing.
"""

import copy
import os
import threading
import uuid
from urllib.parse import urlparse

import pytest

from demo.embedded import EmbeddedKafka, EmbeddedRedis, port_is_open


@pytest.fixture(scope="session")
def kafka_bootstrap():
    with EmbeddedKafka() as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def redis_url():
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    parsed = urlparse(url)
    if port_is_open(parsed.hostname or "127.0.0.1", parsed.port or 6379):
        yield url
        return
    with EmbeddedRedis() as redis:
        yield redis.url


def _uses_services(request):
    return request.node.get_closest_marker("django_db") is not None or "redis_url" in request.fixturenames


@pytest.fixture(autouse=True)
def _isolated_channel_layer(request, settings):
    """Each test that may reach Redis (any database test: a committed write marks the live views) gets
    its own channel-layer prefix on the real Redis, so tests never hear each other."""
    from channels.layers import channel_layers

    if not _uses_services(request):
        yield
        return
    redis_url = request.getfixturevalue("redis_url")
    # The product's layer (its connection options included), on the test Redis, under a prefix of its own.
    layer = copy.deepcopy(settings.CHANNEL_LAYERS["default"])
    layer["CONFIG"]["hosts"] = [{**host, "address": redis_url} for host in layer["CONFIG"]["hosts"]]
    layer["CONFIG"]["prefix"] = f"test-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYERS = {"default": layer}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def api():
    """The JSON API as a logged-in user calls it."""
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(User.objects.create_user("sre"))
    return client


@pytest.fixture
def topic_name():
    return f"spans-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _forget_remembered_views():
    """A rolled-back SQLite test reuses ids, so a later test's rollups could match an earlier fingerprint;
    and the live views this process keeps were read from an earlier test's database."""
    from dashboard.live import broadcast
    from topology import edge_totals

    edge_totals.forget()
    broadcast.forget()
    yield
    edge_totals.forget()
    broadcast.forget()


@pytest.fixture
def broadcaster(transactional_db, redis_url, _isolated_channel_layer):
    """The live layer's broadcaster, as ``manage.py broadcast`` runs it, on a thread of this process. It
    reads what other connections committed, hence the transactional database."""
    from django.db import connections

    from dashboard.live.broadcast import Broadcaster

    stop = threading.Event()

    def run():
        try:
            Broadcaster(tick_seconds=0.02).run(stop)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name="test-broadcaster", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=20)


@pytest.fixture
def announcements():
    """Every ``views_changed`` sent while the test runs, as the frozenset of views it carried."""
    from topology.changes import views_changed

    received = []

    def receive(sender, views, **kwargs):
        received.append(views)

    views_changed.connect(receive, dispatch_uid="test-announcements")
    yield received
    views_changed.disconnect(dispatch_uid="test-announcements")
