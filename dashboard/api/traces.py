from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import boolean_from, number_from, window_from, window_parameters
from topology import traces


class TraceListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("service", OpenApiTypes.STR),
            OpenApiParameter("operation", OpenApiTypes.STR),
            OpenApiParameter("min_duration_ms", OpenApiTypes.NUMBER),
            OpenApiParameter("error", OpenApiTypes.BOOL),
            OpenApiParameter("limit", OpenApiTypes.INT, description=f"At most {traces.MAX_TRACES} (default 50)."),
        ],
        responses=OpenApiTypes.OBJECT,
        description="Recent traces, newest first, by their root span.",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        return Response(
            traces.trace_list(
                service=params.get("service", ""),
                operation=params.get("operation", ""),
                min_duration_ms=number_from(request, "min_duration_ms", minimum=0),
                error=boolean_from(request, "error"),
                limit=number_from(request, "limit", int, default=50, minimum=1, maximum=traces.MAX_TRACES),
            )
        )


class TraceDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT, description="One trace's spans as a tree.")
    def get(self, request: Request, trace_id: str) -> Response:
        tree = traces.trace_tree(trace_id.lower().rjust(32, "0"))
        if tree is None:
            raise NotFound("No spans of that trace are stored (unknown, or older than the span retention).")
        return Response(tree)


class RouteListView(APIView):
    @extend_schema(
        parameters=window_parameters(),
        responses=OpenApiTypes.OBJECT,
        description="Entry routes: root spans by service and operation.",
    )
    def get(self, request: Request) -> Response:
        return Response(traces.routes(window_from(request)))


class RouteTreeView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("service", OpenApiTypes.STR, required=True),
            OpenApiParameter("operation", OpenApiTypes.STR, required=True),
            *window_parameters(900),
        ],
        responses=OpenApiTypes.OBJECT,
        description="A route's call tree merged over its recent traces, with recent, slow and failed traces.",
    )
    def get(self, request: Request) -> Response:
        service, operation = request.query_params.get("service"), request.query_params.get("operation")
        if not service or not operation:
            raise ValidationError({"service": "service and operation are required"})
        return Response(traces.route_tree(service, operation, window_from(request, default=900)))
