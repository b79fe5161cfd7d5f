"""Balancer statistics against ground truth: simulated balancers whose true shares are known."""

import math
import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from topology.balancing import (
    BALANCED,
    SKEWED,
    TOO_FEW_REQUESTS,
    BalancerWindow,
    BalanceStatistics,
    expected_weight,
)
from topology.chi_square import chi_square_p_value, pearson_chi_square, regularized_upper_gamma
from topology.models import Instance, InstanceRollup, Service, SourceStatus
from topology.window import Window

NOW = timezone.now().replace(second=30, microsecond=0)


# --- χ² p-value: the incomplete gamma against known values -----------------------------------------


@pytest.mark.parametrize(
    "statistic, dof, p_value",
    [
        (3.841458820694124, 1, 0.05),  # the textbook critical values
        (6.634896601021214, 1, 0.01),
        (5.991464547107979, 2, 0.05),
        (18.307038053275146, 10, 0.05),
        (124.34211340400407, 100, 0.05),
        (0.0, 4, 1.0),
        (2.0, 2, math.exp(-1)),  # with 2 degrees of freedom the p-value is exp(-x/2)
    ],
)
def test_chi_square_p_value_matches_tables(statistic, dof, p_value):
    assert chi_square_p_value(statistic, dof) == pytest.approx(p_value, rel=1e-9, abs=1e-12)


def test_regularized_upper_gamma_matches_closed_forms():
    for x in (0.01, 0.5, 1.5, 4.0, 30.0):
        assert regularized_upper_gamma(1, x) == pytest.approx(math.exp(-x), rel=1e-12)
        assert regularized_upper_gamma(0.5, x) == pytest.approx(math.erfc(math.sqrt(x)), rel=1e-10)


def test_regularized_upper_gamma_rejects_nonsense():
    with pytest.raises(ValueError):
        regularized_upper_gamma(0, 1)
    with pytest.raises(ValueError):
        regularized_upper_gamma(1, -1)


@pytest.mark.parametrize("statistic", [0.0, 0.5, 3.0])
def test_chi_square_with_zero_degrees_of_freedom_is_refused(statistic):
    with pytest.raises(ValueError):
        chi_square_p_value(statistic, 0)


def test_pearson_chi_square_leaves_out_cells_expected_to_get_nothing():
    assert pearson_chi_square([5, 3], [4, 0]) == pytest.approx(0.25)


# --- Pure statistics ----------------------------------------------------------------------------


def choose(weights, n, seed):
    rng = random.Random(seed)
    counts = [0] * len(weights)
    for index in rng.choices(range(len(weights)), weights=weights, k=n):
        counts[index] += 1
    return counts


def test_random_choice_is_not_flagged_by_chi_square_over_repeated_seeds():
    p_values, verdicts = [], []
    for seed in range(200):
        counts = choose([1, 1, 1, 1], 4000, seed)
        stats = BalanceStatistics("random", ["a", "b", "c", "d"], counts, [1, 1, 1, 1])
        p_values.append(stats.p_value)
        verdicts.append(stats.verdict["status"])
    assert sum(p < 0.001 for p in p_values) <= 1
    assert set(verdicts) == {BALANCED}
    # The p-values of chance are uniform: about 5 % of them fall under 0.05.
    assert 0.01 <= sum(p < 0.05 for p in p_values) / len(p_values) <= 0.10


def test_random_balancer_sending_twice_the_share_to_one_instance_is_flagged_by_name():
    counts = choose([2, 1, 1, 1], 4000, seed=7)
    verdict = BalanceStatistics("random", ["a", "b", "c", "d"], counts, [1, 1, 1, 1]).verdict
    assert verdict["status"] == SKEWED
    assert verdict["instance"] == "a"
    assert verdict["share"] == pytest.approx(0.4, abs=0.02)


def test_strict_round_robin_is_balanced_and_far_more_even_than_chance():
    stats = BalanceStatistics("round_robin", ["a", "b", "c"], [1000, 1001, 999], [1, 1, 1])
    assert stats.verdict["status"] == BALANCED
    assert stats.p_value > 0.99
    assert stats.jain_index == pytest.approx(1.0, abs=1e-5)


def test_jain_index_is_one_over_n_when_one_instance_gets_everything():
    stats = BalanceStatistics("round_robin", ["a", "b", "c", "d"], [400, 0, 0, 0], [1, 1, 1, 1])
    assert stats.jain_index == pytest.approx(0.25)
    assert stats.verdict == {**stats.verdict, "status": SKEWED, "instance": "a"}


def test_expected_shares_are_zero_when_no_instance_is_owed_anything():
    stats = BalanceStatistics("round_robin", ["a", "b"], [5, 5], [0, 0])
    assert [row["expected_share"] for row in stats.as_dict()["instances"]] == [0.0, 0.0]


