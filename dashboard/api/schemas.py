"""The shapes of the API's answers, for the OpenAPI schema: what each field is, its type, and whether
it may be null. The views build plain dicts in the domain; these serializers only describe them, and
tests/test_openapi.py checks every answer against them with schemathesis.

Fields named ``source`` and ``errors`` shadow attributes of DRF's Field and Serializer for the type
checker only: DRF takes declared fields off the class, hence their ``type: ignore``.
"""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from topology.balancing import BALANCED, SKEWED, TOO_FEW_REQUESTS
from topology.models.lag import LagSecondsMethod, LagStatus
from topology.models.services import BalancingPolicy, Health

HEALTH = [*Health.values]
SOURCES = ["consul", "traces", "both"]
SYNC = ["sync", "async"]
KINDS = ["server", "client", "producer", "consumer", "internal"]
POLICIES = [*BalancingPolicy.values]
VERDICTS = [BALANCED, SKEWED, TOO_FEW_REQUESTS]
INSTANCE_HEALTH = [*HEALTH, "maintenance"]
LAG_STATUSES = [*LagStatus.values]


def _ms(help_text: str) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, help_text=f"{help_text} in milliseconds; null without samples.")


class PercentilesMixin(serializers.Serializer):
    p50_ms = _ms("Median")
    p95_ms = _ms("95th percentile")
    p99_ms = _ms("99th percentile")


class WindowSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    minutes = serializers.FloatField()


class SourceSerializer(serializers.Serializer):
    name = serializers.CharField(help_text='"kafka", or "consul:<datacenter>".')
    configured = serializers.BooleanField()
    stale = serializers.BooleanField(help_text="The source failed, or no collector reached it lately.")
    stale_since = serializers.DateTimeField(allow_null=True)
    stale_reason = serializers.CharField(allow_blank=True)
    last_success = serializers.DateTimeField(allow_null=True)


class SourceListSerializer(serializers.Serializer):
    sources = SourceSerializer(many=True)


# --- Topology ------------------------------------------------------------------------------------


class NodeSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()
    count = serializers.IntegerField(help_text="Requests served in the window.")
    rps = serializers.FloatField(help_text="Requests served per second.")
    error_rate = serializers.FloatField(help_text="The part of them that failed, 0 to 1.")
    health = serializers.ChoiceField(
        HEALTH, help_text="The worst health Consul gives a live instance whose health is current (see health_stale)."
    )
    health_stale = serializers.BooleanField(
        help_text="Consul's health of some of its live instances is out of date: their datacenter is no longer "
        "read, or stale for longer than HEALTH_STALE_AFTER_SECONDS (README); those count as unknown."
    )
    source = serializers.ChoiceField(SOURCES)  # type: ignore[assignment]
    instances = serializers.IntegerField()
    tags = serializers.ListField(child=serializers.CharField(allow_blank=True))
    balancing_policy = serializers.ChoiceField([*POLICIES, ""], allow_blank=True)


class EdgeSerializer(PercentilesMixin):
    id = serializers.CharField(help_text="source->target/protocol/topic")
    source = serializers.CharField()  # type: ignore[assignment]
    target = serializers.CharField()
    protocol = serializers.CharField()
    sync = serializers.ChoiceField(SYNC)
    topic = serializers.CharField(allow_blank=True, help_text="The topic of an asynchronous edge, else empty.")
    count = serializers.IntegerField(help_text="Calls in the window.")
    rps = serializers.FloatField()
    error_rate = serializers.FloatField()
    negative_delays = serializers.IntegerField()


class TopologySerializer(serializers.Serializer):
    window = serializers.IntegerField(help_text="Seconds.")
    until = serializers.DateTimeField()
    covered_seconds = serializers.IntegerField(
        help_text="What the window's rollups span (the window plus the part of its first minute before it): "
        "rps is count divided by it."
    )
    generated_at = serializers.DateTimeField()
    nodes = NodeSerializer(many=True)
    edges = EdgeSerializer(many=True)
    sources = SourceSerializer(many=True)


# --- Routes and traces ---------------------------------------------------------------------------


class RouteSerializer(PercentilesMixin):
    service = serializers.CharField()
    operation = serializers.CharField()
    count = serializers.IntegerField()
    rps = serializers.FloatField()
    error_rate = serializers.FloatField()


class TraceSummarySerializer(serializers.Serializer):
    trace_id = serializers.CharField()
    root_service = serializers.CharField()
    root_operation = serializers.CharField()
    started_at = serializers.DateTimeField()
    duration_ms = serializers.FloatField()
    span_count = serializers.IntegerField()
    error = serializers.BooleanField(help_text="Some span of the trace failed.")


