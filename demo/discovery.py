"""Where the instances of a service are: Consul when CONSUL_HTTP_ADDR is set, else the demo's own layout.

With Consul every instance registers itself with its weight, its health check and the
``meshscope-balancing`` meta key, and callers ask Consul's health endpoint for passing instances.
Either way an instance in maintenance is left out, except by a caller that keeps a stale list.
"""

import logging
import os
import threading
import time
from dataclasses import dataclass

from demo import system

log = logging.getLogger(__name__)
BALANCING_META = "meshscope-balancing"


@dataclass(frozen=True)
class Endpoint:
    id: str
    address: str
    port: int
    weight: int
    policy: str

    @property
    def url(self):
        return f"http://{self.address}:{self.port}"


def consul_configured():
    return bool(os.environ.get("CONSUL_HTTP_ADDR"))


def consul_client():
    import consul

    # py-consul reads CONSUL_HTTP_ADDR itself; the token is passed on like Consul's CLI does.
    return consul.Consul(token=os.environ.get("CONSUL_HTTP_TOKEN") or None)


def maintenance_started():
    """Whether the demo has put system.MAINTENANCE into maintenance (at the moment the supervisor chose)."""
    at = os.environ.get(system.MAINTENANCE_AT_VARIABLE)
    return at is not None and time.time() >= float(at)


class StaticDiscovery:
    """The demo's own layout, less the instance in maintenance once its maintenance has started."""

    def endpoints(self, service):
        return [
            Endpoint(item.id, "127.0.0.1", item.port, item.weight, item.service.policy)
            for item in system.instances()
            if item.service.name == service and not (item.id == system.MAINTENANCE and maintenance_started())
        ]


class ConsulDiscovery:
    """Passing instances from Consul, cached briefly; the last answer is kept while Consul is away."""

    ttl = 5.0

    def __init__(self):
        self.client = consul_client()
        self.cache = {}
        self.lock = threading.Lock()

    def endpoints(self, service):
        with self.lock:
            fetched_at, endpoints = self.cache.get(service, (0.0, []))
            if time.monotonic() - fetched_at < self.ttl:
                return endpoints
            try:
                _, entries = self.client.health.service(service, passing=True)
                # Consul leaves out an instance with a check that is not passing (maintenance adds a
                # critical one); the Consul test server returns them all, so look at the checks too.
                endpoints = [
                    self.endpoint(entry["Service"])
                    for entry in entries
                    if all(check["Status"] == "passing" for check in entry["Checks"])
                ]
            except Exception as error:  # keep serving with what we knew
                log.warning("Consul lookup of %s failed: %s", service, error)
            self.cache[service] = (time.monotonic(), endpoints)
            return endpoints

    @staticmethod
    def endpoint(service):
        return Endpoint(
            id=service["ID"],
            address=service["Address"] or "127.0.0.1",
            port=service["Port"],
            weight=(service.get("Weights") or {}).get("Passing", 1),
            policy=(service.get("Meta") or {}).get(BALANCING_META, "round_robin"),
        )


class KeptLists:
    """A caller's discovery that fetches the list of some services once and keeps it: the stale list of
    a client configured at start, which goes on calling an instance put into maintenance since."""

    def __init__(self, fresh, kept_services):
        self.fresh = fresh
        self.kept_services = kept_services
        self.kept = {}
        self.lock = threading.Lock()

    def endpoints(self, service):
        if service not in self.kept_services:
            return self.fresh.endpoints(service)
        with self.lock:
            if not self.kept.get(service):
                self.kept[service] = self.fresh.endpoints(service)
            return self.kept[service]


def discovery(kept_services=()):
    fresh = ConsulDiscovery() if consul_configured() else StaticDiscovery()
    return KeptLists(fresh, kept_services) if kept_services else fresh


def wait_until_registered(instances, timeout):
    """Waits until Consul lists every one of ``instances``, so that no caller's first list misses one;
    returns the IDs still missing when the time is up."""
    client = consul_client()
    deadline = time.monotonic() + timeout
    missing = {instance.id: instance.service.name for instance in instances}
    while missing and time.monotonic() < deadline:
        for name in set(missing.values()):
            try:
                _, entries = client.health.service(name)
            except Exception as error:  # the agent may be starting; the next round will tell
                log.warning("could not list the instances of %s in Consul: %s", name, error)
                continue
            for entry in entries:
                missing.pop(entry["Service"]["ID"], None)
        if missing:
            time.sleep(0.2)
    return set(missing)


def set_maintenance(instance_id, reason):
    """Puts the instance into maintenance in Consul: its callers that ask Consul leave it out."""
    consul_client().agent.service.maintenance(instance_id, "true", reason)


def register(instance):
    """Registers the instance in Consul, if there is one, with its weight and a health check."""
    if not consul_configured():
        return
    import consul

    if instance.service.protocol == "grpc":
        check = consul.Check.tcp("127.0.0.1", instance.port, interval="5s", deregister="1m")
    else:
        check = consul.Check.http(f"http://127.0.0.1:{instance.port}/health", interval="5s", deregister="1m")
    # The instance registers once it serves, so it starts passing rather than waiting a check interval.
    check["Status"] = "passing"
    consul_client().agent.service.register(
        instance.service.name,
        service_id=instance.id,
        address="127.0.0.1",
        port=instance.port,
        tags=["meshscope-demo"],
        meta={BALANCING_META: instance.service.policy},
        weights={"Passing": instance.weight, "Warning": 1},
        check=check,
    )


def deregister(instance):
    if not consul_configured():
        return
    try:
        consul_client().agent.service.deregister(instance.id)
    except Exception as error:  # shutting down anyway; Consul's deregister-after reaps it
        log.warning("could not deregister %s from Consul: %s", instance.id, error)