def test_few_requests_are_too_few_to_tell():
    assert (
        BalanceStatistics("round_robin", ["a", "b", "c"], [12, 9, 9], [1, 1, 1]).verdict["status"] == TOO_FEW_REQUESTS
    )
    assert BalanceStatistics("round_robin", ["a", "b"], [0, 0], [1, 1]).verdict["status"] == TOO_FEW_REQUESTS


def test_a_blatant_skew_is_called_even_on_few_requests():
    verdict = BalanceStatistics("round_robin", ["a", "b", "c"], [30, 0, 0], [1, 1, 1]).verdict
    assert (verdict["status"], verdict["instance"]) == (SKEWED, "a")


# --- The thresholds docs/statistics.md states, each just inside and just outside ---------------------
#
# Two instances, each owed half. Over n requests, a random split's standard deviation of a share is
# σ = √(0.5 × 0.5 / n): 5 points at n = 100, half a point at 10,000.


def verdict(policy, counts, weights=None):
    return BalanceStatistics(policy, ["a", "b"][: len(counts)], counts, weights or [1] * len(counts)).verdict["status"]


@pytest.mark.parametrize("policy", ["round_robin", "weighted"])
def test_a_deviation_within_three_standard_deviations_is_not_skewed(policy):
    # 64 of 100: 14 points off, 28 % of its due but only 2.8 σ.
    assert verdict(policy, [64, 36]) == TOO_FEW_REQUESTS


@pytest.mark.parametrize("policy", ["round_robin", "weighted"])
def test_a_deviation_beyond_three_standard_deviations_is_skewed(policy):
    # 66 of 100: 16 points off, 3.2 σ.
    assert verdict(policy, [66, 34]) == SKEWED


@pytest.mark.parametrize("policy", ["round_robin", "weighted", "random"])
def test_an_instance_at_less_than_120_percent_of_its_due_is_not_skewed(policy):
    # 59 % where 50 % is due: 1.18× its share, though a million requests make it far beyond chance.
    assert verdict(policy, [590_000, 410_000]) == BALANCED


@pytest.mark.parametrize("policy", ["round_robin", "weighted", "random"])
def test_an_instance_at_more_than_120_percent_of_its_due_is_skewed(policy):
    assert verdict(policy, [610_000, 390_000]) == SKEWED


def test_random_balancing_is_not_skewed_while_chi_square_p_is_above_one_in_a_thousand():
    # 66 of 100 is 32 % over its due; χ² = 10.24 with 1 degree of freedom.
    stats = BalanceStatistics("random", ["a", "b"], [66, 34], [1, 1])
    assert stats.p_value == pytest.approx(math.erfc(math.sqrt(10.24 / 2)))  # 0.00137
    assert stats.verdict["status"] == TOO_FEW_REQUESTS


def test_random_balancing_is_skewed_once_chi_square_p_is_below_one_in_a_thousand():
    stats = BalanceStatistics("random", ["a", "b"], [67, 33], [1, 1])
    assert stats.p_value == pytest.approx(math.erfc(math.sqrt(11.56 / 2)))  # 0.00067
    assert stats.verdict["status"] == SKEWED


def test_too_few_requests_until_three_standard_deviations_fit_in_a_fifth_of_the_share():
    # 3 √(0.25 / n) ≤ 0.2 × 0.5 from n = 225 on.
    assert verdict("round_robin", [112, 112]) == TOO_FEW_REQUESTS
    assert verdict("round_robin", [113, 113]) == BALANCED


def test_too_few_requests_is_judged_on_the_instance_with_the_smallest_expected_share():
    # Owed a quarter: 3 √(0.25 × 0.75 / n) ≤ 0.2 × 0.25 from n = 675 on.
    assert verdict("weighted", [168, 504], weights=[1, 3]) == TOO_FEW_REQUESTS
    assert verdict("weighted", [169, 507], weights=[1, 3]) == BALANCED
    # Wherever that instance stands in the list.
    assert verdict("weighted", [504, 168], weights=[3, 1]) == TOO_FEW_REQUESTS
    assert verdict("weighted", [507, 169], weights=[3, 1]) == BALANCED


def test_an_instance_weighted_zero_is_owed_nothing_and_says_why():
    instance = Instance(identity="zero", weight_passing=0, weight_warning=1, first_seen=NOW - timedelta(hours=1))
    assert expected_weight(instance, "passing", "weighted", NOW - timedelta(minutes=15), NOW) == (0, "zero_weight")


# --- Reports built from the database ------------------------------------------------------------------


