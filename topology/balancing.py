"""How evenly each service's instances share its requests, compared with what its policy promises.

The pure part, ``BalanceStatistics``, takes request counts and expected weights and gives the shares,
the largest deviation, Pearson's χ², Jain's fairness index and a verdict. ``BalancerWindow`` reads
Instance and InstanceRollup rows for a time window and builds the per-service reports the API serves.
"""

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from topology.chi_square import chi_square_p_value, pearson_chi_square
from topology.models import Instance, InstanceRollup, Service
from topology.models.services import BalancingPolicy, Health
from topology.models.sources import HealthFreshness
from topology.window import Window

# Random balancing is called skewed only when χ² says chance explains the counts less than once in
# a thousand windows: a dashboard that refreshes all day must not cry wolf every twentieth time.
SIGNIFICANCE = 0.001
# A share off its expectation by less than a fifth of it is within what operators tolerate.
RELATIVE_TOLERANCE = 0.2
# For round robin and weighted balancing, a deviation beyond three standard deviations of a random
# split cannot be chance: real balancers are at least that even.
NOISE_SIGMAS = 3
# An unhealthy instance "still receives traffic" when it served requests in the window's last minutes.
RECENT_MINUTES = 2
# Why a trace-only instance of a service whose other instances Consul or an operator recorded is owed
# nothing: spans name an address that no registration has, so it is shown and flagged, never judged as
# one of the instances the policy shares requests over (docs/statistics.md).
UNREGISTERED = "unregistered"

BALANCED = "balanced"
SKEWED = "skewed"
TOO_FEW_REQUESTS = "too_few_requests"


