"""The services list and the topology page's side panels (a node, an edge)."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import window_from
from topology import service_detail


class ServiceListView(APIView):
    """Every known service: name, source, tags, instance health counts and the admin link."""

    def get(self, request: Request) -> Response:
        return Response(
            {
                "services": service_detail.services_list(
                    query=request.query_params.get("q", "").strip(),
                    health=request.query_params.get("health", "").strip(),
                )
            }
        )


class ServiceDetailView(APIView):
    """One node's side panel: ``?name=&window=&until=``."""

    def get(self, request: Request) -> Response:
        name = request.query_params.get("name")
        if not name:
            raise ValidationError({"name": "Required."})
        detail = service_detail.service_detail(name, window_from(request))
        if detail is None:
            raise NotFound("No such service.")
        return Response(detail)


class EdgeDetailView(APIView):
    """One edge's series and sample traces: ``?source=&target=&protocol=&topic=&window=&until=``."""

    def get(self, request: Request) -> Response:
        params = request.query_params
        if not params.get("source") or not params.get("target"):
            raise ValidationError({"source": "source and target are required."})
        detail = service_detail.edge_detail(
            params["source"],
            params["target"],
            window_from(request),
            protocol=params.get("protocol", ""),
            topic=params.get("topic", ""),
        )
        if detail is None:
            raise NotFound("No such edge.")
        return Response(detail)


class ServiceSharesView(APIView):
    """Each instance's share of a service's requests per minute: ``?name=&window=``."""

    def get(self, request: Request) -> Response:
        name = request.query_params.get("name")
        if not name:
            raise ValidationError({"name": "Required."})
        series = service_detail.instance_share_series(name, window_from(request))
        if series is None:
            raise NotFound("No such service.")
        return Response(series)


class SourceListView(APIView):
    """Whether each data source (Consul datacenters, Kafka) answers, and since when it does not: the
    header of every page polls this."""

    def get(self, request: Request) -> Response:
        from topology.models import SourceStatus

        return Response({"sources": [status.as_dict() for status in SourceStatus.objects.all()]})
