from django.db import models
from django.utils import timezone

from topology.span_record import WIRE_FORMATS


class DeadLetter(models.Model):
    """A message, or one span of it, that could not be ingested, kept with where it came from."""

    reason = models.CharField(max_length=64)
    detail = models.TextField(blank=True)
    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    payload_head = models.TextField(blank=True, help_text="The start of the raw payload.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        indexes = [
            models.Index(fields=["received_at"], name="deadletter_received_idx"),
            # A redelivered message is looked up by where it came from, so that it is recorded once.
            models.Index(fields=["topic", "offset", "partition"], name="deadletter_source_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.reason} at {self.topic}[{self.partition}]@{self.offset}"


class IngestRollup(models.Model):
    """What our own span consumer did in one minute: the throughput on /api/ingest/."""

    minute = models.DateTimeField(unique=True)
    messages = models.PositiveBigIntegerField(default=0)
    spans = models.PositiveBigIntegerField(default=0)
    duplicate_spans = models.PositiveBigIntegerField(default=0)
    rejected = models.PositiveBigIntegerField(default=0)
    # New spans by the wire format they came in (topology.span_record.WIRE_FORMATS).
    spans_zipkin_json = models.PositiveBigIntegerField(default=0)
    spans_otlp_proto = models.PositiveBigIntegerField(default=0)
    spans_otlp_json = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"ingest at {self.minute:%Y-%m-%d %H:%M}"

    @property
    def spans_by_format(self) -> dict[str, int]:
        return {wire_format: getattr(self, f"spans_{wire_format}") for wire_format in WIRE_FORMATS}
