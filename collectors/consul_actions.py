"""The changes an operator makes to Consul: register, deregister, maintenance on and off, weights and the
balancing policy. Django admin and ``manage.py consul_instance`` are UI over these functions.

Each action writes through the agent at CONSUL_HTTP_ADDR (``consul_client``), then, once Consul accepted,
updates the rows as a reconcile of Consul's answer would (``consul_reconcile.entry_of`` and ``reconcile``,
the one field mapping of both directions), which announces the changed views after the commit. The
collector's next round confirms it from Consul itself.

The rules live here, so that every caller keeps them:
- an instance is changed only through the agent it is registered with: the agent API names an instance
  by service ID alone, and another node may use the same ID (``refuse_elsewhere``);
- a service's balancing policy changes on all its Consul instances or on none; when Consul refuses one
  halfway, ``PartlyWritten`` says which instances did change, for the caller to log.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.utils import timezone

from collectors import consul_client
from collectors.consul_client import ConsulWriteError
from collectors.consul_reconcile import POLICY_META_KEY, entry_of, reconcile, with_maintenance
from topology.models import Instance, Service
from topology.models.services import Health

Location = tuple[str, str]


class PartlyWritten(ConsulWriteError):
    """Consul took part of one object's change, then refused the rest; ``log_message`` records what it took."""

    def __init__(self, message: str, log_message: str) -> None:
        super().__init__(message)
        self.log_message = log_message


def names(instances: Iterable[Instance]) -> str:
    return ", ".join(str(instance) for instance in instances)


def agent_location() -> Location:
    """(node, datacenter) of the agent at CONSUL_HTTP_ADDR; ConsulWriteError when it cannot say."""
    return consul_client.agent_location()


def is_listed(instance: Instance) -> bool:
    """Whether Consul lists the instance, so that an action can change it."""
    return instance.in_consul and bool(instance.consul_id) and instance.deregistered_at is None


def elsewhere(instances: Iterable[Instance], location: Location) -> list[Instance]:
    """The instances not registered on the agent at ``location``."""
    return [i for i in instances if (i.node, i.datacenter) != location]


def refusal(instances: Sequence[Instance], location: Location) -> str:
    where = "; ".join(f"{i} is on node {i.node} in {i.datacenter}" for i in instances)
    return (
        f"Refused, as Consul changes an instance only through the agent it is registered with, and "
        f"CONSUL_HTTP_ADDR is the agent of node {location[0]} in {location[1]}: {where}."
    )


def _check_actionable(instance: Instance, location: Location) -> None:
    if not is_listed(instance):
        raise ConsulWriteError(f"{instance} is not listed by Consul (traces only or deregistered).")
    if elsewhere([instance], location):
        raise ConsulWriteError(refusal([instance], location))


def _apply(instance: Instance, change: Callable[[dict[str, Any]], None] | None = None, *, gone: bool = False) -> None:
    """Reconciles the instance's service in its datacenter as Consul now lists it: every listed instance
    as it is, this one changed by ``change`` (or left out, when ``gone``)."""
    listed = Instance.objects.registered().filter(
        service_id=instance.service_id, in_consul=True, datacenter=instance.datacenter
    )
    entries = []
    for row in listed:
        if row.pk == instance.pk:
            if gone:
                continue
            row = instance
        entry = entry_of(row)
        if row.pk == instance.pk and change is not None:
            change(entry)
        entries.append(entry)
    reconcile(instance.datacenter, {instance.service.name: entries}, timezone.now())


def deregister(instance: Instance, location: Location) -> None:
    _check_actionable(instance, location)
    consul_client.deregister(instance)
    _apply(instance, gone=True)


def set_maintenance(instance: Instance, enable: bool, location: Location, reason: str = "") -> None:
    _check_actionable(instance, location)
    consul_client.set_maintenance(instance, enable, reason)
    instance.checks = with_maintenance(instance, enable)
    _apply(instance)


def set_weights(instance: Instance, passing: int, warning: int, location: Location) -> None:
    _check_actionable(instance, location)
    weights = {"Passing": passing, "Warning": warning}
    consul_client.reregister(instance, weights=weights)

    def change(entry: dict[str, Any]) -> None:
        entry["Service"]["Weights"] = weights

    _apply(instance, change)


def set_balancing_policy(service: Service, policy: str, location: Callable[[], Location]) -> None:
    """Writes the policy to every Consul instance of ``service`` (all or none), or keeps it in meshscope
    only for a service Consul does not know. ``location`` is asked only when Consul is."""
    instances = list(
        service.instances.registered().filter(in_consul=True).exclude(consul_id="").select_related("service")
    )
    if not instances:
        Service.objects.filter(pk=service.pk).update(balancing_policy=policy)
        return
    where = location()
    # All or none of a service: half its instances on a new policy would leave the collector's
    # majority vote to pick one.
    refused = elsewhere(instances, where)
    if refused:
        raise ConsulWriteError(f"{refusal(refused, where)} Nothing was changed.")
    changed: list[Instance] = []
    for instance in instances:
        meta = {**instance.meta, POLICY_META_KEY: policy}
        try:
            consul_client.reregister(instance, meta=meta)
        except ConsulWriteError as error:
            if not changed:
                raise
            untried = instances[len(changed) + 1 :]
            raise PartlyWritten(
                f"Consul refused {instance} ({error}). Already changed to {policy}: {names(changed)}. "
                f"Not changed: {names([instance, *untried])}. Run the action again once Consul accepts.",
                f"Set the balancing policy to {policy} (Consul meta {POLICY_META_KEY}) on {names(changed)} "
                f"only; Consul refused {instance}.",
            ) from error
        instance.meta = meta
        _apply(instance)
        changed.append(instance)


def _node_checks(location: Location) -> list[dict[str, Any]]:
    """The checks of the agent's own node, as the instances registered there already carry them."""
    node, datacenter = location
    neighbour = Instance.objects.registered().filter(in_consul=True, node=node, datacenter=datacenter).first()
    return [dict(check) for check in neighbour.checks if check.get("scope") == "node"] if neighbour else []


def register(
    name: str,
    service_id: str,
    address: str,
    port: int | None,
    tags: Sequence[str],
    meta: dict[str, str],
    weights: dict[str, int],
    check: dict[str, Any] | None,
    location: Location,
) -> str:
    """Registers an instance with the agent; returns its service ID. The row appears as Consul lists a
    new instance: on the agent's node, with that node's checks, and critical while its own check has not
    yet passed."""
    instance_id = service_id or name
    consul_client.register(name, service_id, address, port, tags, meta, weights, check)
    checks = _node_checks(location)
    if check:
        checks.append(
            {
                "id": f"service:{instance_id}",
                "scope": "service",
                "name": f"Service '{name}' check",
                "status": Health.CRITICAL,
                "output": "",
            }
        )
    row = Instance(
        service=Service(name=name),
        consul_id=instance_id,
        node=location[0],
        datacenter=location[1],
        address=address,
        port=port,
        tags=list(tags),
        meta=dict(meta),
        weight_passing=weights["Passing"],
        weight_warning=weights["Warning"],
        checks=sorted(checks, key=lambda c: c["id"]),
        in_consul=True,
    )
    existing = [
        entry_of(i)
        for i in Instance.objects.registered().filter(service__name=name, in_consul=True, datacenter=location[1])
        if (i.node, i.consul_id) != (location[0], instance_id)
    ]
    reconcile(location[1], {name: [*existing, entry_of(row)]}, timezone.now())
    return instance_id
