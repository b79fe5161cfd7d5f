"""The chaos suite: meshscope's processes, real brokers and outages made on purpose (docs/reliability.md)."""

import uuid

import pytest
from django.db import connection


@pytest.fixture(autouse=True)
def _postgresql_only(django_db_blocker):
    """Subprocesses share the test database, and the outages are of PostgreSQL: SQLite cannot stand in."""
    with django_db_blocker.unblock():
        vendor = connection.vendor
    if vendor != "postgresql":
        pytest.skip("the chaos suite needs DATABASE_URL to point at PostgreSQL")


@pytest.fixture
def run_id():
    """Names this run's topics and consumer group, so that no two runs on one broker meet."""
    return uuid.uuid4().hex[:8]
