from django.db import models

from topology.latency import LatencyHistogram


class Rollup(models.Model):
    """Per-minute counts and a latency histogram. Kept for ROLLUP_RETENTION_DAYS."""

    minute = models.DateTimeField()
    count = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0)
    latency_buckets = models.JSONField(default=dict, help_text="LatencyHistogram buckets.")

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{type(self).__name__} at {self.minute:%Y-%m-%d %H:%M}: {self.count} calls"

    @property
    def histogram(self) -> LatencyHistogram:
        return LatencyHistogram(self.latency_buckets)


class RollupWithExemplars(Rollup):
    """A rollup that names example traces of its minute: one (from a kept trace when there is one), one
    that failed, and the slowest, whose spans stay stored whatever SPAN_KEEP_RATIO drops
    (``topology.rollup_batch``). The latency of the slowest is the rollup's own measure."""

    example_trace_id = models.CharField(max_length=32, blank=True)
    error_trace_id = models.CharField(max_length=32, blank=True)
    slowest_trace_id = models.CharField(max_length=32, blank=True)
    slowest_ms = models.FloatField(null=True, blank=True)

    class Meta:
        abstract = True


class EdgeRollup(RollupWithExemplars):
    """Calls from one service to another in one minute.

    A synchronous edge (``topic`` empty) measures the caller's CLIENT span duration; an asynchronous
    edge through a topic measures the propagation delay, CONSUMER start minus PRODUCER start.
    Negative delays (clock skew) are counted in ``negative_delays`` and not hidden in the histogram.
    """

    source = models.ForeignKey("topology.Service", on_delete=models.CASCADE, related_name="+")
    target = models.ForeignKey("topology.Service", on_delete=models.CASCADE, related_name="+")
    protocol = models.CharField(max_length=10)
    topic = models.CharField(max_length=255, blank=True)
    negative_delays = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "source", "target", "protocol", "topic"], name="edge_rollup_unique"
            )
        ]
        indexes = [models.Index(fields=["minute"], name="edge_rollup_minute_idx")]

    @property
    def is_async(self) -> bool:
        return bool(self.topic)


class InstanceRollup(Rollup):
    """Requests served by one instance of a callee, per caller (empty caller: an entry request or an
    uninstrumented caller). The balancer statistics read this."""

    instance = models.ForeignKey("topology.Instance", on_delete=models.CASCADE, related_name="+")
    caller = models.ForeignKey("topology.Service", on_delete=models.CASCADE, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "instance", "caller"],
                name="instance_rollup_unique",
                nulls_distinct=False,
            )
        ]
        indexes = [models.Index(fields=["minute"], name="instance_rollup_minute_idx")]


class RouteRollup(RollupWithExemplars):
    """Entry routes: root spans, by service and operation."""

    service = models.ForeignKey("topology.Service", on_delete=models.CASCADE, related_name="+")
    operation = models.CharField(max_length=255)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["minute", "service", "operation"], name="route_rollup_unique")]
        indexes = [models.Index(fields=["minute"], name="route_rollup_minute_idx")]


class RouteHopRollup(Rollup):
    """The hops of an entry route's requests in one minute (the minute its root started): how many
    requests passed through each hop, how many failed there, and the hop's latency (its span's duration).

    A hop is the root or a SERVER or CONSUMER span below it, named by its ``path``: the (service,
    operation) of each hop below the root down to it, as JSON text (``[]`` for the root itself,
    ``[["cart", "GET /cart"], ["pricing", "POST /quote"]]``). Counted from every trace, whatever
    SPAN_KEEP_RATIO keeps, once its trace is settled (``topology.route_hops``), so a route's call tree is
    exact at any ratio. ``path_key`` is the path's SHA-256 in hex: a deep path's text can pass the 2,704
    bytes a PostgreSQL btree entry holds, which a unique constraint on the text itself would refuse.
    """

    service = models.ForeignKey("topology.Service", on_delete=models.CASCADE, related_name="+")
    operation = models.CharField(max_length=255)
    path = models.TextField()
    path_key = models.CharField(max_length=64)

    class Meta:
        # The route first: a tree reads one route's rows over a window's minutes, a range of this index,
        # where a minute first would read every route's rows of those minutes.
        constraints = [
            models.UniqueConstraint(
                fields=["service", "operation", "minute", "path_key"], name="route_hop_rollup_unique"
            )
        ]
        indexes = [models.Index(fields=["minute"], name="route_hop_rollup_minute_idx")]
