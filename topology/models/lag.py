from django.db import models


class LagStatus(models.TextChoices):
    """Burrow's partition statuses, listed from best to worst: a group takes its worst partition's."""

    OK = "OK", "OK"
    WARN = "WARN", "Warning: the lag never decreased"
    STOP = "STOP", "Stopped: no commits for longer than the window"
    STALL = "STALL", "Stalled: commits, but the offset does not move"
    REWIND = "REWIND", "Rewound: the committed offset went back"


class LagSecondsMethod(models.TextChoices):
    CAUGHT_UP = "caught_up", "Caught up: nothing to read"
    RECORD_TIMESTAMP = "record_timestamp", "Timestamp of the record at the committed offset"
    INTERPOLATED = "interpolated", "Interpolated from end-offset samples"
    EXTRAPOLATED = "extrapolated", "Extrapolated from end-offset samples"
    UNAVAILABLE = "unavailable", "Unavailable"


class ConsumerPartitionLag(models.Model):
    """One sample of how far a consumer group is behind on one partition. Kept for
    ROLLUP_RETENTION_DAYS by the retention task (timestamp field: ``sampled_at``)."""

    group = models.CharField(max_length=255)
    topic = models.CharField(max_length=255)
    partition = models.IntegerField()
    sampled_at = models.DateTimeField()
    committed_offset = models.BigIntegerField()
    end_offset = models.BigIntegerField()
    lag_messages = models.BigIntegerField()
    lag_seconds = models.FloatField(null=True, blank=True)
    lag_seconds_method = models.CharField(max_length=16, choices=LagSecondsMethod.choices)
    # Kafka does not say when an offset was committed; this is when sampling first saw its value.
    offset_moved_at = models.DateTimeField()
    commit_window = models.JSONField(
        default=list,
        help_text="The commits Burrow's rules judged this sample on, oldest first: [offset, lag, epoch seconds].",
    )
    group_state = models.CharField(max_length=32, blank=True, help_text="As the coordinator reports it.")
    status = models.CharField(max_length=8, choices=LagStatus.choices)

    class Meta:
        indexes = [
            models.Index(fields=["group", "-sampled_at"], name="lag_group_sampled_idx"),
            models.Index(fields=["topic", "partition", "-sampled_at"], name="lag_topic_partition_idx"),
            models.Index(fields=["sampled_at"], name="lag_sampled_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.group} {self.topic}[{self.partition}] lag {self.lag_messages} at {self.sampled_at}"