class HopSerializer(PercentilesMixin):
    service = serializers.CharField()
    operation = serializers.CharField()
    count = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["children"] = HopSerializer(many=True)
        return fields


class RouteTreeSerializer(serializers.Serializer):
    tree = HopSerializer()
    requests = serializers.IntegerField(help_text="The requests to the route in the window's minutes: all of them.")
    recent = TraceSummarySerializer(many=True)
    slow = TraceSummarySerializer(many=True)
    failed = TraceSummarySerializer(many=True)


class SpanNodeSerializer(serializers.Serializer):
    span_id = serializers.CharField()
    parent_id = serializers.CharField(allow_blank=True)
    service = serializers.CharField()
    instance = serializers.CharField(allow_blank=True)
    kind = serializers.ChoiceField(KINDS)
    name = serializers.CharField(allow_blank=True)
    protocol = serializers.CharField()
    started_at = serializers.DateTimeField()
    start_offset_ms = serializers.FloatField()
    duration_ms = serializers.FloatField()
    error = serializers.BooleanField()
    status_code = serializers.CharField(allow_blank=True)
    attributes = serializers.DictField(help_text="The span's attributes as it sent them (at most 64).")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["children"] = SpanNodeSerializer(many=True)
        return fields


class TraceSerializer(serializers.Serializer):
    trace_id = serializers.CharField()
    span_count = serializers.IntegerField()
    spans = SpanNodeSerializer(many=True, help_text="Root spans (and orphans), each with its children.")


# --- Our own consumer, and consumer lag ---------------------------------------------------------


class PartitionLagSerializer(serializers.Serializer):
    topic = serializers.CharField()
    partition = serializers.IntegerField()
    committed_offset = serializers.IntegerField()
    end_offset = serializers.IntegerField()
    lag_messages = serializers.IntegerField()
    lag_seconds = serializers.FloatField(allow_null=True)
    lag_seconds_method = serializers.ChoiceField(LagSecondsMethod.values)
    status = serializers.ChoiceField(LAG_STATUSES)
    commits_in_window = serializers.IntegerField()
    trend_messages_per_second = serializers.FloatField(allow_null=True)
    seconds_to_catch_up = serializers.FloatField(allow_null=True)


class GroupLagSerializer(serializers.Serializer):
    group = serializers.CharField()
    status = serializers.ChoiceField(LAG_STATUSES, allow_null=True, help_text="The worst partition's.")
    sampled_at = serializers.DateTimeField()
    lag_messages = serializers.IntegerField()
    lag_seconds = serializers.FloatField(allow_null=True)
    trend_messages_per_second = serializers.FloatField(allow_null=True)
    seconds_to_catch_up = serializers.FloatField(allow_null=True)
    partitions = PartitionLagSerializer(many=True)


class LagPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    lag_messages = serializers.IntegerField()
    lag_seconds = serializers.FloatField(allow_null=True)


class GroupLagSeriesSerializer(GroupLagSerializer):
    series = LagPointSerializer(many=True)


class ConsumerLagSerializer(serializers.Serializer):
    kafka = SourceSerializer(allow_null=True)
    groups = GroupLagSeriesSerializer(many=True)


class ThroughputSerializer(serializers.Serializer):
    minute = serializers.DateTimeField(allow_null=True, help_text="The last complete minute.")
    spans_per_second = serializers.FloatField()
    messages_per_second = serializers.FloatField()


class IngestMinuteSerializer(serializers.Serializer):
    minute = serializers.DateTimeField()
    messages = serializers.IntegerField()
    spans = serializers.IntegerField()
    duplicate_spans = serializers.IntegerField()
    rejected = serializers.IntegerField()
    spans_by_format = serializers.DictField(
        child=serializers.IntegerField(), help_text="New spans by the wire format they came in."
    )


class IngestSerializer(serializers.Serializer):
    consumer_group = serializers.CharField()
    topics = serializers.DictField(child=serializers.CharField(), help_text="Topic → format.")
    lag = GroupLagSerializer(allow_null=True, help_text="Null until the group was sampled.")
    throughput = ThroughputSerializer()
    minutes = IngestMinuteSerializer(many=True)
    dead_letters = serializers.DictField(child=serializers.IntegerField(), help_text="Reason → count kept.")
    sources = SourceSerializer(many=True)


class FlowFiguresSerializer(PercentilesMixin):
    count = serializers.IntegerField()
    negative_delays = serializers.IntegerField()
    negative_share = serializers.FloatField(allow_null=True)
    clock_skew_suspected = serializers.BooleanField()


