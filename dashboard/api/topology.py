from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import window_from, window_parameters
from dashboard.api.schemas import TopologySerializer, answers
from topology.graph import topology_snapshot


class TopologyView(APIView):
    @extend_schema(
        parameters=window_parameters(),
        responses=answers(TopologySerializer),
        description="Services and the calls between them over the window.",
    )
    def get(self, request: Request) -> Response:
        return Response(topology_snapshot(window_from(request)))