@dataclass
class BalanceStatistics:
    """The balance of one set of instances. ``weights`` are expected weights: 0 for an instance that
    should get no traffic (it is then left out of the figures and reported through its flags)."""

    policy: str
    names: Sequence[str]
    requests: Sequence[int]
    weights: Sequence[float]
    # Instances that were there for only part of the window (scaled up or down): what they are owed
    # is only approximate (minute rollups, warm-up), so they are shown but not judged, unless no
    # instance was there for the whole window.
    partial: Sequence[bool] | None = None
    total: int = field(init=False)
    eligible_total: int = field(init=False)
    expected_shares: list[float] = field(init=False)
    eligible_shares: list[float | None] = field(init=False)  # None for an instance owed nothing

    def __post_init__(self) -> None:
        weight_sum = sum(self.weights)
        self.total = sum(self.requests)
        self.expected_shares = [w / weight_sum if weight_sum else 0.0 for w in self.weights]
        self.eligible_total = sum(r for r, w in zip(self.requests, self.weights) if w > 0)
        self.eligible_shares = [
            (r / self.eligible_total if self.eligible_total else 0.0) if w > 0 else None
            for r, w in zip(self.requests, self.weights)
        ]

    @property
    def _eligible(self) -> list[int]:
        return [i for i, w in enumerate(self.weights) if w > 0]

    @property
    def _judged(self) -> list[int]:
        return [i for i in self._eligible if not (self.partial and self.partial[i])] or self._eligible

    def _share(self, i: int) -> float:
        """The eligible share of an eligible instance (one owed traffic)."""
        share = self.eligible_shares[i]
        if share is None:
            raise ValueError(f"{self.names[i]} is owed no traffic: it has no eligible share")
        return share

    def _deviation(self, i: int) -> float:
        """``deviation`` of an eligible instance."""
        return self._share(i) - self.expected_shares[i]

    def deviation(self, i: int) -> float | None:
        """Share among the requests that eligible instances served, minus the expected share."""
        if self.weights[i] <= 0 or not self.eligible_total:
            return None
        return self._deviation(i)

    @property
    def max_abs_deviation(self) -> float | None:
        deviations = [abs(d) for d in map(self.deviation, range(len(self.names))) if d is not None]
        return max(deviations) if deviations else None

    @property
    def chi_square(self) -> float | None:
        eligible = self._eligible
        if len(eligible) < 2 or not self.eligible_total:
            return None
        observed = [self.requests[i] for i in eligible]
        expected = [self.expected_shares[i] * self.eligible_total for i in eligible]
        return pearson_chi_square(observed, expected)

    @property
    def p_value(self) -> float | None:
        statistic = self.chi_square
        if statistic is None:
            return None
        return chi_square_p_value(statistic, len(self._eligible) - 1)

    @property
    def jain_index(self) -> float | None:
        """Jain's fairness index of the allocations measured ÷ expected: 1 when every instance gets
        exactly its due, 1/n when one instance gets everything."""
        if not self.eligible_total:
            return None
        ratios = [self._share(i) / self.expected_shares[i] for i in self._eligible]
        squares = sum(x * x for x in ratios)
        return sum(ratios) ** 2 / (len(ratios) * squares) if squares else None

    def _noise(self, i: int) -> float:
        e = self.expected_shares[i]
        return math.sqrt(e * (1 - e) / self.eligible_total)

    def _is_skewed(self, i: int) -> bool:
        deviation = abs(self._deviation(i))
        if deviation <= RELATIVE_TOLERANCE * self.expected_shares[i]:
            return False
        if self.policy == BalancingPolicy.RANDOM:
            return self.p_value is not None and self.p_value < SIGNIFICANCE
        return deviation > NOISE_SIGMAS * self._noise(i)

    def _can_resolve_tolerance(self) -> bool:
        """Whether this many requests would reveal a deviation of RELATIVE_TOLERANCE on the
        instance with the smallest expected share."""
        smallest = min(self._judged, key=lambda i: self.expected_shares[i])
        return NOISE_SIGMAS * self._noise(smallest) <= RELATIVE_TOLERANCE * self.expected_shares[smallest]

    @property
    def verdict(self) -> dict[str, Any]:
        if not self.eligible_total:
            return {"status": TOO_FEW_REQUESTS, "summary": "No requests reached a healthy instance."}
        skewed = [i for i in self._judged if self._is_skewed(i)]
        if skewed:
            # Name the most over-served instance; a starved one only when none is over-served enough.
            worst = max(skewed, key=lambda i: self._deviation(i) / self.expected_shares[i])
            share, expected = self._share(worst), self.expected_shares[worst]
            return {
                "status": SKEWED,
                "instance": self.names[worst],
                "share": share,
                "expected_share": expected,
                "summary": f"{self.names[worst]} gets {share:.1%} of the requests where {expected:.1%} is expected "
                f"({share / expected:.2f}× its share).",
            }
        if not self._can_resolve_tolerance():
            return {
                "status": TOO_FEW_REQUESTS,
                "summary": f"{self.eligible_total} requests are too few to tell a "
                f"{RELATIVE_TOLERANCE:.0%} imbalance from chance.",
            }
        return {"status": BALANCED, "summary": "Every instance gets its expected share."}

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.total,
            "instances": [
                {
                    "instance": name,
                    "requests": requests,
                    "share": requests / self.total if self.total else None,
                    "expected_share": expected,
                    "deviation": self.deviation(i),
                }
                for i, (name, requests, expected) in enumerate(zip(self.names, self.requests, self.expected_shares))
            ],
            "max_abs_deviation": self.max_abs_deviation,
            "chi_square": self.chi_square,
            "degrees_of_freedom": max(0, len(self._eligible) - 1),
            "p_value": self.p_value,
            # χ² assumes independent random choices: for other policies the UI shows it greyed out.
            "chi_square_applies": self.policy == BalancingPolicy.RANDOM,
            "jain_index": self.jain_index,
            "verdict": self.verdict,
        }