class FlowMinuteSerializer(FlowFiguresSerializer):
    minute = serializers.DateTimeField()


class FlowSerializer(FlowFiguresSerializer):
    producer = serializers.CharField()
    topic = serializers.CharField()
    consumer = serializers.CharField()
    series = FlowMinuteSerializer(many=True)


class FlowListSerializer(serializers.Serializer):
    window = WindowSerializer()
    flows = FlowSerializer(many=True)


# --- Services and side panels ---------------------------------------------------------------------


class ServiceRowSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    source = serializers.ChoiceField(SOURCES)  # type: ignore[assignment]
    datacenter = serializers.CharField(allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(allow_blank=True))
    instances = serializers.IntegerField()
    health_counts = serializers.DictField(child=serializers.IntegerField(), help_text="Health → live instances.")
    health = serializers.ChoiceField(HEALTH)
    health_stale = serializers.BooleanField(
        help_text="Consul's health of some of its live instances is out of date: their datacenter is no longer "
        "read, or stale for longer than HEALTH_STALE_AFTER_SECONDS (README); those count as unknown."
    )
    last_seen = serializers.DateTimeField()
    deregistered = serializers.BooleanField()
    admin_url = serializers.CharField(allow_blank=True)


class ServiceListSerializer(serializers.Serializer):
    services = ServiceRowSerializer(many=True)


class StatsSerializer(PercentilesMixin):
    count = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    rps = serializers.FloatField()
    error_rate = serializers.FloatField()


class NeighbourSerializer(StatsSerializer):
    service = serializers.CharField()
    protocol = serializers.CharField()
    topic = serializers.CharField(allow_blank=True)
    sync = serializers.ChoiceField(SYNC)


class OperationSerializer(PercentilesMixin):
    name = serializers.CharField(allow_blank=True)
    kind = serializers.ChoiceField(["server", "consumer"])
    count = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    rps = serializers.FloatField()
    error_rate = serializers.FloatField()


class ServiceInstanceSerializer(serializers.Serializer):
    identity = serializers.CharField()
    address = serializers.CharField(allow_blank=True)
    node = serializers.CharField(allow_blank=True)
    health = serializers.ChoiceField(INSTANCE_HEALTH, help_text="unknown when health_stale.")
    health_stale = serializers.BooleanField(
        help_text="Consul's health of the instance is out of date: its datacenter is no longer read, or stale for "
        "longer than HEALTH_STALE_AFTER_SECONDS (README)."
    )
    weight = serializers.IntegerField()
    weight_passing = serializers.IntegerField()
    weight_warning = serializers.IntegerField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    share = serializers.FloatField(allow_null=True)


class ServiceDetailSerializer(serializers.Serializer):
    name = serializers.CharField()
    source = serializers.ChoiceField(SOURCES)  # type: ignore[assignment]
    datacenter = serializers.CharField(allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(allow_blank=True))
    balancing_policy = serializers.ChoiceField([*POLICIES, ""], allow_blank=True)
    first_seen = serializers.DateTimeField()
    last_seen = serializers.DateTimeField()
    admin_url = serializers.CharField(allow_blank=True)
    window = serializers.IntegerField()
    until = serializers.DateTimeField()
    instances = ServiceInstanceSerializer(many=True)
    operations = OperationSerializer(many=True)
    callers = NeighbourSerializer(many=True)
    callees = NeighbourSerializer(many=True)


class EdgeMinuteSerializer(StatsSerializer):
    minute = serializers.DateTimeField()


class EdgeSampleSerializer(serializers.Serializer):
    trace_id = serializers.CharField()
    operation = serializers.CharField(allow_blank=True)
    started_at = serializers.DateTimeField()
    duration_ms = serializers.FloatField()
    error = serializers.BooleanField()
    why = serializers.ChoiceField(["slowest", "example", "failed", "slow", "recent"])


class EdgeDetailSerializer(serializers.Serializer):
    source = serializers.CharField()  # type: ignore[assignment]
    target = serializers.CharField()
    protocol = serializers.CharField(allow_blank=True)
    topic = serializers.CharField(allow_blank=True)
    sync = serializers.ChoiceField(SYNC)
    window = serializers.IntegerField()
    until = serializers.DateTimeField()
    totals = StatsSerializer()
    series = EdgeMinuteSerializer(many=True)
    samples = EdgeSampleSerializer(many=True)


class ShareMinuteSerializer(serializers.Serializer):
    minute = serializers.DateTimeField()
    requests = serializers.IntegerField()
    shares = serializers.DictField(
        child=serializers.FloatField(allow_null=True),
        help_text="Instance → its share; null in a minute without requests.",
    )