def make_service(name, policy, weights, health="passing"):
    service = Service.objects.create(name=name, balancing_policy=policy, in_consul=True)
    instances = [
        Instance.objects.create(
            service=service,
            identity=f"{name}-{i}",
            weight_passing=weight,
            weight_warning=1,
            health=health,
            in_consul=True,
            datacenter="dc1",
            first_seen=NOW - timedelta(hours=1),
        )
        for i, weight in enumerate(weights)
    ]
    # Health is Consul's: it is shown while the collector reads the instances' datacenter.
    SourceStatus.record_success("consul:dc1")
    return service, instances


def store_requests(instances, counts, caller=None, minutes=10):
    """Spreads each instance's requests over the last ``minutes`` whole minutes."""
    start = NOW.replace(second=0) - timedelta(minutes=minutes)
    for instance, count in zip(instances, counts):
        for m in range(minutes):
            share = count // minutes + (1 if m < count % minutes else 0)
            if share:
                InstanceRollup.objects.create(
                    minute=start + timedelta(minutes=m), instance=instance, caller=caller, count=share
                )


@pytest.mark.django_db
def test_weights_one_two_five_over_ten_thousand_requests_measure_within_two_points():
    service, instances = make_service("checkout", "weighted", [1, 2, 5])
    store_requests(instances, choose([1, 2, 5], 10_000, seed=42))

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    truth = [1 / 8, 2 / 8, 5 / 8]
    for row, expected in zip(report["instances"], truth):
        assert row["expected_share"] == pytest.approx(expected)
        assert abs(row["share"] - expected) < 0.02
    assert report["requests"] == 10_000
    assert report["verdict"]["status"] == BALANCED
    assert report["policy_assumed"] is False


@pytest.mark.django_db
def test_weighted_uses_the_warning_weight_of_an_instance_whose_checks_warn():
    service, instances = make_service("search", "weighted", [4, 4])
    Instance.objects.filter(pk=instances[1].pk).update(health="warning", weight_warning=1)
    store_requests(instances, [800, 200])

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    assert [row["expected_share"] for row in report["instances"]] == pytest.approx([0.8, 0.2])
    assert report["verdict"]["status"] == BALANCED


@pytest.mark.django_db
def test_an_instance_given_twice_its_share_is_flagged_by_name():
    service, instances = make_service("cart", "round_robin", [1, 1, 1, 1])
    store_requests(instances, [1000, 500, 500, 500])

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    assert report["verdict"]["status"] == SKEWED
    assert report["verdict"]["instance"] == "cart-0"
    assert (
        report["verdict"]["summary"] == "cart-0 gets 40.0% of the requests where 25.0% is expected (1.60× its share)."
    )
    assert report["max_abs_deviation"] == pytest.approx(0.15)


@pytest.mark.django_db
def test_traffic_to_a_deregistered_instance_is_flagged():
    service, instances = make_service("payments", "round_robin", [1, 1, 1])
    deregistered = instances[2]
    Instance.objects.filter(pk=deregistered.pk).update(deregistered_at=NOW - timedelta(minutes=20))
    store_requests(instances, [600, 600, 90])

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    assert report["flags"] == [
        {"instance": "payments-2", "reason": "deregistered", "requests": 90, "since": NOW - timedelta(minutes=20)}
    ]
    assert [row["requests"] for row in report["instances"]] == [600, 600, 90]
    row = report["instances"][2]
    assert (row["expected_share"], row["ineligible_reason"]) == (0, "deregistered")
    # The healthy two still split their part evenly.
    assert report["verdict"]["status"] == BALANCED


@pytest.mark.django_db
def test_requests_in_the_minute_that_starts_at_the_deregistration_count_as_after_it():
    end = NOW.replace(second=0)
    service, instances = make_service("refunds", "round_robin", [1, 1])
    Instance.objects.filter(pk=instances[1].pk).update(deregistered_at=end - timedelta(minutes=5))
    InstanceRollup.objects.create(minute=end - timedelta(minutes=6), instance=instances[1], count=9)
    InstanceRollup.objects.create(minute=end - timedelta(minutes=5), instance=instances[1], count=7)

    flags = BalancerWindow(Window.last(900, until=end)).report(service)["flags"]

    assert [(f["reason"], f["requests"]) for f in flags] == [("deregistered", 7)]


@pytest.mark.django_db
def test_critical_and_maintenance_instances_still_receiving_traffic_are_flagged():
    service, instances = make_service("users", "round_robin", [1, 1, 1, 1])
    Instance.objects.filter(pk=instances[2].pk).update(health="critical")
    Instance.objects.filter(pk=instances[3].pk).update(in_maintenance=True)
    store_requests(instances, [500, 500, 40, 40])

    flags = BalancerWindow(Window.last(900, until=NOW)).report(service)["flags"]

    assert {(f["instance"], f["reason"]) for f in flags} == {("users-2", "critical"), ("users-3", "in_maintenance")}


