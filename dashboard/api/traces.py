import re

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import (
    boolean_from,
    boolean_parameter,
    number_from,
    text_from,
    text_parameter,
    window_from,
    window_parameters,
)
from dashboard.api.schemas import (
    RouteSerializer,
    RouteTreeSerializer,
    TraceSerializer,
    TraceSummarySerializer,
    answers,
)
from topology import traces

TRACE_ID = r"^[0-9a-fA-F]{1,32}$"


class TraceListView(APIView):
    @extend_schema(
        operation_id="traces_list",
        parameters=[
            text_parameter("service", "The root span's service."),
            text_parameter("operation", "The root span's operation."),
            OpenApiParameter(
                "min_duration_ms",
                {"type": "number", "minimum": 0, "maximum": 1e12},
                description="Only traces whose root span lasted at least this long.",
            ),
            boolean_parameter("error", "Only traces with (true, yes, 1) or without (false, no, 0) a failed span."),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": traces.MAX_TRACES, "default": 50},
                description=f"At most {traces.MAX_TRACES} (default 50).",
            ),
        ],
        responses=answers(TraceSummarySerializer(many=True)),
        description="Recent traces, newest first, by their root span.",
    )
    def get(self, request: Request) -> Response:
        return Response(
            traces.trace_list(
                service=text_from(request, "service"),
                operation=text_from(request, "operation"),
                min_duration_ms=number_from(request, "min_duration_ms", minimum=0, maximum=1e12),
                error=boolean_from(request, "error"),
                limit=number_from(request, "limit", int, default=50, minimum=1, maximum=traces.MAX_TRACES),
            )
        )


class TraceDetailView(APIView):
    @extend_schema(
        operation_id="traces_retrieve",
        parameters=[
            OpenApiParameter(
                "trace_id",
                {"type": "string", "pattern": TRACE_ID},
                OpenApiParameter.PATH,
                description="Hex, up to 32 digits (a 64-bit Zipkin id is left-padded).",
            )
        ],
        responses=answers(TraceSerializer, not_found=True),
        description="One trace's spans as a tree.",
    )
    def get(self, request: Request, trace_id: str) -> Response:
        if not re.match(TRACE_ID, trace_id):
            raise ValidationError({"trace_id": "must be a hex id of up to 32 digits"})
        tree = traces.trace_tree(trace_id.lower().rjust(32, "0"))
        if tree is None:
            raise NotFound("No spans of that trace are stored (unknown, or older than the span retention).")
        return Response(tree)


class RouteListView(APIView):
    @extend_schema(
        parameters=window_parameters(),
        responses=answers(RouteSerializer(many=True)),
        description="Entry routes: root spans by service and operation, busiest first.",
    )
    def get(self, request: Request) -> Response:
        return Response(traces.routes(window_from(request)))


class RouteTreeView(APIView):
    @extend_schema(
        parameters=[
            text_parameter("service", "The entry route's service.", required=True),
            text_parameter("operation", "The entry route's operation (its root span's name).", required=True),
            *window_parameters(900),
        ],
        responses=answers(RouteTreeSerializer),
        description="A route's call tree merged over its recent traces, with recent, slow and failed traces.",
    )
    def get(self, request: Request) -> Response:
        service, operation = (
            text_from(request, "service", required=True),
            text_from(request, "operation", required=True),
        )
        return Response(traces.route_tree(service, operation, window_from(request, default=900)))
