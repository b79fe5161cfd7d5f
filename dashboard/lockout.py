"""What a locked-out login gets from django-axes: a page for people, JSON for API clients.

django-axes calls ``lockout_response`` (AXES_LOCKOUT_CALLABLE) once AXES_FAILURE_LIMIT failures for a
username from one address are counted; the lockout lasts AXES_COOLOFF_TIME. An administrator ends it
early in the admin (Axes › Access attempts) or with ``manage.py axes_reset_username USERNAME``.
"""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

# Too Many Requests: the client may try again after Retry-After, unlike a 403.
LOCKED_OUT_STATUS = 429


def client_address(request: HttpRequest) -> str:
    """The address a login comes from (AXES_CLIENT_IP_CALLABLE). Behind TRUSTED_PROXY_COUNT proxies,
    each appending the address it was reached from to X-Forwarded-For, the client's is that many entries
    from the end; entries before it are the client's own say, and never trusted."""
    remote = request.META.get("REMOTE_ADDR", "")
    hops = settings.TRUSTED_PROXY_COUNT
    if not hops:
        return remote
    forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if entry.strip()]
    # Fewer entries than proxies: the request did not come through them all, so only the peer is known.
    return forwarded[-hops] if len(forwarded) >= hops else remote


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    cooloff_seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    minutes = max(1, cooloff_seconds // 60)
    message = (
        f"Too many failed logins: after {settings.AXES_FAILURE_LIMIT} attempts, logging in with this username "
        f"from this address is locked for {minutes} minutes. An administrator can unlock it sooner."
    )
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": message}, status=LOCKED_OUT_STATUS)
    else:
        username = (credentials or {}).get("username") or request.POST.get("username", "")
        context = {"failure_limit": settings.AXES_FAILURE_LIMIT, "username": username, "cooloff_minutes": minutes}
        response = render(request, "registration/locked_out.html", context, status=LOCKED_OUT_STATUS)
    response["Retry-After"] = str(cooloff_seconds)
    return response
