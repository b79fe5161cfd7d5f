"""The services list and the topology page's side panels (a node, an edge)."""

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import text_from, text_parameter, window_from, window_parameters
from dashboard.api.schemas import (
    EdgeDetailSerializer,
    ServiceDetailSerializer,
    ServiceListSerializer,
    ShareSeriesSerializer,
    SourceListSerializer,
    answers,
)
from topology import service_detail
from topology.models import SourceStatus


class ServiceListView(APIView):
    """Every known service: name, source, tags, instance health counts and the admin link."""

    @extend_schema(
        parameters=[
            text_parameter("q", "Only services whose name or tags contain this (case-insensitive)."),
            text_parameter("health", "Only services of this overall health: passing, warning, critical, unknown."),
        ],
        responses=answers(ServiceListSerializer),
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "services": service_detail.services_list(
                    query=text_from(request, "q").strip(), health=text_from(request, "health").strip()
                )
            }
        )


class ServiceDetailView(APIView):
    """One node's side panel: ``?name=&window=&until=``."""

    @extend_schema(
        parameters=[text_parameter("name", "The service's name.", required=True), *window_parameters()],
        responses=answers(ServiceDetailSerializer, not_found=True),
    )
    def get(self, request: Request) -> Response:
        name = text_from(request, "name", required=True)
        detail = service_detail.service_detail(name, window_from(request))
        if detail is None:
            raise NotFound("No such service.")
        return Response(detail)


class EdgeDetailView(APIView):
    """One edge's series and sample traces: ``?source=&target=&protocol=&topic=&window=&until=``."""

    @extend_schema(
        parameters=[
            text_parameter("source", "The calling (or producing) service.", required=True),
            text_parameter("target", "The called (or consuming) service.", required=True),
            text_parameter("protocol", "http, grpc, messaging or other; any when empty."),
            text_parameter("topic", "The topic of an asynchronous edge; empty for a synchronous one."),
            *window_parameters(),
        ],
        responses=answers(EdgeDetailSerializer, not_found=True),
    )
    def get(self, request: Request) -> Response:
        source, target = text_from(request, "source", required=True), text_from(request, "target", required=True)
        detail = service_detail.edge_detail(
            source,
            target,
            window_from(request),
            protocol=text_from(request, "protocol"),
            topic=text_from(request, "topic"),
        )
        if detail is None:
            raise NotFound("No such edge.")
        return Response(detail)


class ServiceSharesView(APIView):
    """Each instance's share of a service's requests per minute: ``?name=&window=``."""

    @extend_schema(
        parameters=[text_parameter("name", "The service's name.", required=True), *window_parameters()],
        responses=answers(ShareSeriesSerializer, not_found=True),
    )
    def get(self, request: Request) -> Response:
        name = text_from(request, "name", required=True)
        series = service_detail.instance_share_series(name, window_from(request))
        if series is None:
            raise NotFound("No such service.")
        return Response(series)


class SourceListView(APIView):
    """Whether each data source (Consul datacenters, Kafka) answers, and since when it does not: the
    header of every page polls this."""

    @extend_schema(responses=answers(SourceListSerializer, bad_request=False))
    def get(self, request: Request) -> Response:
        return Response({"sources": [status.as_dict() for status in SourceStatus.objects.all()]})
