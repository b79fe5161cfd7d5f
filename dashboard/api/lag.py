"""Consistency lag: Kafka consumer-group lag, and the propagation delay of asynchronous flows."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import window_from, window_parameters
from dashboard.api.schemas import ConsumerLagSerializer, FlowListSerializer, answers
from topology.consumer_lag import lag_overview
from topology.models import SourceStatus
from topology.propagation import flows

LAG_WINDOW_SECONDS = 900
FLOW_WINDOW_SECONDS = 3600


class ConsumerLagView(APIView):
    """Every sampled consumer group: status, lag in messages and seconds, trend, partitions, series."""

    @extend_schema(parameters=window_parameters(LAG_WINDOW_SECONDS), responses=answers(ConsumerLagSerializer))
    def get(self, request: Request) -> Response:
        window = window_from(request, LAG_WINDOW_SECONDS)
        kafka = SourceStatus.objects.filter(name="kafka").first()
        return Response({"kafka": kafka.as_dict() if kafka else None, "groups": lag_overview(window)})


class FlowListView(APIView):
    """Every producer → topic → consumer flow: propagation delay percentiles and negative delays."""

    @extend_schema(parameters=window_parameters(FLOW_WINDOW_SECONDS), responses=answers(FlowListSerializer))
    def get(self, request: Request) -> Response:
        return Response(flows(window_from(request, FLOW_WINDOW_SECONDS)))
