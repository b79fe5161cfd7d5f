from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from dashboard.api import auth, balancers, ingest, lag, services, topology, traces

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("auth/token/", auth.ObtainTokenView.as_view(), name="api-auth-token"),
    path("topology/", topology.TopologyView.as_view(), name="api-topology"),
    path("topology/export.dot", topology.TopologyDotView.as_view(), name="api-topology-dot"),
    path("routes/", traces.RouteListView.as_view(), name="api-routes"),
    path("routes/tree/", traces.RouteTreeView.as_view(), name="api-route-tree"),
    path("traces/", traces.TraceListView.as_view(), name="api-traces"),
    path("traces/<str:trace_id>/", traces.TraceDetailView.as_view(), name="api-trace"),
    path("ingest/", ingest.IngestView.as_view(), name="api-ingest"),
    path("services/", services.ServiceListView.as_view(), name="api-services"),
    path("services/detail/", services.ServiceDetailView.as_view(), name="api-service-detail"),
    path("edges/detail/", services.EdgeDetailView.as_view(), name="api-edge-detail"),
    path("services/shares/", services.ServiceSharesView.as_view(), name="api-service-shares"),
    path("sources/", services.SourceListView.as_view(), name="api-sources"),
    path("balancers/", balancers.BalancerListView.as_view(), name="api-balancers"),
    path("balancers/<str:service>/", balancers.BalancerDetailView.as_view(), name="api-balancer"),
    path("lag/", lag.ConsumerLagView.as_view(), name="api-lag"),
    path("flows/", lag.FlowListView.as_view(), name="api-flows"),
]
