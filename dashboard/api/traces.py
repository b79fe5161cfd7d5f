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
from topology import entry_routes, traces
from topology.trace_search import (
    DURATION_PATTERN,
    MAX_TAGS,
    TAGS_PATTERN,
    SearchError,
    TraceSearch,
    parse_duration,
    parse_tags,
)
from topology.window import DEFAULT_WINDOW_SECONDS, MAX_WINDOW_SECONDS, MIN_WINDOW_SECONDS

TRACE_ID = r"^[0-9a-fA-F]{1,32}$"


def _search_window_parameters() -> list[OpenApiParameter]:
    """``window`` and ``until`` as every endpoint takes them, but bounding a search only when given."""
    window = OpenApiParameter(
        "window",
        {"type": "integer", "minimum": MIN_WINDOW_SECONDS, "maximum": MAX_WINDOW_SECONDS},
        description=f"Only traces that started in the `window` seconds before `until`, {MIN_WINDOW_SECONDS} to "
        f"{MAX_WINDOW_SECONDS}. Without `window` or `until`, every trace kept (SPAN_RETENTION_HOURS); with "
        f"only `until`, {DEFAULT_WINDOW_SECONDS}.",
    )
    return [window, window_parameters()[1]]


def _duration_parameter(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, {"type": "string", "pattern": DURATION_PATTERN}, description=description)


class TraceListView(APIView):
    @extend_schema(
        operation_id="traces_list",
        parameters=[
            text_parameter("service", "A matching span's service."),
            text_parameter("operation", "A matching span's operation (its name)."),
            OpenApiParameter(
                "tags",
                {"type": "string", "pattern": TAGS_PATTERN},
                description="Attributes a matching span holds, as logfmt `key=value` pairs separated by spaces "
                "(`http.route=/api/orders http.response.status_code=500`); a value with spaces or quotes in "
                'double quotes, `\\"` for a quote. A value that reads as a number or true/false matches the '
                f"number or boolean too. At most {MAX_TAGS}.",
            ),
            _duration_parameter(
                "min_duration",
                "A matching span lasted at least this: a number and a unit (us, ms, s, m, h), as `120ms` or `1.5s`.",
            ),
            _duration_parameter(
                "max_duration",
                "A matching span lasted at most this (as `min_duration`). Below `min_duration`, nothing matches.",
            ),
            OpenApiParameter(
                "min_duration_ms",
                {"type": "number", "minimum": 0, "maximum": 1e12},
                description="`min_duration` in milliseconds, as a number. With both, both hold.",
            ),
            boolean_parameter("error", "Only traces with (true, yes, 1) or without (false, no, 0) a failed span."),
            *_search_window_parameters(),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": traces.MAX_TRACES, "default": 50},
                description=f"At most {traces.MAX_TRACES} (default 50).",
            ),
        ],
        responses=answers(TraceSummarySerializer(many=True)),
        description="Recent traces, newest first, by their root span. Search as Jaeger's does: with any of "
        "`service`, `operation`, `tags`, `min_duration`, `max_duration`, a trace is listed when one of its spans "
        "meets all of them; `error`, `window` and `until` are about the whole trace.",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        min_duration_ms = number_from(request, "min_duration_ms", minimum=0, maximum=1e12)
        try:
            bounds = [
                parse_duration("min_duration", params.get("min_duration", "")),
                None if min_duration_ms is None else round(min_duration_ms * 1000),
            ]
            search = TraceSearch(
                service=text_from(request, "service"),
                operation=text_from(request, "operation"),
                tags=parse_tags(params.get("tags", "")),
                min_duration_us=max((bound for bound in bounds if bound is not None), default=None),
                max_duration_us=parse_duration("max_duration", params.get("max_duration", "")),
            )
        except SearchError as error:
            raise ValidationError({error.parameter: str(error)}) from None
        window = window_from(request) if params.get("window") or params.get("until") else None
        return Response(
            traces.trace_list(
                error=boolean_from(request, "error"),
                limit=number_from(request, "limit", int, default=50, minimum=1, maximum=traces.MAX_TRACES),
                since=window.since if window else None,
                until=window.until if window else None,
                having=search.matching_spans(),
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
        return Response(entry_routes.routes(window_from(request)))


class RouteTreeView(APIView):
    @extend_schema(
        parameters=[
            text_parameter("service", "The entry route's service.", required=True),
            text_parameter("operation", "The entry route's operation (its root span's name).", required=True),
            *window_parameters(900),
        ],
        responses=answers(RouteTreeSerializer),
        description=(
            "A route's call tree over every request of the window's minutes, exact at any SPAN_KEEP_RATIO,"
            " with recent, slow and failed traces."
        ),
    )
    def get(self, request: Request) -> Response:
        service, operation = (
            text_from(request, "service", required=True),
            text_from(request, "operation", required=True),
        )
        return Response(traces.route_tree(service, operation, window_from(request, default=900)))
