"""Which views a write changed, announced once the write is committed.

Every function that changes the data (storing spans, settling unpaired calls, reconciling Consul,
recording lag samples, retention, the Consul actions) writes inside ``transaction.atomic`` and calls
``announce_on_commit`` with the views it changed, as Zulip's ``do_*`` actions send their events: a page is
never told about a change that then rolls back, and a change is never made without telling.

A write that knows which rollup rows it changed says so (``ChangedRows``): the live layer then updates
its views from those rows alone (``topology.live_topology``). A write that does not (a Consul
reconcile, retention) announces the views only, and they are read afresh.

The domain knows only the signal. The live layer (``dashboard.live``) subscribes to it; the domain and
the collectors never import the live layer, and a process without it (a management command, a test)
simply has no subscriber.
"""

import logging
from dataclasses import dataclass
from typing import Final

from django.db import transaction
from django.dispatch import Signal

log = logging.getLogger(__name__)

TOPOLOGY: Final = "topology"
ROUTES: Final = "routes"
BALANCERS: Final = "balancers"
LAG: Final = "lag"
SERVICES: Final = "services"
VIEWS: Final = (TOPOLOGY, ROUTES, BALANCERS, LAG, SERVICES)
# What new spans change: the graph, the entry routes and the per-instance requests.
TRAFFIC_VIEWS: Final = (TOPOLOGY, ROUTES, BALANCERS)
# What a change of Consul's services, instances, health or weights changes.
REGISTRY_VIEWS: Final = (SERVICES, TOPOLOGY, BALANCERS)


@dataclass(frozen=True)
class ChangedRows:
    """The rows a write changed, by primary key: rollups it added to, services it changed or deleted."""

    edge_rollups: frozenset[int] = frozenset()
    instance_rollups: frozenset[int] = frozenset()
    route_rollups: frozenset[int] = frozenset()
    services: frozenset[int] = frozenset()


# Sent with ``views``, a frozenset of names from VIEWS, and ``rows``, the ChangedRows or None when the
# writer does not say, after the transaction that changed them committed.
views_changed = Signal()


def announce_on_commit(*views: str, rows: ChangedRows | None = None) -> None:
    """Tells the subscribers that ``views`` changed, once the current transaction commits (at once when
    there is none), and never when it rolls back. A subscriber that fails is logged, never raised into
    the writer: the data is committed whatever the pages learn of it."""
    if not views:
        return
    unknown = set(views) - set(VIEWS)
    if unknown:
        raise ValueError(f"unknown views {sorted(unknown)}; the views are {', '.join(VIEWS)}")
    changed = frozenset(views)
    transaction.on_commit(lambda: _send(changed, rows))


def _send(views: frozenset[str], rows: ChangedRows | None) -> None:
    for receiver, result in views_changed.send_robust(sender=None, views=views, rows=rows):
        if isinstance(result, Exception):
            log.warning("A subscriber of views_changed (%r) failed: %s", receiver, result)
