"""``/metrics``: meshscope's own health and its derived figures, in Prometheus's text exposition format.

Every scrape reads the stored state through a collector registered on a registry of its own, so any
process behind the load balancer answers the same and nothing is kept between scrapes. Nothing here
waits for a computation another process runs: each figure comes from the rows already stored.

What the database keeps is pruned (spans after SPAN_RETENTION_HOURS, rollups and dead letters after
ROLLUP_RETENTION_DAYS, every minute), so a sum of its rows falls now and then. A counter must never
fall (``rate()`` would read each pruning as a reset and a burst), so the figures are gauges: rates
and counts over the last WINDOW_SECONDS, and what is kept now.
"""

import hmac
import time
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db.models import Count, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import RedisError

from dashboard.live.broadcast import last_computations
from topology.balancing import BALANCED, SKEWED, TOO_FEW_REQUESTS, BalancerWindow
from topology.consumer_lag import lag_overview, latest_for_group
from topology.edge_totals import edge_totals
from topology.latency import GROWTH
from topology.models import DeadLetter, EdgeRollup, IngestRollup, Instance, Service, SourceStatus
from topology.models.lag import LagStatus
from topology.propagation import flows
from topology.span_record import WIRE_FORMATS
from topology.window import Window

WINDOW_SECONDS = 300
OVER_WINDOW = "over the last 5 minutes"
# Upper bounds of the exported latency buckets, in seconds. The rollups keep buckets 10 % wide; each
# exported bucket counts the stored buckets whose upper bound is at most its own, so a bound is
# within 10 % of the truth, as every percentile meshscope shows is.
LATENCY_BOUNDS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Each instance in the window is three series: its share, its expected share and its deviation.
SERIES_PER_INSTANCE = 3
EDGE_LABELS = ["source", "target", "protocol", "topic"]
VERDICTS = (BALANCED, SKEWED, TOO_FEW_REQUESTS)


