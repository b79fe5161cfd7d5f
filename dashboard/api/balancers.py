"""Load-balancer statistics: every callee service, and one service broken down per caller."""

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.params import checked_text, text_parameter, window_from, window_parameters
from dashboard.api.schemas import BalancerListSerializer, BalancerReportSerializer, answers
from topology.balancing import BalancerWindow
from topology.models import Service

# Balancer statistics need minutes of traffic before a verdict means anything.
DEFAULT_WINDOW_SECONDS = 900


class BalancerListView(APIView):
    """Per callee service: policy, requests, largest deviation, χ², Jain's index, verdict, flags."""

    @extend_schema(
        operation_id="balancers_list",
        parameters=window_parameters(DEFAULT_WINDOW_SECONDS),
        responses=answers(BalancerListSerializer),
    )
    def get(self, request: Request) -> Response:
        return Response(BalancerWindow(window_from(request, DEFAULT_WINDOW_SECONDS)).overview())


class BalancerDetailView(APIView):
    """One callee service: every instance's requests, share and expected share, overall and per caller."""

    @extend_schema(
        operation_id="balancers_retrieve",
        parameters=[
            text_parameter("service", "The callee service's name.", required=True, location="path"),
            *window_parameters(DEFAULT_WINDOW_SECONDS),
        ],
        responses=answers(BalancerReportSerializer, not_found=True),
    )
    def get(self, request: Request, service: str) -> Response:
        window = window_from(request, DEFAULT_WINDOW_SECONDS)
        try:
            found = Service.objects.get(name=checked_text("service", service))
        except Service.DoesNotExist:
            raise NotFound("No such service.") from None
        return Response(BalancerWindow(window).report(found))