def expected_weight(instance: Instance, health: str, policy: str, start: datetime, end: datetime) -> tuple[float, str]:
    """What the policy owes the instance over [start, end), and why it owes nothing if it does not.

    Health is only known as it is now (``health``: the stored one, or unknown once its datacenter is
    out of date, see HealthFreshness); presence (first seen, deregistered) is known in time, so an
    instance that came or went during the window is owed its part of the window.
    """
    if instance.in_maintenance:
        return 0, "in_maintenance"
    if health == Health.CRITICAL:
        return 0, "critical"
    present_from = max(start, instance.first_seen)
    present_until = min(end, instance.deregistered_at) if instance.deregistered_at else end
    if present_until <= start:
        return 0, "deregistered"
    presence = max(0.0, (present_until - present_from) / (end - start))
    if policy == BalancingPolicy.WEIGHTED:
        weight = instance.weight_warning if health == Health.WARNING else instance.weight_passing
        if weight <= 0:
            return 0, "zero_weight"
    else:
        weight = 1
    return weight * presence, ""


class BalancerWindow:
    """The instances and per-minute requests of a time window, from which reports are built."""

    def __init__(self, window: Window, service_ids: Collection[int] | None = None) -> None:
        """``service_ids``: only the requests these services' instances served (a live update of a few)."""
        self.window = window
        self.end = window.until
        self.start = window.since
        self.recent_from = self.end - timedelta(minutes=RECENT_MINUTES)
        self.freshness = HealthFreshness.now()
        # instance id -> [(caller id or None, minute, count)]
        self.rows: defaultdict[int, list[tuple[int | None, datetime, int]]] = defaultdict(list)
        rollups = InstanceRollup.objects.filter(minute__gte=self.start, minute__lt=self.end)
        if service_ids is not None:
            rollups = rollups.filter(instance__service_id__in=service_ids)
        self.rollups = rollups
        for instance_id, caller_id, minute, count in rollups.values_list("instance_id", "caller_id", "minute", "count"):
            self.rows[instance_id].append((caller_id, minute, count))

    def service_ids(self) -> set[int]:
        return set(self.rollups.values_list("instance__service_id", flat=True).distinct())

    def _instances(self, service: Service, candidates: Iterable[Instance] | None = None) -> list[Instance]:
        """The instances the window knows of; ``candidates``, the service's instances by identity, spare
        a query per service when the overview has read them all at once."""
        if candidates is None:
            candidates = Instance.objects.unmerged().filter(service=service).order_by("identity")
        return [
            instance
            for instance in candidates
            if instance.id in self.rows or not (instance.deregistered_at and instance.deregistered_at <= self.start)
        ]

    def _flags(self, instance: Instance, reason: str) -> list[dict[str, Any]]:
        """Why an instance that should get no traffic is a problem: it got some when it should not."""
        minutes = [(minute, count) for _, minute, count in self.rows.get(instance.id, ())]
        flags: list[dict[str, Any]] = []
        if reason == UNREGISTERED:
            served = sum(count for _, count in minutes)
            return [{"reason": UNREGISTERED, "requests": served, "since": None}] if served else []
        if instance.deregistered_at:
            after = sum(count for minute, count in minutes if minute >= instance.deregistered_at)
            if after:
                flags.append({"reason": "deregistered", "requests": after, "since": instance.deregistered_at})
        for state in ("in_maintenance", "critical"):
            if reason == state:
                recent = sum(count for minute, count in minutes if minute >= self.recent_from)
                if recent:
                    flags.append({"reason": state, "requests": recent, "since": None})
        return flags

    def statistics(
        self,
        policy: str,
        instances: Sequence[Instance],
        weights: Sequence[float],
        caller_ids: Collection[int | None] | None = None,
    ) -> BalanceStatistics:
        requests = [
            sum(
                count
                for caller_id, _, count in self.rows.get(instance.id, ())
                if caller_ids is None or caller_id in caller_ids
            )
            for instance in instances
        ]
        partial = [
            instance.first_seen > self.start or bool(instance.deregistered_at and instance.deregistered_at < self.end)
            for instance in instances
        ]
        return BalanceStatistics(policy, [i.identity for i in instances], requests, weights, partial)

    def report(
        self, service: Service, per_caller: bool = True, candidates: Iterable[Instance] | None = None
    ) -> dict[str, Any]:
        policy = service.balancing_policy or BalancingPolicy.ROUND_ROBIN
        instances = self._instances(service, candidates)
        recorded = any(instance.in_registry for instance in instances)
        if recorded:
            # A name that only spans gave is an instance of the window only while it serves requests in it.
            instances = [instance for instance in instances if instance.in_registry or instance.id in self.rows]
        health = [self.freshness.shown(i.health, i.in_consul, i.datacenter) for i in instances]
        owed = [
            expected_weight(instance, shown, policy, self.start, self.end)
            if instance.in_registry or not recorded
            else (0.0, UNREGISTERED)
            for instance, shown in zip(instances, health)
        ]
        weights = [weight for weight, _ in owed]
        overall = self.statistics(policy, instances, weights)
        report: dict[str, Any] = {
            "service": service.name,
            "policy": policy,
            "policy_assumed": not service.balancing_policy,
            "window": self.window.as_dict(),
            **overall.as_dict(),
            "flags": [
                {"instance": instance.identity, **flag}
                for instance, (_, reason) in zip(instances, owed)
                for flag in self._flags(instance, reason)
            ],
        }
        for row, shown, (_, reason) in zip(report["instances"], health, owed):
            row["health"] = shown
            row["ineligible_reason"] = reason
        if not overall.eligible_total and any(flag["reason"] == UNREGISTERED for flag in report["flags"]):
            report["verdict"]["summary"] = (
                "Every request was served by an instance that neither Consul nor an operator recorded."
            )
        if per_caller:
            callers = {caller_id for i in instances for caller_id, _, _ in self.rows.get(i.id, ())}
            caller_ids = sorted(callers, key=lambda c: (c is not None, c or 0))
            names: dict[int | None, str] = dict(
                Service.objects.filter(id__in=[c for c in caller_ids if c]).values_list("id", "name")
            )
            report["callers"] = [
                # An empty caller is an entry request or an uninstrumented client.
                {"caller": names.get(caller_id), **self.statistics(policy, instances, weights, {caller_id}).as_dict()}
                for caller_id in caller_ids
            ]
        return report

    def overview(self) -> dict[str, Any]:
        return {"window": self.window.as_dict(), "services": list(self.summaries().values())}

    def summaries(self) -> dict[int, dict[str, Any]]:
        """Each service's summary, by service id (of the services this window reads)."""
        services = Service.objects.filter(id__in=self.service_ids()).order_by("name")
        candidates: defaultdict[int, list[Instance]] = defaultdict(list)
        for instance in Instance.objects.unmerged().filter(service__in=services).order_by("identity"):
            candidates[instance.service_id].append(instance)
        summaries = {}
        for service in services:
            report = self.report(service, per_caller=False, candidates=candidates[service.id])
            summaries[service.id] = {
                key: report[key]
                for key in (
                    "service",
                    "policy",
                    "policy_assumed",
                    "requests",
                    "max_abs_deviation",
                    "p_value",
                    "chi_square_applies",
                    "jain_index",
                    "verdict",
                    "flags",
                )
            }
        return summaries


def balancer_record(summary: dict[str, Any]) -> dict[str, Any]:
    """A service's summary as the live view keys it."""
    return {"id": summary["service"], **summary}


def balancers_view(window: Window) -> dict[str, Any]:
    """The live balancer overview: every service's summary, read whole (``live_balancers`` keeps it)."""
    summaries = BalancerWindow(window).summaries().values()
    return {"window": window.as_dict(), "services": sorted(map(balancer_record, summaries), key=lambda r: r["id"])}
