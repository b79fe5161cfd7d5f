"""The views that have a snapshot: each computed from the domain's read models for one window."""

from collections.abc import Callable
from typing import Any

from topology.balancing import balancers_view
from topology.changes import BALANCERS, LAG, ROUTES, TOPOLOGY
from topology.consumer_lag import lag_overview
from topology.entry_routes import routes_view
from topology.graph import topology_view
from topology.models import SourceStatus
from topology.propagation import flows
from topology.window import Window


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
    TOPOLOGY: topology_view,
    ROUTES: routes_view,
    BALANCERS: balancers_view,
    LAG: _lag,
}
