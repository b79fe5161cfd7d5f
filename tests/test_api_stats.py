"""The balancer, lag and flow endpoints: login required, and the shapes the UI reads."""

from datetime import timedelta

import pytest
from django.utils import timezone

from topology.consumer_lag import Observation, record_samples
from topology.latency import LatencyHistogram
from topology.models import EdgeRollup, Instance, InstanceRollup, Service

ENDPOINTS = ["/api/balancers/", "/api/balancers/checkout/", "/api/lag/", "/api/flows/"]


@pytest.fixture
def user_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("ops", password="x" * 12))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize("url", ENDPOINTS)
def test_every_statistics_endpoint_answers_401_without_login(client, url):
    assert client.get(url).status_code == 401


@pytest.mark.django_db
def test_balancer_endpoints_report_verdicts_flags_and_callers(user_client):
    now = timezone.now()
    checkout = Service.objects.create(name="checkout", balancing_policy="", in_consul=True)
    web = Service.objects.create(name="web")
    instances = [
        Instance.objects.create(
            service=checkout, identity=f"checkout-{i}", health="passing", first_seen=now - timedelta(hours=1)
        )
        for i in range(3)
    ]
    Instance.objects.filter(pk=instances[2].pk).update(deregistered_at=now - timedelta(hours=1))
    minute = (now - timedelta(minutes=3)).replace(second=0, microsecond=0)
    for instance, count in zip(instances, [1000, 500, 20]):
        InstanceRollup.objects.create(minute=minute, instance=instance, caller=web, count=count)

    listing = user_client.get("/api/balancers/").json()
    [summary] = listing["services"]
    assert summary["service"] == "checkout"
    assert (summary["policy"], summary["policy_assumed"]) == ("round_robin", True)
    assert summary["verdict"]["status"] == "skewed"
    assert summary["verdict"]["instance"] == "checkout-0"
    assert summary["flags"][0]["instance"] == "checkout-2"

    detail = user_client.get("/api/balancers/checkout/?window=600").json()
    assert detail["window"]["minutes"] == 10
    assert [row["instance"] for row in detail["instances"]] == ["checkout-0", "checkout-1", "checkout-2"]
    assert detail["instances"][2]["ineligible_reason"] == "deregistered"
    assert [c["caller"] for c in detail["callers"]] == ["web"]
    assert set(detail) >= {"max_abs_deviation", "chi_square", "p_value", "jain_index", "degrees_of_freedom"}

    assert user_client.get("/api/balancers/nobody/").status_code == 404
    assert user_client.get("/api/balancers/?window=5").status_code == 400


@pytest.mark.django_db
def test_lag_endpoint_lists_groups_with_partitions_and_series(user_client):
    start = timezone.now() - timedelta(seconds=20)
    for step in range(3):
        record_samples(
            [Observation("billing", "orders", 0, 10 * step, 40 + 10 * step, None, "Stable")],
            now=start + timedelta(seconds=5 * step),
        )

    body = user_client.get("/api/lag/").json()

    [group] = body["groups"]
    assert (group["group"], group["lag_messages"], group["status"]) == ("billing", 40, "OK")
    [partition] = group["partitions"]
    assert partition["lag_seconds_method"] == "extrapolated"  # offset 20 is older than the end offsets seen
    assert partition["trend_messages_per_second"] == pytest.approx(0)
    assert len(group["series"]) == 3


@pytest.mark.django_db
def test_flows_endpoint_shows_negative_delays(user_client):
    orders, billing = Service.objects.create(name="orders"), Service.objects.create(name="billing")
    histogram = LatencyHistogram()
    for delay_ms in [5, 7, 9, 11]:  # the fifth delivery came out negative: counted apart
        histogram.add(delay_ms)
    EdgeRollup.objects.create(
        minute=(timezone.now() - timedelta(minutes=2)).replace(second=0, microsecond=0),
        source=orders,
        target=billing,
        protocol="messaging",
        topic="invoices",
        count=5,
        negative_delays=1,
        latency_buckets=histogram.to_json(),
    )
    EdgeRollup.objects.create(  # a synchronous edge is not a flow
        minute=(timezone.now() - timedelta(minutes=2)).replace(second=0, microsecond=0),
        source=orders,
        target=billing,
        protocol="http",
        count=3,
    )

    [flow] = user_client.get("/api/flows/").json()["flows"]

    assert (flow["producer"], flow["topic"], flow["consumer"]) == ("orders", "invoices", "billing")
    assert (flow["count"], flow["negative_delays"], flow["clock_skew_suspected"]) == (5, 1, True)
    assert flow["negative_share"] == 0.2
    assert flow["p50_ms"] == pytest.approx(7, rel=0.1)
    assert len(flow["series"]) == 1


@pytest.mark.django_db
def test_balancers_look_back_15_minutes_and_flows_an_hour_unless_told(user_client):
    assert user_client.get("/api/balancers/").json()["window"]["minutes"] == 15
    assert user_client.get("/api/flows/").json()["window"]["minutes"] == 60


@pytest.mark.django_db
@pytest.mark.parametrize(
    "policy, applies", [("random", True), ("round_robin", False), ("weighted", False), ("", False)]
)
def test_chi_square_is_marked_as_applying_to_random_balancing_only(user_client, policy, applies):
    # The page greys χ² out where this is false (static/js/balancers.js).
    now = timezone.now()
    cart = Service.objects.create(name="cart", balancing_policy=policy, in_consul=True)
    web = Service.objects.create(name="web")
    minute = (now - timedelta(minutes=3)).replace(second=0, microsecond=0)
    for i, count in enumerate([500, 520]):
        instance = Instance.objects.create(
            service=cart, identity=f"cart-{i}", health="passing", first_seen=now - timedelta(hours=1)
        )
        InstanceRollup.objects.create(minute=minute, instance=instance, caller=web, count=count)

    [summary] = user_client.get("/api/balancers/").json()["services"]
    detail = user_client.get("/api/balancers/cart/").json()

    assert summary["chi_square_applies"] is applies
    assert detail["chi_square_applies"] is applies
    assert [caller["chi_square_applies"] for caller in detail["callers"]] == [applies]
    # The figure is computed whatever the policy: only its reading changes.
    assert detail["p_value"] is not None
