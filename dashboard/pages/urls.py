from django.urls import path

from dashboard.pages import views

urlpatterns = [
    path("", views.topology, name="topology"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("routes/", views.routes, name="routes"),
    path("routes/detail/", views.route, name="route"),
    path("traces/", views.traces, name="traces"),
    path("traces/<str:trace_id>/", views.trace, name="trace"),
    path("balancers/", views.balancers, name="balancers"),
    path("consistency/", views.consistency, name="consistency"),
    path("services/", views.services, name="services"),
]
