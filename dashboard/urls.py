from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("dashboard.ops.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("dashboard.api.urls")),
    path("", include("dashboard.pages.urls")),
]
