from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from dashboard.api import ingest, topology, traces

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("topology/", topology.TopologyView.as_view(), name="api-topology"),
    path("traces/", traces.TraceListView.as_view(), name="api-traces"),
    path("traces/<str:trace_id>/", traces.TraceDetailView.as_view(), name="api-trace"),
    path("ingest/", ingest.IngestView.as_view(), name="api-ingest"),
]

# The services list and the topology side panels (live-dashboard work).
from dashboard.api import services as services_api  # noqa: E402

urlpatterns += [
    path("services/", services_api.ServiceListView.as_view(), name="api-services"),
    path("services/detail/", services_api.ServiceDetailView.as_view(), name="api-service-detail"),
    path("edges/detail/", services_api.EdgeDetailView.as_view(), name="api-edge-detail"),
]
