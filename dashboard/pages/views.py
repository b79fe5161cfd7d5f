"""The dashboard's pages: server-rendered shells whose small ES modules fetch the API and listen live.

Every page needs a login. Untrusted strings (service names, tags, operations, attributes) reach the
templates only through Django's autoescaping and data-* attributes, and the scripts only through
textContent and cytoscape data labels.
"""

from collections.abc import Callable
from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.utils import timezone

from topology.models import SourceStatus
from topology.service_detail import services_list

LOGIN_URL = reverse_lazy("login")


def page(template: str, nav: str) -> Callable[..., HttpResponse]:
    @login_required(login_url=LOGIN_URL)
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        context = {"nav": nav, "sources": _sources(), "now": timezone.now(), **kwargs}
        context.update({key: request.GET.get(key, "") for key in ("service", "operation", "edge", "focus")})
        return render(request, template, context)

    view.__name__ = f"{nav}_page"
    return view


# The header gives each data source a chip of its own up to this many: Kafka and one Consul datacenter
# (or "consul not configured"), the common case. More (a Consul of several datacenters) are one chip
# that counts them, whose popover lists them all: at 1280 px the header has room beside the navigation
# for two "<name> stale since <time>" chips, never for one per datacenter. static/js/util.js reads it
# from the header (data-chips).
HEADER_SOURCE_CHIPS = 2


def _sources() -> dict[str, Any]:
    """The header's sources: the stale ones first, then those not configured, then by name."""
    sources = sorted(
        (status.as_dict() for status in SourceStatus.objects.all()),
        key=lambda source: (not source["stale"], source["configured"], source["name"]),
    )
    return {
        "all": sources,
        "chips": HEADER_SOURCE_CHIPS,
        "summarised": len(sources) > HEADER_SOURCE_CHIPS,
        "stale": sum(source["stale"] for source in sources),
    }


topology = page("pages/topology.html", "topology")
routes = page("pages/routes.html", "routes")
route = page("pages/route.html", "routes")
traces = page("pages/traces.html", "traces")
trace = page("pages/trace.html", "traces")
balancers = page("pages/balancers.html", "balancers")
consistency = page("pages/consistency.html", "consistency")


@login_required(login_url=LOGIN_URL)
def services(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    health = request.GET.get("health", "").strip()
    return render(
        request,
        "pages/services.html",
        {
            "nav": "services",
            "sources": _sources(),
            "now": timezone.now(),
            "q": query,
            "health": health,
            "services": services_list(query=query, health=health),
            "health_choices": ["passing", "warning", "critical", "unknown"],
        },
    )


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    next_page = "login"  # a URL name: resolve_url() reverses it