def _gauge(name: str, documentation: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


def _histogram_buckets(stored: dict[str, int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs from LatencyHistogram buckets (``{"k": count}``, k's upper bound is
    GROWTH**k ms)."""
    by_bound = sorted((GROWTH ** int(key) / 1000, count) for key, count in stored.items())
    buckets, cumulative, index = [], 0, 0
    for bound in LATENCY_BOUNDS_SECONDS:
        while index < len(by_bound) and by_bound[index][0] <= bound * (1 + 1e-9):
            cumulative += by_bound[index][1]
            index += 1
        buckets.append((repr(bound), float(cumulative)))
    buckets.append(("+Inf", float(sum(count for _, count in by_bound))))
    return buckets


class MeshscopeCollector(Collector):
    """The figures of one scrape, read from the database when ``collect`` runs."""

    def __init__(self, window: Window, max_instance_series: int) -> None:
        self.window = window
        self.max_instance_series = max_instance_series

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._live()
        yield from self._sources()
        yield from self._edges()
        yield from self._balancers()
        yield from self._lag()
        yield from self._flows()

    # --- meshscope itself ---------------------------------------------------------------------

    def _live(self) -> Iterator[Metric]:
        """How long the broadcaster took to compute each live view, and how long ago, as it stored them."""
        compute = _gauge(
            "meshscope_live_compute_seconds",
            "How long the broadcaster took to compute a live view for one window, its latest computation.",
            ["view", "window"],
        )
        age = _gauge(
            "meshscope_live_computed_age_seconds",
            "Seconds since the broadcaster last computed a live view for one window (views nobody watches age).",
            ["view", "window"],
        )
        try:
            computations = last_computations()
        except RedisError:
            computations = []  # /readyz names Redis; the other figures come from the database
        now = time.time()
        for view, seconds, milliseconds, at in computations:
            compute.add_metric([view, str(seconds)], milliseconds / 1000)
            age.add_metric([view, str(seconds)], max(0.0, now - at))
        yield compute
        yield age

    def _ingest(self) -> Iterator[Metric]:
        totals = IngestRollup.objects.filter(**self.window.minutes()).aggregate(
            spans=Sum("spans"), messages=Sum("messages"), duplicates=Sum("duplicate_spans"), rejected=Sum("rejected")
        )
        for key, name, what in (
            ("spans", "spans_stored", "New spans stored"),
            ("messages", "messages", "Kafka messages of spans read"),
            ("duplicates", "duplicate_spans", "Spans read again (redelivery) and not counted twice"),
            ("rejected", "dead_letters_recorded", "Messages and spans dead-lettered"),
        ):
            family = _gauge(
                f"meshscope_ingest_{name}_per_second",
                f"{what} per second by meshscope's span consumers, {OVER_WINDOW}.",
            )
            family.add_metric([], self.window.per_second(totals[key] or 0))
            yield family

        by_format = IngestRollup.objects.filter(**self.window.minutes()).aggregate(
            **{wire_format: Sum(f"spans_{wire_format}") for wire_format in WIRE_FORMATS}
        )
        stored = _gauge(
            "meshscope_ingest_spans_stored_by_format_per_second",
            f"New spans stored per second by the wire format they came in, {OVER_WINDOW}.",
            ["format"],
        )
        for wire_format in WIRE_FORMATS:
            stored.add_metric([wire_format], self.window.per_second(by_format[wire_format] or 0))
        yield stored

        dead = _gauge(
            "meshscope_dead_letters",
            "Dead letters kept (for ROLLUP_RETENTION_DAYS) by reason, as /api/ingest/ counts them.",
            ["reason"],
        )
        for reason, count in DeadLetter.objects.values_list("reason").annotate(n=Count("id")).order_by("reason"):
            dead.add_metric([reason], count)
        yield dead

        lag = latest_for_group(settings.KAFKA_CONSUMER_GROUP)
        messages = _gauge(
            "meshscope_ingest_lag_messages",
            "Messages meshscope's own span consumer group (KAFKA_CONSUMER_GROUP) has yet to read, at the latest sample.",
        )
        seconds = _gauge(
            "meshscope_ingest_lag_seconds",
            "How far behind meshscope's own span consumer group is, in seconds, at the latest sample.",
        )
        if lag is not None:
            messages.add_metric([], lag["lag_messages"])
            if lag["lag_seconds"] is not None:
                seconds.add_metric([], lag["lag_seconds"])
        yield messages
        yield seconds

    def _sources(self) -> Iterator[Metric]:
        up = _gauge(
            "meshscope_source_up",
            "1 when the data source (a Consul datacenter, Kafka) answered its collector lately, 0 when it is stale.",
            ["source"],
        )
        staleness = _gauge(
            "meshscope_source_staleness_seconds",
            "Seconds since the data source last answered its collector (+Inf if it never did).",
            ["source"],
        )
        now = timezone.now()
        for status in SourceStatus.objects.all():
            shown = status.as_dict()
            up.add_metric([status.name], 0.0 if shown["stale"] else 1.0)
            last = shown["last_success"]
            staleness.add_metric([status.name], (now - last).total_seconds() if last else float("inf"))
        yield up
        yield staleness

    # --- the mesh -------------------------------------------------------------------------------

    def _edges(self) -> Iterator[Metric]:
        totals = edge_totals(self.window)
        ids = {service for source, target, _, _ in totals for service in (source, target)}
        names = dict(Service.objects.filter(id__in=ids).values_list("id", "name"))
        sums = {
            (row["source_id"], row["target_id"], row["protocol"], row["topic"]): row["total"]
            for row in EdgeRollup.objects.filter(**self.window.minutes())
            .values("source_id", "target_id", "protocol", "topic")
            .annotate(total=Sum("latency_sum_ms"))
            .order_by()
        }
        requests = _gauge(
            "meshscope_edge_requests_per_second",
            f"Calls from one service to another per second, {OVER_WINDOW} (as /api/topology/?window=300 gives rps).",
            EDGE_LABELS,
        )
        errors = _gauge(
            "meshscope_edge_error_ratio",
            f"The part of the calls from one service to another that failed, {OVER_WINDOW} (as /api/topology/ gives error_rate).",
            EDGE_LABELS,
        )
        latency = HistogramMetricFamily(
            "meshscope_edge_latency_seconds",
            f"Latency of calls (the caller's CLIENT span), or propagation delay through a topic, {OVER_WINDOW}: "
            "not cumulative, so take histogram_quantile of it directly, not of its rate. Bounds within 10 %.",
            labels=EDGE_LABELS,
        )
        for (source, target, protocol, topic), total in sorted(totals.items()):
            if source not in names or target not in names:
                continue  # deleted in the admin between the two reads
            labels = [names[source], names[target], protocol, topic]
            requests.add_metric(labels, self.window.per_second(total.count))
            errors.add_metric(labels, round(total.errors / total.count, 4) if total.count else 0.0)
            latency_sum = sums.get((source, target, protocol, topic))
            latency.add_metric(
                labels, _histogram_buckets(total.histogram.buckets), latency_sum / 1000 if latency_sum else 0.0
            )
        yield requests
        yield errors
        yield latency

    def _balancer_reports(self) -> list[dict[str, Any]]:
        """The per-service reports /api/balancers/<service>/ gives, without the per-caller breakdown."""
        balancers = BalancerWindow(self.window)
        services = Service.objects.filter(id__in=balancers.service_ids()).order_by("name")
        candidates: dict[int, list[Instance]] = {}
        for instance in Instance.objects.filter(service__in=services).order_by("identity"):
            candidates.setdefault(instance.service_id, []).append(instance)
        return [
            balancers.report(service, per_caller=False, candidates=candidates.get(service.id, []))
            for service in services
        ]

    def _balancers(self) -> Iterator[Metric]:
        jain = _gauge(
            "meshscope_balancer_jain_fairness_index",
            f"Jain's fairness index of each instance's share over its expected share, {OVER_WINDOW} (1 is fair).",
            ["service"],
        )
        p_value = _gauge(
            "meshscope_balancer_chi_square_p_value",
            f"p-value of Pearson's chi-squared test of the instances' requests against their expected shares, {OVER_WINDOW}.",
            ["service"],
        )
        verdict = _gauge(
            "meshscope_balancer_verdict",
            f"1 for the service's balancer verdict (balanced, skewed, too_few_requests) {OVER_WINDOW}, 0 for the others.",
            ["service", "verdict"],
        )
        share = _gauge(
            "meshscope_balancer_instance_share_ratio",
            f"The part of the service's requests this instance served, {OVER_WINDOW}.",
            ["service", "instance"],
        )
        expected = _gauge(
            "meshscope_balancer_instance_expected_share_ratio",
            f"The part this instance would serve if the balancing policy worked perfectly, {OVER_WINDOW}.",
            ["service", "instance"],
        )
        deviation = _gauge(
            "meshscope_balancer_instance_deviation_ratio",
            f"Share among the eligible instances minus the expected share, {OVER_WINDOW}.",
            ["service", "instance"],
        )
        rows: list[tuple[str, dict[str, Any]]] = []
        for report in self._balancer_reports():
            service = report["service"]
            if report["jain_index"] is not None:
                jain.add_metric([service], report["jain_index"])
            if report["p_value"] is not None:
                p_value.add_metric([service], report["p_value"])
            for status in VERDICTS:
                verdict.add_metric([service, status], 1.0 if report["verdict"]["status"] == status else 0.0)
            rows.extend((service, row) for row in report["instances"])
        # The worst instances first, so that those kept under the cap are the ones an alert needs.
        rows.sort(key=lambda item: (-abs(item[1]["deviation"] or 0.0), item[0], item[1]["instance"]))
        kept = rows[: self.max_instance_series // SERIES_PER_INSTANCE]
        for service, row in kept:
            labels = [service, row["instance"]]
            if row["share"] is not None:
                share.add_metric(labels, row["share"])
            expected.add_metric(labels, row["expected_share"])
            if row["deviation"] is not None:
                deviation.add_metric(labels, row["deviation"])
        yield jain
        yield p_value
        yield verdict
        yield share
        yield expected
        yield deviation
        dropped = _gauge(
            "meshscope_metrics_series_dropped",
            "Per-instance series left out of this scrape because they exceed METRICS_MAX_INSTANCE_SERIES.",
        )
        dropped.add_metric([], (len(rows) - len(kept)) * SERIES_PER_INSTANCE)
        yield dropped

    def _lag(self) -> Iterator[Metric]:
        group_messages = _gauge(
            "meshscope_consumer_group_lag_messages",
            "Messages the consumer group has yet to read over all its partitions, at the latest sample.",
            ["group"],
        )
        group_seconds = _gauge(
            "meshscope_consumer_group_lag_seconds",
            "How far behind the consumer group is, in seconds (its worst partition), at the latest sample.",
            ["group"],
        )
        status = _gauge(
            "meshscope_consumer_group_status",
            "1 for the consumer group's status by Burrow's rules (OK, WARN, STOP, STALL, REWIND), 0 for the others.",
            ["group", "status"],
        )
        partition_messages = _gauge(
            "meshscope_consumer_partition_lag_messages",
            "End offset minus the group's committed offset, at the latest sample.",
            ["group", "topic", "partition"],
        )
        partition_seconds = _gauge(
            "meshscope_consumer_partition_lag_seconds",
            "Age of the record at the group's committed offset (estimated when it is gone), at the latest sample.",
            ["group", "topic", "partition"],
        )
        for group in lag_overview(self.window):
            name = group["group"]
            group_messages.add_metric([name], group["lag_messages"])
            if group["lag_seconds"] is not None:
                group_seconds.add_metric([name], group["lag_seconds"])
            for state in LagStatus.values:
                status.add_metric([name, state], 1.0 if group["status"] == state else 0.0)
            for partition in group["partitions"]:
                labels = [name, partition["topic"], str(partition["partition"])]
                partition_messages.add_metric(labels, partition["lag_messages"])
                if partition["lag_seconds"] is not None:
                    partition_seconds.add_metric(labels, partition["lag_seconds"])
        yield group_messages
        yield group_seconds
        yield status
        yield partition_messages
        yield partition_seconds

    def _flows(self) -> Iterator[Metric]:
        labels = ["producer", "topic", "consumer"]
        delay = _gauge(
            "meshscope_flow_propagation_delay_seconds",
            f"CONSUMER span start minus PRODUCER span start, p50, p95 and p99 {OVER_WINDOW} (as /api/flows/ gives them).",
            [*labels, "quantile"],
        )
        deliveries = _gauge(
            "meshscope_flow_deliveries",
            f"Messages consumed through the topic (PRODUCER and CONSUMER spans paired), {OVER_WINDOW}.",
            labels,
        )
        negative = _gauge(
            "meshscope_flow_negative_delays",
            f"Deliveries that seem consumed before they were produced (the two clocks disagree), {OVER_WINDOW}.",
            labels,
        )
        for flow in flows(self.window)["flows"]:
            names = [flow["producer"], flow["topic"], flow["consumer"]]
            for quantile, key in (("0.5", "p50_ms"), ("0.95", "p95_ms"), ("0.99", "p99_ms")):
                if flow[key] is not None:
                    delay.add_metric([*names, quantile], flow[key] / 1000)
            deliveries.add_metric(names, flow["count"])
            negative.add_metric(names, flow["negative_delays"])
        yield delay
        yield deliveries
        yield negative


def bearer_token(request: HttpRequest) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def unauthorized(realm: str) -> HttpResponse:
    response = HttpResponse("A valid bearer token is required.\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = f'Bearer realm="{realm}"'
    return response


def exposition(window: Window) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MeshscopeCollector(window, settings.METRICS_MAX_INSTANCE_SERIES))
    return generate_latest(registry)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        raise Http404("Metrics are off: set METRICS_TOKEN.")
    if not token_matches(bearer_token(request), settings.METRICS_TOKEN):
        return unauthorized("meshscope metrics")
    # The classic text format: every name here is a legacy one, and Prometheus 2 and 3 both read it.
    return HttpResponse(exposition(Window.last(WINDOW_SECONDS)), content_type=CONTENT_TYPE_PLAIN_0_0_4)
