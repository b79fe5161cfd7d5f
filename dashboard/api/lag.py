"""Consistency lag: Kafka consumer-group lag, and the propagation delay of asynchronous flows."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.balancers import WINDOW_PARAMETER, window_minutes
from topology.consumer_lag import lag_overview
from topology.models import SourceStatus
from topology.propagation import flows


class ConsumerLagView(APIView):
    """Every sampled consumer group: status, lag in messages and seconds, trend, partitions, series."""

    @extend_schema(parameters=[WINDOW_PARAMETER], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        kafka = SourceStatus.objects.filter(name="kafka").first()
        return Response(
            {
                "kafka": kafka.as_dict() if kafka else None,
                "groups": lag_overview(minutes=window_minutes(request)),
            }
        )


class FlowListView(APIView):
    """Every producer → topic → consumer flow: propagation delay percentiles and negative delays."""

    @extend_schema(parameters=[WINDOW_PARAMETER], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(flows(minutes=window_minutes(request, default_seconds=3600)))
