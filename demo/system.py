"""The sample system: which services run, how many instances, how the gateway balances over them.

Ports are laid out from DEMO_BASE_PORT so that one variable moves the whole system when a port is
taken. The dashboard's own port is MESHSCOPE_PORT and is not part of this layout.
"""

import os
from dataclasses import dataclass

ORDERS_TOPIC = "orders"
SPAN_TOPICS = ("otlp_spans", "zipkin")
# The consumer group of the Kafka flow; the dashboard measures its lag.
FULFILLMENT_GROUP = "fulfillment"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    instances: int = 1
    policy: str = "round_robin"
    # Weights.Passing per instance; only the weighted policy makes them differ.
    weights: tuple = ()
    # Faults injected on purpose so the dashboard has errors and slow calls to show.
    error_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: int = 0
    span_format: str = "otlp"  # or "zipkin": one service keeps Zipkin's JSON v2 exercised
    protocol: str = "http"  # or "grpc": the one gRPC edge
    # Mistakes a caller makes on purpose, so that the balancer page has them to find (docs/demo.md):
    # weights of its own for some instances of the services it calls, whatever the registry says...
    weight_overrides: tuple[tuple[str, int], ...] = ()
    # ...and the services whose list of instances it fetches once and never refreshes.
    stale_lists: tuple[str, ...] = ()

    def weight(self, index):
        return self.weights[index - 1] if self.weights else 1


SERVICES = (
    ServiceSpec("gateway"),
    ServiceSpec("users", instances=3, policy="round_robin", error_rate=0.02),
    # Catalog's balancer gives pricing-2 a weight of 3, where the registry says 1: pricing is skewed.
    ServiceSpec(
        "catalog", instances=3, policy="random", slow_rate=0.05, slow_ms=300, weight_overrides=(("pricing-2", 3),)
    ),
    # Orders keeps the list of users it first fetched, so it still calls users-3 in maintenance.
    ServiceSpec("orders", instances=3, policy="weighted", weights=(1, 2, 5), error_rate=0.03, stale_lists=("users",)),
    ServiceSpec("inventory", span_format="zipkin", slow_rate=0.05, slow_ms=150),
    ServiceSpec("fulfillment"),
    ServiceSpec("payments", instances=2, protocol="grpc", error_rate=0.01),
    # Last, so that adding it left the other services' ports where they were.
    ServiceSpec("pricing", instances=2, policy="weighted", weights=(1, 1)),
)
# The instance that goes into maintenance, MAINTENANCE_AFTER seconds after the services start: callers
# then leave it out, all but orders and its stale list. The moment is passed to the services in
# MAINTENANCE_AT_VARIABLE (epoch seconds), so that their static discovery without Consul agrees on it.
MAINTENANCE = "users-3"
MAINTENANCE_AFTER = 90
MAINTENANCE_AT_VARIABLE = "DEMO_MAINTENANCE_AT"


@dataclass(frozen=True)
class InstanceSpec:
    service: ServiceSpec
    index: int
    port: int

    @property
    def id(self):
        """The Consul service ID, also the span resource's service.instance.id: users-2."""
        return f"{self.service.name}-{self.index}"

    @property
    def weight(self):
        return self.service.weight(self.index)


def base_port():
    return int(os.environ.get("DEMO_BASE_PORT", "18000"))


def instances(base=None):
    """Every instance with its port: base+0 and base+1 are the embedded Kafka and Redis."""
    port = (base_port() if base is None else base) + 10
    result = []
    for spec in SERVICES:
        for index in range(1, spec.instances + 1):
            result.append(InstanceSpec(spec, index, port))
            port += 1
    return result


def instance(instance_id):
    return next(item for item in instances() if item.id == instance_id)


def embedded_ports(base=None):
    base = base_port() if base is None else base
    return {"kafka": base, "redis": base + 1}
