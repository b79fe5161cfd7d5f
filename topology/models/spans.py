from django.db import models


class SpanKind(models.TextChoices):
    SERVER = "server", "Server"
    CLIENT = "client", "Client"
    PRODUCER = "producer", "Producer"
    CONSUMER = "consumer", "Consumer"
    INTERNAL = "internal", "Internal"


class Protocol(models.TextChoices):
    HTTP = "http", "HTTP"
    GRPC = "grpc", "gRPC"
    MESSAGING = "messaging", "Messaging"
    OTHER = "other", "Other"


class Span(models.Model):
    """One span, normalised from whichever format it arrived in. Kept for SPAN_RETENTION_HOURS, on
    PostgreSQL in hourly partitions (``topology.span_partitions``).

    ``paired`` records that the span's share of the rollups is done: a CLIENT or PRODUCER span is
    paired when its SERVER or CONSUMER child arrives (or, after the grace period, on its own through
    its peer attributes); a SERVER span when its caller is known. It keeps late children from
    counting a call twice.
    """

    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    parent_id = models.CharField(max_length=16, blank=True)
    # Spans are the one table that grows by tens of thousands of rows a second. Their references are
    # checked where they are made (ingestion creates the service and instance in the same transaction)
    # and services and instances are never deleted, only marked: a database constraint check per row
    # (a third of the insert's cost, measured) and two indexes nothing reads would buy nothing.
    # (service, started_at) serves every query by service.
    service = models.ForeignKey(
        "topology.Service", on_delete=models.CASCADE, related_name="spans", db_constraint=False, db_index=False
    )
    instance = models.ForeignKey(
        "topology.Instance",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="spans",
        db_constraint=False,
        db_index=False,
    )
    kind = models.CharField(max_length=8, choices=SpanKind.choices)
    name = models.CharField(max_length=255, help_text="The operation or route.")
    protocol = models.CharField(max_length=10, choices=Protocol.choices)
    started_at = models.DateTimeField()
    duration_us = models.BigIntegerField()
    status_code = models.CharField(max_length=32, blank=True)
    error = models.BooleanField(default=False)
    peer = models.CharField(max_length=255, blank=True, help_text="The callee named by the caller's span.")
    topic = models.CharField(max_length=255, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    paired = models.BooleanField(default=False)
    # Work left for ``topology.route_hops.settle_route_hops``: a root whose trace's hops are not counted
    # yet, or any span of a trace that SPAN_KEEP_RATIO drops, stored until its trace is counted. Ingestion
    # sets it on every row it inserts; a row made another way (a test, a benchmark's INSERT) is pending.
    hops_pending = models.BooleanField(default=True, db_default=True)
    # A span of a dropped trace that an edge or a route names as an exemplar: kept when its trace goes.
    exemplar = models.BooleanField(default=False, db_default=False)

    class Meta:
        # With the start: on PostgreSQL the table is partitioned by it (topology.span_partitions), and a
        # unique constraint there must hold the partition key. A span sent again is the same span, start
        # included, so it is still found a duplicate. Indexes on a partitioned table cannot be built
        # CONCURRENTLY: a migration adding one builds it on each partition, then attaches them.
        constraints = [
            models.UniqueConstraint(fields=["trace_id", "span_id", "started_at"], name="span_identity_unique")
        ]
        indexes = [
            models.Index(fields=["started_at"], name="span_started_idx"),
            models.Index(fields=["service", "started_at"], name="span_service_started_idx"),
            # Partial: only the few spans still waiting for their partner are in it, so inserts stay cheap.
            models.Index(fields=["started_at"], condition=models.Q(paired=False), name="span_unpaired_idx"),
            # Partial as well: the roots of the last minute or two, and at a ratio below 1 the spans of
            # dropped traces until they are settled, a bounded share of the table whatever its size.
            models.Index(fields=["started_at"], condition=models.Q(hops_pending=True), name="span_hops_pending_idx"),
            # A route's unsettled requests, which its call tree reads from the spans: the roots alone,
            # not the dropped traces' other spans of those minutes, nine in ten of them at a ratio of 0.1.
            models.Index(
                fields=["service", "name", "started_at"],
                condition=models.Q(hops_pending=True, parent_id=""),
                name="span_pending_root_idx",
            ),
            # Partial, the failed spans only: which listed traces failed, without reading every span
            # to find the few that did. (Searching by attribute has a PostgreSQL GIN index, made in
            # migration 0008 since SQLite has none.)
            models.Index(fields=["trace_id"], condition=models.Q(error=True), name="span_failed_trace_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.trace_id}/{self.span_id} {self.name}"

    @property
    def duration_ms(self) -> float:
        return self.duration_us / 1000