@pytest.mark.django_db
def test_no_policy_means_round_robin_and_says_it_is_assumed():
    service, instances = make_service("inventory", "", [3, 1])
    store_requests(instances, [500, 500])

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    assert (report["policy"], report["policy_assumed"]) == ("round_robin", True)
    assert [row["expected_share"] for row in report["instances"]] == [0.5, 0.5]


@pytest.mark.django_db
def test_per_caller_breakdown_shows_skews_that_cancel_out_overall():
    service, instances = make_service("ledger", "round_robin", [1, 1])
    web = Service.objects.create(name="web")
    batch = Service.objects.create(name="batch")
    store_requests(instances, [900, 300], caller=web)
    store_requests(instances, [300, 900], caller=batch)

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    assert report["verdict"]["status"] == BALANCED
    by_caller = {c["caller"]: c["verdict"] for c in report["callers"]}
    assert (by_caller["web"]["status"], by_caller["web"]["instance"]) == (SKEWED, "ledger-0")
    assert (by_caller["batch"]["status"], by_caller["batch"]["instance"]) == (SKEWED, "ledger-1")


@pytest.mark.django_db
def test_per_caller_reports_list_the_entry_requests_first():
    service, instances = make_service("search", "round_robin", [1, 1])
    store_requests(instances, [100, 100], caller=Service.objects.create(name="web"))
    store_requests(instances, [50, 50])

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    assert [(c["caller"], c["requests"]) for c in report["callers"]] == [(None, 100), ("web", 200)]


@pytest.mark.django_db
def test_an_instance_that_joined_mid_window_is_owed_its_part_of_the_window():
    service, instances = make_service("quotes", "round_robin", [1, 1])
    Instance.objects.filter(pk=instances[1].pk).update(first_seen=NOW - timedelta(minutes=5))
    store_requests(instances[:1], [1500], minutes=15)
    store_requests(instances[1:], [500], minutes=5)

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    # Present for a third of the window: owed a third of the even split's weight.
    assert report["instances"][1]["expected_share"] == pytest.approx(0.25)
    assert report["verdict"]["status"] == BALANCED


@pytest.mark.django_db
def test_an_instance_that_just_joined_does_not_leave_the_verdict_at_too_few():
    service, instances = make_service("prices", "round_robin", [1, 1, 1])
    Instance.objects.filter(pk=instances[2].pk).update(first_seen=NOW - timedelta(seconds=20))
    store_requests(instances[:2], [3000, 3000], minutes=15)

    report = BalancerWindow(Window.last(900, until=NOW)).report(service)

    assert report["instances"][2]["expected_share"] < 0.02
    assert report["verdict"]["status"] == BALANCED


@pytest.mark.django_db
def test_overview_lists_every_callee_with_its_verdict():
    _service, instances = make_service("orders", "random", [1, 1])
    store_requests(instances, choose([1, 1], 2000, seed=1))
    make_service("idle", "random", [1, 1])

    overview = BalancerWindow(Window.last(900, until=NOW)).overview()

    assert [s["service"] for s in overview["services"]] == ["orders"]
    assert overview["services"][0]["verdict"]["status"] == BALANCED
    assert overview["services"][0]["chi_square_applies"] is True


def overview_queries():
    with CaptureQueriesContext(connection) as queries:
        BalancerWindow(Window.last(900, until=NOW)).overview()
    return len(queries)


@pytest.mark.django_db
def test_the_overview_reads_every_service_in_the_same_few_queries():
    _service, instances = make_service("alpha", "round_robin", [1, 1])
    store_requests(instances, [10, 10])
    one_service = overview_queries()
    for name in ("beta", "gamma"):
        _service, instances = make_service(name, "round_robin", [1, 1])
        store_requests(instances, [10, 10])

    assert overview_queries() == one_service


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["critical", "in_maintenance"])
def test_an_unhealthy_instance_is_flagged_for_traffic_in_the_last_two_minutes_only(state):
    end = NOW.replace(second=0)
    service, instances = make_service(f"flagged-{state}", "round_robin", [1, 1, 1])
    flagged, spared = instances[1], instances[2]
    unhealthy = {"health": "critical"} if state == "critical" else {"in_maintenance": True}
    Instance.objects.filter(pk__in=[flagged.pk, spared.pk]).update(**unhealthy)
    # The minute that starts two minutes before the end lies within the last two; the one before does not.
    InstanceRollup.objects.create(minute=end - timedelta(minutes=2), instance=flagged, count=7)
    InstanceRollup.objects.create(minute=end - timedelta(minutes=3), instance=spared, count=9)
    InstanceRollup.objects.create(minute=end - timedelta(minutes=3), instance=instances[0], count=100)

    flags = BalancerWindow(Window.last(900, until=end)).report(service)["flags"]

    assert flags == [{"instance": flagged.identity, "reason": state, "requests": 7, "since": None}]
