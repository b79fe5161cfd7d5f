from typing import Literal, Self

from django.db import models
from django.utils import timezone


class BalancingPolicy(models.TextChoices):
    ROUND_ROBIN = "round_robin", "Round robin"
    RANDOM = "random", "Random"
    WEIGHTED = "weighted", "Weighted"


class Health(models.TextChoices):
    PASSING = "passing", "Passing"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"
    UNKNOWN = "unknown", "Unknown"


class ServiceQuerySet(models.QuerySet["Service"]):
    def registered(self) -> Self:
        return self.filter(deregistered_at__isnull=True)


class Service(models.Model):
    """A service, whether Consul registered it, traces mention it, or both: the name is the identity."""

    name = models.CharField(max_length=255, unique=True)
    in_consul = models.BooleanField(default=False, help_text="Registered in Consul.")
    in_traces = models.BooleanField(default=False, help_text="Seen in trace spans.")
    datacenter = models.CharField(max_length=128, blank=True)
    tags = models.JSONField(default=list, blank=True)
    # Empty means no policy was set: statistics then assume round robin and say so.
    balancing_policy = models.CharField(max_length=16, choices=BalancingPolicy.choices, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    deregistered_at = models.DateTimeField(null=True, blank=True)

    objects = ServiceQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        permissions = [("set_balancing_policy", "Can set a service's balancing policy in Consul")]

    def __str__(self) -> str:
        return self.name

    @property
    def source(self) -> Literal["both", "consul", "traces"]:
        if self.in_consul and self.in_traces:
            return "both"
        return "consul" if self.in_consul else "traces"


class InstanceQuerySet(models.QuerySet["Instance"]):
    def registered(self) -> Self:
        return self.filter(deregistered_at__isnull=True)

    def unmerged(self) -> Self:
        return self.filter(merged_into__isnull=True)


class Instance(models.Model):
    """One running copy of a service.

    ``identity`` is what spans carry for it: ``service.instance.id``, else ``host:port``, else the
    Zipkin ``localEndpoint``; for an instance that Consul or an operator recorded, the registry's name.
    Spans also name a recorded instance by its Consul service ID or its ``address:port``: how a span's
    name is resolved to one row, and when two rows become one, is ``topology.instance_identity``.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="instances")
    identity = models.CharField(max_length=255)
    consul_id = models.CharField(max_length=255, blank=True, help_text="Consul service ID.")
    node = models.CharField(max_length=255, blank=True)
    address = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    datacenter = models.CharField(max_length=128, blank=True)
    tags = models.JSONField(default=list, blank=True)
    meta = models.JSONField(default=dict, blank=True)
    weight_passing = models.PositiveIntegerField(default=1)
    weight_warning = models.PositiveIntegerField(default=1)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.UNKNOWN)
    checks = models.JSONField(default=list, blank=True)
    in_maintenance = models.BooleanField(default=False)
    in_consul = models.BooleanField(default=False)
    in_traces = models.BooleanField(default=False)
    recorded_by_operator = models.BooleanField(
        default=False, help_text="Recorded by an operator, for a service that Consul does not list."
    )
    # A row that named the same process as another, recorded one: its rollups were moved there, and spans
    # that still name it count for that one. Kept, not deleted, because stored spans point at it.
    merged_into = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="merged_rows"
    )
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    deregistered_at = models.DateTimeField(null=True, blank=True)

    objects = InstanceQuerySet.as_manager()

    class Meta:
        ordering = ["service__name", "identity"]
        constraints = [models.UniqueConstraint(fields=["service", "identity"], name="instance_identity_unique")]
        # The admin actions that write to Consul; each needs its own permission (see dashboard/admin.py and collectors/consul_actions.py).
        permissions = [
            ("register_in_consul", "Can register an instance in Consul"),
            ("deregister_from_consul", "Can deregister an instance from Consul"),
            ("set_maintenance_in_consul", "Can enable or disable maintenance mode in Consul"),
            ("set_weights_in_consul", "Can change an instance's weights in Consul"),
        ]

    def __str__(self) -> str:
        return f"{self.service.name}/{self.identity}"

    @property
    def host_port(self) -> str:
        return f"{self.address}:{self.port}" if self.address and self.port else ""

    @property
    def in_registry(self) -> bool:
        """Consul or an operator recorded it: it is one of the instances the service is meant to have."""
        return self.in_consul or self.recorded_by_operator

    def aliases(self) -> set[str]:
        """Every string a span may carry to name this instance."""
        return {alias for alias in (self.identity, self.consul_id, self.host_port) if alias}


class ConsulDatacenter(models.Model):
    """Where the Consul collector left off in one datacenter, so that any worker can carry on from there.

    The indexes are the ``X-Consul-Index`` of the last answer of each endpoint: the next blocking query
    sends them back and Consul answers only when something changed.
    """

    name = models.CharField(max_length=128, unique=True)
    catalog_index = models.PositiveBigIntegerField(default=0, help_text="Of /v1/catalog/services.")
    checks_index = models.PositiveBigIntegerField(default=0, help_text="Of /v1/health/state/any.")
    # {service name: X-Consul-Index of /v1/health/service/<name>}: a service whose index did not move
    # is not reconciled again.
    service_indexes = models.JSONField(default=dict, blank=True)
    # {service name: digest of its checks in /v1/health/state/any}: which services a check change touched.
    check_digests = models.JSONField(default=dict, blank=True)
    # A run holds the lease so that a slow Consul never has two runs on the same datacenter.
    leased_until = models.DateTimeField(null=True, blank=True)
    # After a failure the collector waits before it asks again (exponential backoff).
    retry_after = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name
