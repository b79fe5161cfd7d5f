"""The views that have a snapshot: each computed from the domain's read models for one window."""

from collections.abc import Callable
from typing import Any

from topology.balancing import BalancerWindow
from topology.changes import BALANCERS, LAG, ROUTES, TOPOLOGY
from topology.consumer_lag import lag_overview
from topology.graph import topology_view
from topology.models import SourceStatus
from topology.propagation import flows
from topology.traces import routes
from topology.window import Window


def _topology(window: Window) -> dict[str, Any]:
    return topology_view(window)


def _routes(window: Window) -> dict[str, Any]:
    # NUL separates the parts: PostgreSQL refuses it in text, and no tracer writes it in a name.
    return {"routes": [{"id": f"{row['service']}\0{row['operation']}", **row} for row in routes(window)]}


def _balancers(window: Window) -> dict[str, Any]:
    overview = BalancerWindow(window).overview()
    services = [{"id": summary["service"], **summary} for summary in overview["services"]]
    return {"window": overview["window"], "services": services}


def _lag(window: Window) -> dict[str, Any]:
    kafka = SourceStatus.objects.filter(name="kafka").first()
    return {
        "kafka": kafka.as_dict() if kafka else None,
        "groups": [{"id": group["group"], **group} for group in lag_overview(window)],
        "flows": [
            {"id": f"{flow['producer']}\0{flow['topic']}\0{flow['consumer']}", **flow}
            for flow in flows(window)["flows"]
        ],
    }


BUILDERS: dict[str, Callable[[Window], dict[str, Any]]] = {
    TOPOLOGY: _topology,
    ROUTES: _routes,
    BALANCERS: _balancers,
    LAG: _lag,
}
