"""A page or API call while the database does not answer gets a 503 saying so, not a 500 "Server Error".

tests/chaos/test_postgres_outage.py makes the outage for real (daphne behind a cut TCP proxy); here the
connection's cursor fails the way Django raises it when PostgreSQL refuses or drops the connection.
"""

import pytest
from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError, ProgrammingError, connection
from django.test import Client

from dashboard.middleware import CONTENT_SECURITY_POLICY, DATABASE_UNAVAILABLE

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_in():
    client = Client(raise_request_exception=False)
    client.force_login(get_user_model().objects.create_user("sre", password="pw-123456"))
    return client


def database_fails(monkeypatch, error):
    def cursor(*args, **kwargs):
        raise error

    monkeypatch.setattr(connection, "cursor", cursor)


@pytest.mark.parametrize(
    "error",
    [
        OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
        ),
        InterfaceError("the connection is lost"),
    ],
)
def test_a_page_says_the_database_is_unavailable_with_a_503(client_in, monkeypatch, error):
    with monkeypatch.context() as patch:
        database_fails(patch, error)
        response = client_in.get("/")

    assert response.status_code == 503
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert response["Retry-After"] == "10"
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    body = response.content.decode()
    assert "<h1>The database is unavailable</h1>" in body and DATABASE_UNAVAILABLE in body
    assert "Traceback" not in body and "Server Error" not in body


def test_the_api_says_the_database_is_unavailable_in_json_with_a_503(client_in, monkeypatch):
    with monkeypatch.context() as patch:
        database_fails(patch, OperationalError("server closed the connection unexpectedly"))
        response = client_in.get("/api/topology/")

    assert (response.status_code, response["Retry-After"]) == (503, "10")
    assert response.json() == {"detail": DATABASE_UNAVAILABLE}


def test_any_other_database_error_is_still_a_server_error(client_in, monkeypatch):
    with monkeypatch.context() as patch:
        database_fails(patch, ProgrammingError('relation "topology_service" does not exist'))
        response = client_in.get("/api/topology/")

    assert response.status_code == 500
    assert not response.has_header("Retry-After")
