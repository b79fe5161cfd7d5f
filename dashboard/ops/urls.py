from django.urls import path

from dashboard.ops import health, metrics, otlp

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("v1/traces", otlp.traces, name="otlp-traces"),
]
