from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Self

from django.conf import settings
from django.db import models
from django.utils import timezone

from topology.models.services import Health

CONSUL_PREFIX = "consul:"

# Every collector records a success at least every CONSUL_BLOCKING_WAIT_SECONDS (Consul) or 5 s (the
# lag sampler, for Kafka). A source silent for much longer is stale even though nothing failed: the
# Celery worker or its beat is down, and the pages must not go on looking fresh.
SILENT_AFTER_SECONDS = 120
SILENT_REASON = "No collector has reached it since the last success: is the Celery worker with beat running?"

# How long the health Consul last gave an instance is still shown once its datacenter is stale (failing,
# or silent). Consul's checks run every few seconds and the collector asks a failing datacenter again
# at least once a minute, so five minutes is several missed answers, while a blip (a leader election, a
# restarted agent) keeps the picture. After it, and at once for a datacenter meshscope no longer reads,
# the instance's health is unknown: a health that old says nothing about the instance now.
HEALTH_STALE_AFTER_SECONDS = 300


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

    def stale_as_shown(self) -> tuple[datetime | None, str]:
        """Since when the source is stale and why, counting a silent source as stale; (None, "") if fresh."""
        silent_since = self.silent_since
        if silent_since is not None:
            return silent_since, SILENT_REASON
        return self.stale_since, self.stale_reason

    def as_dict(self) -> dict[str, Any]:
        stale_since, stale_reason = self.stale_as_shown()
        return {
            "name": self.name,
            "configured": self.configured,
            "stale": stale_since is not None,
            "stale_since": stale_since,
            "stale_reason": stale_reason,
            "last_success": self.last_success,
        }


@dataclass(frozen=True)
class HealthFreshness:
    """Which instances' stored health the pages may show as their health.

    An instance's health comes from Consul, datacenter by datacenter. It stands while its datacenter is
    a source (a ``consul:<dc>`` status the collector keeps; the collector drops those it no longer reads)
    that has not been stale for longer than ``HEALTH_STALE_AFTER_SECONDS``. Otherwise it is unknown.
    """

    datacenters: frozenset[str]

    @classmethod
    def now(cls) -> Self:
        cutoff = timezone.now() - timedelta(seconds=HEALTH_STALE_AFTER_SECONDS)
        current = set()
        for status in SourceStatus.objects.filter(name__startswith=CONSUL_PREFIX, configured=True):
            stale_since, _ = status.stale_as_shown()
            if stale_since is None or stale_since > cutoff:
                current.add(status.name.removeprefix(CONSUL_PREFIX))
        return cls(frozenset(current))

    def is_stale(self, in_consul: bool, datacenter: str) -> bool:
        """Whether an instance's stored health is out of date; only Consul gives instances a health."""
        return in_consul and datacenter not in self.datacenters

    def shown(self, health: str, in_consul: bool, datacenter: str) -> str:
        return Health.UNKNOWN if self.is_stale(in_consul, datacenter) else health
