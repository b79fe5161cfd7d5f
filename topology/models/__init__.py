from topology.models.ingest import DeadLetter, IngestRollup
from topology.models.lag import *  # noqa: F403  (the lag models, owned by topology/models/lag.py)
from topology.models.rollups import EdgeRollup, InstanceRollup, RouteRollup
from topology.models.services import Instance, Service
from topology.models.sources import SourceStatus
from topology.models.spans import Span

__all__ = [
    "DeadLetter",
    "EdgeRollup",
    "IngestRollup",
    "Instance",
    "InstanceRollup",
    "RouteRollup",
    "Service",
    "SourceStatus",
    "Span",
]
