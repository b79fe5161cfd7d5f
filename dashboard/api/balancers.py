"""Load-balancer statistics: every callee service, and one service broken down per caller."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from topology.balancing import BalancerWindow
from topology.models import Service

WINDOW_PARAMETER = OpenApiParameter(
    "window", OpenApiTypes.INT, description="Seconds back from now, 60 to 7 days; 900 by default."
)


def window_minutes(request, default_seconds=900):
    try:
        seconds = int(request.query_params.get("window", default_seconds))
    except ValueError:
        raise ValidationError({"window": "An integer number of seconds."}) from None
    if not 60 <= seconds <= 7 * 24 * 3600:
        raise ValidationError({"window": "Between 60 s and 7 days."})
    return seconds / 60


class BalancerListView(APIView):
    """Per callee service: policy, requests, largest deviation, χ², Jain's index, verdict, flags."""

    @extend_schema(operation_id="balancers_list", parameters=[WINDOW_PARAMETER], responses=OpenApiTypes.OBJECT)
    def get(self, request):
        return Response(BalancerWindow(minutes=window_minutes(request)).overview())


class BalancerDetailView(APIView):
    """One callee service: every instance's requests, share and expected share, overall and per caller."""

    @extend_schema(parameters=[WINDOW_PARAMETER], responses=OpenApiTypes.OBJECT)
    def get(self, request, service):
        try:
            service = Service.objects.get(name=service)
        except Service.DoesNotExist:
            raise NotFound("No such service.") from None
        return Response(BalancerWindow(minutes=window_minutes(request)).report(service))