class ShareSeriesSerializer(serializers.Serializer):
    service = serializers.CharField()
    instances = serializers.ListField(child=serializers.CharField())
    series = ShareMinuteSerializer(many=True)


# --- Balancers ----------------------------------------------------------------------------------


class VerdictSerializer(serializers.Serializer):
    status = serializers.ChoiceField(VERDICTS)
    summary = serializers.CharField()
    instance = serializers.CharField(required=False, help_text="Only when skewed: the instance named.")
    share = serializers.FloatField(required=False)
    expected_share = serializers.FloatField(required=False)


class FlagSerializer(serializers.Serializer):
    instance = serializers.CharField()
    reason = serializers.ChoiceField(
        ["deregistered", "in_maintenance", "critical", "unregistered"],
        help_text="unregistered: traffic from an instance that neither Consul nor an operator recorded, of a "
        "service whose other instances they did.",
    )
    requests = serializers.IntegerField()
    since = serializers.DateTimeField(allow_null=True)


class BalancerSummarySerializer(serializers.Serializer):
    service = serializers.CharField()
    policy = serializers.ChoiceField(POLICIES)
    policy_assumed = serializers.BooleanField(help_text="No policy is set: round robin is assumed.")
    requests = serializers.IntegerField()
    max_abs_deviation = serializers.FloatField(allow_null=True)
    p_value = serializers.FloatField(allow_null=True)
    chi_square_applies = serializers.BooleanField()
    jain_index = serializers.FloatField(allow_null=True)
    verdict = VerdictSerializer()
    flags = FlagSerializer(many=True)


class BalancerListSerializer(serializers.Serializer):
    window = WindowSerializer()
    services = BalancerSummarySerializer(many=True)


class InstanceShareSerializer(serializers.Serializer):
    instance = serializers.CharField()
    requests = serializers.IntegerField()
    share = serializers.FloatField(allow_null=True)
    expected_share = serializers.FloatField()
    deviation = serializers.FloatField(allow_null=True)


class ReportedInstanceSerializer(InstanceShareSerializer):
    health = serializers.ChoiceField(HEALTH)
    ineligible_reason = serializers.CharField(allow_blank=True, help_text="Why it is owed nothing, if it is not.")


class StatisticsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    instances = InstanceShareSerializer(many=True)
    max_abs_deviation = serializers.FloatField(allow_null=True)
    chi_square = serializers.FloatField(allow_null=True)
    degrees_of_freedom = serializers.IntegerField()
    p_value = serializers.FloatField(allow_null=True)
    chi_square_applies = serializers.BooleanField()
    jain_index = serializers.FloatField(allow_null=True)
    verdict = VerdictSerializer()


class CallerStatisticsSerializer(StatisticsSerializer):
    caller = serializers.CharField(allow_null=True, help_text="Null: entry requests or uninstrumented callers.")


class BalancerReportSerializer(StatisticsSerializer):
    service = serializers.CharField()
    policy = serializers.ChoiceField(POLICIES)
    policy_assumed = serializers.BooleanField()
    window = WindowSerializer()
    instances = ReportedInstanceSerializer(many=True)
    flags = FlagSerializer(many=True)
    callers = CallerStatisticsSerializer(many=True)


# --- Errors -------------------------------------------------------------------------------------


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


BAD_REQUEST = OpenApiResponse(
    {
        "type": "object",
        "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    },
    description="A parameter is missing or out of its bounds: each refused parameter with what is wrong with it.",
)
UNAUTHORIZED = OpenApiResponse(DetailSerializer, description="No login: a session or `Authorization: Token …`.")
NOT_FOUND = OpenApiResponse(DetailSerializer, description="No such thing is stored.")


# Query parameters whose empty value means "not given" (the default), as params.py reads them. An empty
# ``until`` is also now, but its own format (UNTIL_FORMAT) says so.
EMPTY_MEANS_DEFAULT = {"window", "limit", "min_duration_ms", "error"}


def allow_empty_values(result: dict, generator: object, request: object, public: bool) -> dict:
    """A drf-spectacular postprocessing hook: says so (``allowEmptyValue``) of EMPTY_MEANS_DEFAULT."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter.get("name") in EMPTY_MEANS_DEFAULT:
                    parameter["allowEmptyValue"] = True
    return result


def answers(ok: object, *, bad_request: bool = True, not_found: bool = False) -> dict[int, object]:
    """The responses of a GET endpoint: ``ok`` and each error it can give."""
    responses: dict[int, object] = {200: ok, 401: UNAUTHORIZED}
    if bad_request:
        responses[400] = BAD_REQUEST
    if not_found:
        responses[404] = NOT_FOUND
    return responses
