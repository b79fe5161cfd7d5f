from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import window_from
from topology.graph import topology_snapshot

WINDOW_PARAMETERS = [
    OpenApiParameter("window", OpenApiTypes.INT, description="Seconds before `until` (default 300)."),
    OpenApiParameter(
        "until", OpenApiTypes.STR, description="End of the window, ISO 8601 or epoch seconds (default now)."
    ),
]


class TopologyView(APIView):
    @extend_schema(
        parameters=WINDOW_PARAMETERS, responses=OpenApiTypes.OBJECT, description="Services and the calls between them."
    )
    def get(self, request):
        return Response(topology_snapshot(window_from(request)))
