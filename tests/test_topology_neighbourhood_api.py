"""GET /api/topology/?focus=<service>&hops=<k>: one service's neighbourhood, as the topology page draws
its focus, and clear 400s and 404s for parameters that name none."""

import pytest
from django.utils import timezone

from topology.models import EdgeRollup, Service

pytestmark = pytest.mark.django_db


@pytest.fixture
def chain():
    """a -> b -> c -> d, and e calling b: one call each in this minute."""
    services = {name: Service.objects.create(name=name, in_traces=True) for name in "abcde"}
    minute = timezone.now().replace(second=0, microsecond=0)
    for source, target in [("a", "b"), ("b", "c"), ("c", "d"), ("e", "b")]:
        EdgeRollup.objects.create(
            minute=minute, source=services[source], target=services[target], protocol="http", count=1
        )


def drawn(body):
    return sorted(node["id"] for node in body["nodes"]), sorted((e["source"], e["target"]) for e in body["edges"])


def test_a_focus_answers_the_services_one_call_away_and_the_calls_among_them(api, chain):
    body = api.get("/api/topology/", {"focus": "b"}).json()
    assert drawn(body) == (["a", "b", "c", "e"], [("a", "b"), ("b", "c"), ("e", "b")])


def test_hops_widen_the_neighbourhood(api, chain):
    assert drawn(api.get("/api/topology/", {"focus": "a", "hops": "2"}).json())[0] == ["a", "b", "c", "e"]
    assert drawn(api.get("/api/topology/", {"focus": "a", "hops": "3"}).json())[0] == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"focus": "a", "hops": "0"}, "hops"),
        ({"focus": "a", "hops": "4"}, "hops"),
        ({"focus": "a", "hops": "two"}, "hops"),
        ({"focus": "a", "hops": ""}, "hops"),
        ({"hops": "9"}, "hops"),
        ({"focus": "a", "hops": "²"}, "hops"),
        ({"focus": "a\x00"}, "focus"),
    ],
)
def test_a_bad_focus_or_hops_is_a_400_naming_it(api, chain, query, field):
    response = api.get("/api/topology/", query)
    assert response.status_code == 400
    assert set(response.json()) == {field}


def test_hops_without_a_focus_leave_the_whole_graph(api, chain):
    whole = api.get("/api/topology/").json()
    assert drawn(api.get("/api/topology/", {"hops": "2"}).json()) == drawn(whole)


def test_a_focus_on_a_service_not_in_the_window_is_a_404(api, chain):
    assert api.get("/api/topology/", {"focus": "nobody"}).status_code == 404
