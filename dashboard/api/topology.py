from collections.abc import Iterable
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import text_from, text_parameter, window_from, window_parameters
from dashboard.api.schemas import BAD_REQUEST, UNAUTHORIZED, TopologySerializer, answers
from topology.graph import topology_snapshot

DOT_MEDIA_TYPE = "text/vnd.graphviz"
# Graphviz's own colour names, so that `dot -Tsvg` draws the health the page shows.
DOT_HEALTH_FILL = {"passing": "palegreen", "warning": "gold", "critical": "salmon", "unknown": "lightgray"}


MAX_HOPS = 3


class TopologyView(APIView):
    @extend_schema(
        parameters=[
            *window_parameters(),
            text_parameter(
                "focus",
                "A service's name: only the services at most `hops` calls from it (callers and callees, "
                "followed both ways) and the calls among them. A service with no calls and no registration "
                "in the window is a 404.",
            ),
            OpenApiParameter(
                "hops",
                {"type": "integer", "minimum": 1, "maximum": MAX_HOPS, "default": 1},
                description=f"With `focus`: how many calls away, 1 to {MAX_HOPS}; 1 by default. Unused without `focus`.",
            ),
        ],
        responses=answers(TopologySerializer, not_found=True),
        description="Services and the calls between them over the window; with `focus`, one service's "
        "neighbourhood, as the topology page draws it.",
    )
    def get(self, request: Request) -> Response:
        focus = text_from(request, "focus")
        hops = _hops_from(request)
        snapshot = topology_snapshot(window_from(request))
        return Response(neighbourhood(snapshot, focus, hops) if focus else snapshot)


def _hops_from(request: Request) -> int:
    raw = request.query_params.get("hops")
    if raw is None:
        return 1
    # Checked even without a focus, which makes it unused: a link that carries it is still well formed.
    if not raw.isdecimal() or not 1 <= int(raw) <= MAX_HOPS:
        raise ValidationError({"hops": f"must be an integer from 1 to {MAX_HOPS}"})
    return int(raw)


def neighbourhood(snapshot: dict[str, Any], focus: str, hops: int) -> dict[str, Any]:
    """``snapshot`` cut to the services at most ``hops`` calls from ``focus`` and the calls among them:
    the subgraph the topology page draws for a focus (static/js/topology_layout.js, neighbourhood).
    Computed from the whole snapshot, so it costs what the whole answer does on the server; it saves
    the client the bytes (a 1-hop neighbourhood of 5,000 services is a few KiB of 7.7 MB)."""
    if not any(node["id"] == focus for node in snapshot["nodes"]):
        raise NotFound("No such service in the window.")
    adjacent: dict[str, set[str]] = {}
    for edge in snapshot["edges"]:
        adjacent.setdefault(edge["source"], set()).add(edge["target"])
        adjacent.setdefault(edge["target"], set()).add(edge["source"])
    near, frontier = {focus}, {focus}
    for _ in range(hops):
        frontier = {other for name in frontier for other in adjacent.get(name, ())} - near
        near |= frontier
    return {
        **snapshot,
        "nodes": [node for node in snapshot["nodes"] if node["id"] in near],
        "edges": [edge for edge in snapshot["edges"] if edge["source"] in near and edge["target"] in near],
    }


class _ErrorsAsJson(BaseContentNegotiation):
    """The path names the format of the answer, whatever the Accept header says; the view's renderer
    (JSON) only renders its errors."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class TopologyDotView(APIView):
    content_negotiation_class = _ErrorsAsJson

    @extend_schema(
        operation_id="topology_export_dot",
        parameters=window_parameters(),
        responses={
            (200, DOT_MEDIA_TYPE): OpenApiResponse(
                OpenApiTypes.STR,
                description="A Graphviz digraph: a node per service and an edge per call, named as in /api/topology/ "
                "in quoted strings (backslash, double quote and line breaks escaped), with the figures as attributes.",
            ),
            400: BAD_REQUEST,
            401: UNAUTHORIZED,
        },
        description="The graph of /api/topology/, for the same window, as Graphviz DOT (`dot -Tsvg`).",
    )
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(topology_dot(topology_snapshot(window_from(request))), content_type=DOT_MEDIA_TYPE)


def topology_dot(snapshot: dict[str, Any]) -> str:
    """``snapshot`` (what /api/topology/ answers) as a DOT digraph. Names come from spans and Consul, so
    every identifier and value is a quoted string: unquoted, a name could be a keyword, or close the
    statement and write its own."""
    title = f"meshscope: {snapshot['window']} s until {snapshot['until'].isoformat()}"
    lines = [
        "digraph meshscope {",
        f"  graph [label={_quoted(title)}, labelloc=t, rankdir=LR];",
        '  node [shape=box, style="rounded,filled"];',
    ]
    for node in snapshot["nodes"]:
        attributes = {
            "label": node["name"],
            "fillcolor": DOT_HEALTH_FILL.get(node["health"], DOT_HEALTH_FILL["unknown"]),
            "health": node["health"],
            "rps": node["rps"],
            "error_rate": node["error_rate"],
            "instances": node["instances"],
            "source": node["source"],
        }
        lines.append(f"  {_quoted(node['id'])} [{_attributes(attributes)}];")
    for edge in snapshot["edges"]:
        attributes = {
            "label": f"{edge['topic'] or edge['protocol']}\n{edge['rps']:g}/s",
            "style": "dashed" if edge["sync"] == "async" else "solid",
            "protocol": edge["protocol"],
            "sync": edge["sync"],
            "topic": edge["topic"],
            "rps": edge["rps"],
            "error_rate": edge["error_rate"],
            **{key: edge[key] for key in ("p50_ms", "p95_ms", "p99_ms") if edge[key] is not None},
        }
        lines.append(f"  {_quoted(edge['source'])} -> {_quoted(edge['target'])} [{_attributes(attributes)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _attributes(attributes: dict[str, object]) -> str:
    return ", ".join(f"{key}={_quoted(str(value))}" for key, value in attributes.items())


def _quoted(text: str) -> str:
    r"""``text`` as a DOT double-quoted string: ``\`` and ``"`` escaped (else a backslash could escape
    the closing quote), and line breaks as ``\n`` and ``\r``. Graphviz reads ``\\`` as one pair and
    keeps it in an ID, so a service's ID is its name so escaped, the same on every line that names it;
    a label draws ``\\`` as ``\`` and ``\n`` as a line break, so its label draws the name itself."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r") + '"'
