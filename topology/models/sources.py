from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

# Every collector records a success at least every CONSUL_BLOCKING_WAIT_SECONDS (Consul) or 5 s (the
# lag sampler, for Kafka). A source silent for much longer is stale even though nothing failed: the
# Celery worker or its beat is down, and the pages must not go on looking fresh.
SILENT_AFTER_SECONDS = 120


class SourceStatus(models.Model):
    """Whether a data source (a Consul datacenter, the Kafka cluster) answers, and since when it does not.

    When a source fails, the last known state stays in the database; this row says how old it is.
    """

    name = models.CharField(max_length=128, unique=True, help_text='For example "consul:dc1" or "kafka".')
    configured = models.BooleanField(default=True)
    last_success = models.DateTimeField(null=True, blank=True)
    stale_since = models.DateTimeField(null=True, blank=True)
    stale_reason = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "source statuses"

    def __str__(self) -> str:
        return self.name

    @property
    def is_stale(self) -> bool:
        return self.stale_since is not None

    @property
    def silent_since(self) -> datetime | None:
        """When the source should have been heard from again, if it has not been since."""
        if self.last_success is None or self.is_stale:
            return None
        allowed = timedelta(seconds=max(SILENT_AFTER_SECONDS, 3 * settings.CONSUL_BLOCKING_WAIT_SECONDS))
        due = self.last_success + allowed
        return due if due < timezone.now() else None

    @classmethod
    def record_success(cls, name: str) -> None:
        cls.objects.update_or_create(
            name=name,
            defaults={
                "configured": True,
                "last_success": timezone.now(),
                "stale_since": None,
                "stale_reason": "",
                "consecutive_failures": 0,
            },
        )

    @classmethod
    def record_failure(cls, name: str, reason: object) -> int:
        """Marks the source stale (keeping the first failure's time) and returns its failure count."""
        status, _ = cls.objects.get_or_create(name=name)
        status.configured = True
        status.stale_since = status.stale_since or timezone.now()
        status.stale_reason = str(reason)[:2000]
        status.consecutive_failures += 1
        status.save()
        return status.consecutive_failures

    def as_dict(self) -> dict[str, Any]:
        silent_since = self.silent_since
        stale_since: datetime | None
        if silent_since is not None:
            stale_since = silent_since
            stale_reason = "No collector has reached it since the last success: is the Celery worker with beat running?"
        else:
            stale_since, stale_reason = self.stale_since, self.stale_reason
        return {
            "name": self.name,
            "configured": self.configured,
            "stale": stale_since is not None,
            "stale_since": stale_since,
            "stale_reason": stale_reason,
            "last_success": self.last_success,
        }
