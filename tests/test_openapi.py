"""The OpenAPI schema tells the truth: schemathesis calls every operation in process (through the WSGI
handler) with requests it derives from the schema, valid and invalid, as a user with a DRF token, and
checks every answer's status, content type and body against what the schema promises."""

from datetime import UTC, datetime

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis import GenerationMode

from dashboard.api.params import UNTIL_FORMAT
from tests.seed import hostile, seed_mesh, store
from topology.consumer_lag import Observation, record_samples
from topology.models import SourceStatus

EXAMPLES = 10
NAIVE_FIRST = datetime(1, 1, 20)  # noqa: DTZ001
NAIVE_1970 = datetime(1970, 1, 2)  # noqa: DTZ001
NAIVE_LAST = datetime(9998, 12, 1)  # noqa: DTZ001
TOKEN = "0123456789abcdef0123456789abcdef01234567"
AUTH = {"Authorization": f"Token {TOKEN}"}

# The schema's ``until``: ISO 8601 with or without a zone, or epoch seconds, within the years that
# a window of up to 14 days fits in.
schemathesis.openapi.format(
    UNTIL_FORMAT,
    st.one_of(
        st.just(""),
        st.integers(min_value=0, max_value=4_000_000_000).map(str),
        st.floats(min_value=0, max_value=4e9, allow_nan=False).map(lambda seconds: f"{seconds:.3f}"),
        # hypothesis takes naive bounds; the first strategy's times name no zone (UTC), the second's do.
        st.datetimes(min_value=NAIVE_FIRST, max_value=NAIVE_LAST).map(datetime.isoformat),
        st.datetimes(min_value=NAIVE_1970, max_value=NAIVE_LAST, timezones=st.just(UTC)).map(datetime.isoformat),
    ),
)


@pytest.fixture
def api_schema(db, django_user_model):
    user = django_user_model.objects.create_user("schemathesis", password="x" * 16)
    Token.objects.create(key=TOKEN, user=user)
    seed_mesh(traces=3, errors=1)
    store(hostile())
    record_samples([Observation("billing", "orders", 0, 5, 9, None, "Stable")])
    SourceStatus.record_failure("consul:dc1", "connection refused")
    # The WSGI handler would close the test's connection after each request, and its transaction with it.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), headers=AUTH)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


OPERATIONS = [
    ("POST", "/api/auth/token/"),
    ("GET", "/api/topology/"),
    ("GET", "/api/topology/export.dot"),
    ("GET", "/api/routes/"),
    ("GET", "/api/routes/tree/"),
    ("GET", "/api/traces/"),
    ("GET", "/api/traces/{trace_id}/"),
    ("GET", "/api/ingest/"),
    ("GET", "/api/services/"),
    ("GET", "/api/services/detail/"),
    ("GET", "/api/edges/detail/"),
    ("GET", "/api/services/shares/"),
    ("GET", "/api/sources/"),
    ("GET", "/api/balancers/"),
    ("GET", "/api/balancers/{service}/"),
    ("GET", "/api/lag/"),
    ("GET", "/api/flows/"),
]


# schemathesis's own pytest plugin reads a node attribute that pytest 9 no longer has: each operation is
# driven here through hypothesis instead, with every check schemathesis has.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_operation_answers_as_the_schema_says(api_schema, method, path, mode):
    operation = api_schema[path][method]
    if mode == GenerationMode.NEGATIVE and not list(operation.iter_parameters()):
        pytest.skip("no parameter to make invalid")

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def calls(case):
        case.call_and_validate(headers=AUTH)

    try:
        calls()
    except Unsatisfiable:
        # Parameters whose every string is valid (an optional name filter): nothing can be invalid.
        pytest.skip("schemathesis can make no invalid request for this operation")


ENDPOINTS = [
    "/api/topology/",
    "/api/topology/export.dot",
    "/api/routes/",
    "/api/routes/tree/?service=gateway&operation=GET%20%2Fapi%2Forders",
    "/api/traces/",
    "/api/traces/0af7651916cd43dd8448eb211c80319c/",
    "/api/ingest/",
    "/api/services/",
    "/api/services/detail/?name=orders",
    "/api/services/shares/?name=orders",
    "/api/edges/detail/?source=gateway&target=orders",
    "/api/sources/",
    "/api/balancers/",
    "/api/balancers/orders/",
    "/api/lag/",
    "/api/flows/",
    "/api/schema/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
def test_anonymous_requests_get_401_with_a_token_challenge(url):
    response = APIClient().get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.django_db
def test_the_schema_lists_every_api_route_with_its_errors(api_schema):
    raw = api_schema.raw_schema
    paths = raw["paths"]
    assert len(paths) == len(ENDPOINTS)  # all but the schema itself, and POST /api/auth/token/
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path == "/api/auth/token/":
                assert {"200", "400", "401", "429"} <= set(operation["responses"])
                continue
            assert "401" in operation["responses"], (method, path)
            assert operation["responses"]["200"]["content"], (method, path)
    assert paths["/api/routes/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "404" in paths["/api/traces/{trace_id}/"]["get"]["responses"]
    window = next(p for p in paths["/api/topology/"]["get"]["parameters"] if p["name"] == "window")
    assert (window["schema"]["minimum"], window["schema"]["maximum"]) == (60, 14 * 86400)
