from topology.models.ingest import DeadLetter, IngestRollup, StreamPosition
from topology.models.lag import ConsumerPartitionLag, LagSecondsMethod, LagStatus
from topology.models.rollups import EdgeRollup, InstanceRollup, RouteHopRollup, RouteRollup
from topology.models.services import Instance, Service
from topology.models.sources import SourceStatus
from topology.models.spans import Span

__all__ = [
    "ConsumerPartitionLag",
    "DeadLetter",
    "EdgeRollup",
    "IngestRollup",
    "Instance",
    "InstanceRollup",
    "LagSecondsMethod",
    "LagStatus",
    "RouteHopRollup",
    "RouteRollup",
    "Service",
    "SourceStatus",
    "Span",
    "StreamPosition",
]
