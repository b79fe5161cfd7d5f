"""Shared fixtures: a real Kafka-protocol broker (Tansu), Redis, and the database pytest-django sets up.

Tests run against PostgreSQL when DATABASE_URL points at it and against SQLite otherwise. Redis is the
one at REDIS_URL when it answers, else an embedded redis-server started for the session.
"""

import os
import uuid
from urllib.parse import urlparse

import pytest

from dashboard.embedded import EmbeddedKafka, EmbeddedRedis, port_is_open


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


@pytest.fixture(autouse=True)
def _isolated_channel_layer(settings, redis_url):
    """Each test gets its own channel-layer prefix on the real Redis, so tests never hear each other."""
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": f"test-{uuid.uuid4().hex[:8]}"},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def topic_name():
    return f"spans-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _forget_remembered_edge_totals():
    """A rolled-back SQLite test reuses ids, so a later test's rollups could match an earlier fingerprint."""
    from topology import edge_totals

    edge_totals.forget()
    yield
    edge_totals.forget()
